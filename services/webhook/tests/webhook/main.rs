//! Black-box tests of ikit-webhook on real PostgreSQL and Redis, with the emulator as Infisical.

mod config;
mod flow;
mod keys;
mod queue;
mod receive;
mod service;
mod support;
