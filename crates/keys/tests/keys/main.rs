//! Integration tests of ikit-keys: rotation end to end over a file store, crash recovery with a
//! fault-injecting store, one leader over real PostgreSQL and Redis locks,
//! bounded lock calls, and how a step reaches the replicas that did not write it.

mod concurrency;
mod crash;
mod infisical;
mod manager;
mod propagation;
mod rotation;
mod support;
mod timeouts;
