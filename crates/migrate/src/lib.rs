//! ikit-migrate: moves secrets from `.env` files, the process environment, JSON and YAML into
//! Infisical with a plan that never prints values, an apply that takes an encrypted backup first and
//! uses the batch endpoints, and a rollback that restores the exact prior state.
//!
//! Not built yet: this crate holds only its description until its issue lands.
