//! ikit-migrate: moves secrets from `.env` files, the process environment, JSON and YAML into
//! Infisical with a plan that never prints values, a backup first, and a rollback.
//!
//! `dotenv` is the pure parser and quoter for the python-dotenv dialect, shared with `ikit export`.
//! `source` reads `.env` files, an env map (filtered by prefix), JSON and YAML objects (nested
//! objects are folders); `mapping` places every key from a TOML mapping file or fails naming it.
//! `plan` decides per key create | update | unchanged | conflict | skip against Infisical, showing
//! no value (the plan file holds keyed HMACs). `apply` writes the plan with chunked batch upserts,
//! creating folders as needed; a second apply writes nothing. `backup` saves the target folders'
//! exact state in the age format; `rollback` restores it and verifies. `run` records an apply
//! (backup first, journal for resume, run file, audit log); `prereq` checks what an apply needs
//! with reads only. `cli` (feature) is the `ikit migrate` front end.

pub mod apply;
pub mod backup;
#[cfg(feature = "cli")]
pub mod cli;
pub mod dotenv;
mod error;
pub mod mapping;
pub mod plan;
pub mod prereq;
pub mod rollback;
pub mod run;
pub mod source;

pub use error::MigrateError;
