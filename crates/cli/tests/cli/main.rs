mod binary;
mod dev;
mod export;
mod login;
mod offline;
mod run;
mod support;
