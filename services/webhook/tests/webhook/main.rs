//! Black-box tests of ikit-webhook on real PostgreSQL and Redis, with the emulator as Infisical.

mod flow;
mod keys;
mod receive;
mod support;
