//! The crate's one error type: what can stop the service from starting or serving.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Client(#[from] ikit_client::ClientError),
    #[error(transparent)]
    Keys(#[from] ikit_keys::Error),
    #[error(transparent)]
    Audit(#[from] ikit_common::audit::AuditError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}
