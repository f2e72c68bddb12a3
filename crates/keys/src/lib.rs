//! ikit-keys: JWT signing keys published as JWKS with an overlap window, an AES-256-GCM key ring
//! for tokens at rest, and rotation as a persisted, crash-safe state machine.
//!
//! Layout: [`jwt`], [`cipher`] and [`rotation`] are pure (bytes, `now` and an RNG in, values
//! out). [`store`] is the storage trait the keys live behind (Infisical in production, a file
//! store locally), [`lock`] the one-leader lock, [`audit`] the audit sink, and [`manager`] the
//! stateful [`KeyManager`] that ties them together and serves readers from an atomically swapped
//! ring.

pub mod audit;
pub mod cipher;
pub mod clock;
pub mod error;
#[cfg(feature = "infisical")]
pub mod infisical;
pub mod jwt;
pub mod lock;
pub mod manager;
pub mod policy;
pub mod rotation;
pub mod store;

pub use error::{Error, Result};
pub use manager::{KeyManager, KeyManagerBuilder, RotationTarget, spawn_scheduler};
pub use rotation::{KeyKind, Trigger};
pub use store::{FileStore, KeyStore};
