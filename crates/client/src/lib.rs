//! ikit-client: the Infisical client every service and the CLI read secrets through: machine
//! identity auth, token renewal, the v4/v3 secrets API, retries, a two-level cache and an encrypted
//! offline snapshot.
//!
//! Not built yet: this crate holds only its description until its issue lands.
