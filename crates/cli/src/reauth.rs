//! The Infisical client of the operations commands: a token cached under `~/.ikit/` that the
//! server refuses (it restarted, the token was revoked) is dropped and the login done again,
//! once, as `run` and `export` do through `fetch`. An operation's first call is what finds
//! out, so nothing has been written when it is retried.

use ikit_client::{Client, ClientError};

use crate::{CliError, Context, session};

fn refused(e: &CliError) -> bool {
    matches!(e, CliError::Client { source: ClientError::Auth { .. }, .. })
}

/// Runs `op` with a client; again with a fresh login when a cached token was refused.
pub(crate) async fn with_client<T>(
    ctx: &Context,
    op: impl AsyncFn(Client) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let (client, cached_token) = session::client(ctx).await?;
    match op(client).await {
        Err(e) if cached_token && refused(&e) => {
            tracing::info!("cached token refused, logging in again");
            session::forget_token(ctx)?;
            op(session::fresh_client(ctx).await?).await
        }
        other => other,
    }
}
