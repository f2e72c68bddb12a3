//! ikit-common: what every crate of infisical-kit shares. Domain types (`SecretRef`,
//! `SecretValue`), configuration as a pure function over a file and an env map, telemetry, and the
//! tamper-evident audit log. It knows nothing about HTTP or Infisical's wire format.
//!
//! Features (none by default, so a client-only build stays lean): `audit` (the audit log, over
//! sqlx), `otlp` (span export over OTLP/HTTP), `testsuite` (test databases and Redis prefixes).

#[cfg(feature = "audit")]
pub mod audit;
pub mod clock;
pub mod config;
pub mod datetime;
pub mod events;
pub mod files;
pub mod folder_diff;
pub mod secret;
pub mod telemetry;
#[cfg(feature = "testsuite")]
pub mod testsuite;
pub mod webhook_signature;

pub use config::{ConfigError, ConfigErrors, Settings, env_map_from_process};
pub use secret::{SecretRef, SecretRefError, SecretValue};
