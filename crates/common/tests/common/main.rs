//! Integration tests of ikit-common against real PostgreSQL, SQLite and Redis.

mod audit;
mod harness;
mod proxy;
