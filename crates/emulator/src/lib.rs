//! ikit-emulator: an Infisical-compatible HTTP server for tests and `make dev`, faithful to the
//! behaviour described in `shared/spec/infisical-api.md`, with fault injection.
//!
//! Not built yet: this crate holds only its description until its issue lands.
