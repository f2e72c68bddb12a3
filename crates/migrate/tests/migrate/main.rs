//! Integration tests of ikit-migrate against the emulator (both API generations).

mod apply;
mod cli;
mod plan;
mod rollback;
mod support;
