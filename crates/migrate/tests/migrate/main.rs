//! Integration tests of ikit-migrate against the emulator (both API generations).

mod plan;
mod support;
