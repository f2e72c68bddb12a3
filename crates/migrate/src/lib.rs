//! ikit-migrate: moves secrets from `.env` files, the process environment, JSON and YAML into
//! Infisical with a plan that never prints values.
//!
//! `dotenv` is the pure parser and quoter for the python-dotenv dialect, shared with `ikit export`.
//! `source` reads `.env` files, an env map (filtered by prefix) and JSON objects (nested objects
//! are folders); `mapping` places every key from a TOML mapping file or fails naming it.
//! `plan` decides per key create | update | unchanged | conflict | skip against Infisical, showing
//! no value (the plan file holds keyed HMACs). `apply` writes the plan with chunked batch upserts, creating
//! folders as needed; a second apply writes nothing.

pub mod apply;
pub mod dotenv;
mod error;
pub mod mapping;
pub mod plan;
pub mod source;

pub use error::MigrateError;
