//! ikit-e2e: the end-to-end suite of the workspace (its one test binary is `e2e/main.rs`). It
//! starts the binaries `cargo build` put next to the test executable as processes on loopback,
//! the way docker-compose.yml runs them, against the machine's PostgreSQL (a fresh database per
//! test) and Redis, and drives the operator flows across replicas. Nothing here is a library
//! for other crates; the file exists because a Cargo package needs a library or binary target.
