//! ikit-health: one place for operators. Health of every part (`/api/v1/infisical/health`,
//! `/healthz`, `/readyz`), the JWKS (`/.well-known/jwks.json`), Prometheus metrics (`/metrics`),
//! a status page (`/`), the scheduled key rotations, and two admin actions behind a bearer token,
//! each audited: rotate keys and invalidate caches.
//!
//! Code map: [`config`] reads the settings (pure); [`rules`] decides each health part from what
//! was observed (pure); `routes` is the HTTP surface and `page` the status page; [`app`] builds
//! the parts (client, cache, key manager, audit log), starts the background tasks and serves;
//! [`openapi`] is the OpenAPI 3.1 document of the routes (`/openapi.json`), [`probe`] the
//! container's `--healthcheck`.

pub mod app;
pub mod config;
mod error;
pub mod openapi;
mod page;
pub mod probe;
mod routes;
pub mod rules;

pub use app::{Application, Parts};
pub use config::HealthConfig;
pub use error::HealthError;
pub use routes::{BINDING_METRICS, METRIC_HEALTH_STATUS, route_table};
