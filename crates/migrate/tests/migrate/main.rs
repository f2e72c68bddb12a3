//! Integration tests of ikit-migrate against the emulator (both API generations).

mod apply;
mod plan;
mod support;
