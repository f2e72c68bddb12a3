//! The fault suite of issue 17 (`make faults`): one test module per R-item the crates' own tests
//! do not already prove (see `suites/README.md` for the map of every R-item to its tests).
//! Infisical is the emulator with injected faults and a pinned clock; PostgreSQL and Redis are
//! real, cut by a TCP proxy the test owns; no test sleeps out simulated time.

mod hooks;
mod r1_outage;
mod r2_rate_limit;
mod r3_token_days;
mod r4_storage;
mod r6_webhooks;
mod r7_fuzz;
mod r8_leakage;
mod support;
