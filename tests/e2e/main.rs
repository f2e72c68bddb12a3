//! The end-to-end suite: see `support` for the topology, `flows` for the operator flows and
//! `docs` for the generated configuration reference.

mod docs;
mod flows;
mod support;
