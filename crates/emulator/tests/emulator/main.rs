//! Black-box tests of the emulator over HTTP, one module per area.

mod auth;
mod errors;
mod faults;
mod helpers;
mod persistence;
mod real2024;
mod robustness;
mod secrets;
mod webhooks;
