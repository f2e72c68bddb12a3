//! ikit-migrate: moves secrets from `.env` files, the process environment, JSON and YAML into
//! Infisical with a plan that never prints values.
//!
//! `dotenv` is the pure parser and quoter for the python-dotenv dialect, shared with `ikit export`.

pub mod dotenv;
mod error;

pub use error::MigrateError;
