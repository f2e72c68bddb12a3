mod binary;
mod dev;
mod export;
mod login;
mod migrate;
mod offline;
mod run;
mod support;
