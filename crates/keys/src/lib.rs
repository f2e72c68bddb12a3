//! ikit-keys: JWT signing keys published as JWKS with an overlap window, an AES-256-GCM key ring
//! for tokens at rest, and rotation as a persisted, crash-safe state machine.
//!
//! Code map: [`jwt`], [`cipher`], [`policy`] and [`rotation`] are pure (bytes, `now` and an RNG
//! in, values out). [`store`] is the storage trait the keys live behind, with a file store for
//! local use; `infisical` (feature `infisical`) implements it over ikit-client. [`lock`] holds the
//! one-leader locks (PostgreSQL advisory with feature `postgres`, Redis with a fencing token,
//! in-process), [`audit`] the audit sink (ikit-common's audit log implements it with feature
//! `audit`; both features pull sqlx, so the CLI's default build has neither), and [`manager`] the stateful
//! [`KeyManager`] that ties them together and serves readers from a ring swapped atomically.
//!
//! Invariants:
//! - the algorithm of a token is taken from the published key its `kid` names, never from the
//!   token header;
//! - a JWT key signs only after it was published for the overlap (forced or not), and stays
//!   published for the overlap after it stopped signing; an AES key encrypts only after the
//!   activation delay; AES keys are retired only when old enough and forced, and never deleted;
//!   the one exception to all three is the explicit, audited emergency revoke;
//! - every step writes new material before the state that names it, the state (`rotation_state`,
//!   `keys_map`: the commit point) before what is derived from it, and deletions last, so a crash
//!   between any two writes leaves a folder that `load()` brings back to the last commit with no
//!   committed key lost;
//! - storage is written only under the rotation lock, checked before every write; with a lock
//!   that fences (PostgreSQL, Redis) each commit carries the holder's token, and a step is
//!   refused when the folder's last commit carries a higher token of the same lock (read, then
//!   written: see [`lock`] for the limits);
//! - no key material reaches a log, a metric label or a `Debug` string.

pub mod audit;
pub mod cipher;
pub mod error;
#[cfg(feature = "infisical")]
pub mod infisical;
pub mod jwt;
pub mod lock;
pub mod manager;
pub mod policy;
pub mod propagate;
pub mod rotation;
pub mod store;

pub use error::{Error, Result};
pub use manager::{KeyManager, KeyManagerBuilder, RotationTarget, spawn_scheduler};
pub use propagate::KeyChangePublisher;
pub use rotation::{KeyKind, Trigger};
pub use store::{FileStore, KeyStore};
