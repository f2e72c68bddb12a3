//! Pure logic: no IO, no clock reads, no randomness. Each module is unit-tested on its own.

pub mod expand;
pub mod glob;
pub mod ratelimit;
pub mod signing;
pub mod time;
pub mod tokens;
pub mod values;
