//! ikit-webhook: Infisical's thin, signed, folder-level webhooks turned into per-key change
//! events, losing nothing.
//!
//! A delivery is verified (`ikit_common::webhook_signature`, two secrets, a time window, a replay
//! cache), audited, and queued durably before the 202. Workers refetch the folder from Infisical
//! bypassing every cache, diff it against its stored value-free state
//! (`ikit_common::folder_diff`), store the new state and the per-key events in one transaction,
//! fan them out through Redis (cache invalidation on every replica, `ikit_common::events`), and
//! serve them as Server-Sent Events to applications in any language.
//!
//! Code map: pure parts are `payload` (body decoding), `config` (settings from a file and an env
//! map) and the two ikit-common modules; IO lives in `receive` (the handler), `intake` (its
//! group commit), `store` (the queue, states and event log, PostgreSQL or SQLite), `worker`,
//! `baseline`, `fanout`, `replay`, `redis_link` and `sse`; `startup` wires them into a [`Service`] (mount its router in any axum
//! app) and an [`Application`] (on a listener).
//!
//! Mounting the receiver into an application's own router:
//!
//! ```no_run
//! # async fn demo(settings: ikit_webhook::WebhookSettings) -> Result<(), ikit_webhook::WebhookError> {
//! let service = ikit_webhook::Service::start(settings, ikit_webhook::Options::default()).await?;
//! let app = axum::Router::new().merge(service.router());
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await.expect("bind");
//! let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
//! axum::serve(listener, app).await.expect("serve");
//! # Ok(()) }
//! ```

pub mod baseline;
pub mod config;
pub mod error;
pub mod fanout;
pub mod intake;
pub mod openapi;
pub mod payload;
pub mod receive;
pub mod redis_link;
pub mod replay;
pub mod sse;
pub mod startup;
pub mod state;
pub mod store;
pub mod worker;

pub use config::WebhookSettings;
pub use error::{ApiError, WebhookError};
pub use startup::{Application, Options, Service, route_table, router};
pub use state::AppState;
