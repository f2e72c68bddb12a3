//! ikit-suites owns no library code: it is the home of two whole-workspace harnesses, the fault
//! suite (`tests/faults`, `make faults`, and its property-test half `make fuzz`) and the
//! measured-performance table (`benches/table.rs`, `make bench`). See `suites/README.md`.
