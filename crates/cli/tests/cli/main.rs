mod binary;
mod dev;
mod export;
mod login;
mod offline;
mod ops;
mod run;
mod support;
