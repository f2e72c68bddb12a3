//! ikit-keys: JWT signing keys published as JWKS with an overlap window, an AES-256-GCM key ring
//! for tokens at rest, and rotation as a persisted, crash-safe state machine.
//!
//! Not built yet: this crate holds only its description until its issue lands.
