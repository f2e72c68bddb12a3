//! Integration tests of ikit-keys: rotation end to end over a file store, crash recovery with a
//! fault-injecting store, one leader over real PostgreSQL and Redis locks.

mod concurrency;
mod crash;
mod infisical;
mod manager;
mod rotation;
mod support;
