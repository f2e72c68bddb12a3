//! `ikit cache clear [pattern]`: drops cached listings everywhere.
//!
//! Two paths, both taken when both are configured: with `IKIT_REDIS_URL`, the standalone
//! [`Invalidator`](ikit_client::Invalidator) clears the shared L2 and tells every replica on that
//! Redis to drop its L1 (no Infisical credentials needed); with `IKIT_HEALTH_URL` and
//! `IKIT_ADMIN_TOKEN`, the health service's audited invalidate endpoint, which also reloads the
//! key ring when the pattern touches `/auth/*` (the only path for a stack without Redis, such
//! as `make dev`). Neither configured is an error: there would be nothing to clear.

use std::process::ExitCode;

use ikit_client::{DEFAULT_REDIS_PREFIX, InvalidationScope, Invalidator};

use crate::health_api::HealthApi;
use crate::{CliError, Context};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  ikit cache clear\n  ikit cache clear '/auth/*'")]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CacheCommand {
    /// Drop cached listings matching a path, a folder prefix or a glob (default: everything).
    #[command(after_help = "Examples:\n  ikit cache clear\n  ikit cache clear '/auth/*'\n  \
                            IKIT_REDIS_URL=redis://cache:6379 ikit cache clear /app/DATABASE_URL")]
    Clear {
        #[arg(default_value = "/*")]
        pattern: String,
        /// Only this project's and environment's listings (Redis path; default: every project).
        #[arg(long)]
        scoped: bool,
    },
}

/// The health service's rule, checked before anything is sent.
fn check_pattern(pattern: &str) -> Result<(), CliError> {
    let ok = (pattern.starts_with('/') || pattern.starts_with('*'))
        && pattern.len() <= 512
        && !pattern.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(CliError::Usage(
            "pattern must be a path, a folder prefix or a glob starting with / (e.g. /auth/*)"
                .into(),
        ))
    }
}

pub async fn run(ctx: &Context, args: CacheArgs) -> Result<ExitCode, CliError> {
    let CacheCommand::Clear { pattern, scoped } = args.command;
    check_pattern(&pattern)?;
    let api = HealthApi::from_env(&ctx.env)?.filter(HealthApi::has_admin_token);
    let redis = ctx.settings.redis_url.clone();
    if api.is_none() && redis.is_none() {
        return Err(CliError::Usage(
            "cache clear: set IKIT_REDIS_URL (every replica on that Redis), or IKIT_HEALTH_URL and \
             IKIT_ADMIN_TOKEN (the health service's invalidate endpoint)"
                .into(),
        ));
    }
    if let Some(url) = redis {
        let scope = if scoped {
            InvalidationScope::of(ctx.require_project()?, &ctx.environment)
        } else {
            InvalidationScope::all()
        };
        let invalidator = Invalidator::connect(&url, DEFAULT_REDIS_PREFIX)
            .await
            .map_err(|e| CliError::client("cache clear: connecting to Redis", e))?;
        let done = invalidator
            .invalidate(&scope, &pattern)
            .await
            .map_err(|e| CliError::client("cache clear: publishing the invalidation", e))?;
        println!(
            "redis: published={} l2_cleared={} pattern={pattern}",
            done.published, done.l2_cleared
        );
    }
    if let Some(api) = api {
        let answer = api.invalidate(&pattern).await?;
        println!(
            "health service: local={} published={} l2_cleared={} keys_reloaded={} pattern={pattern}",
            answer["local"], answer["published"], answer["l2_cleared"], answer["keys_reloaded"]
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_follow_the_health_services_rule() {
        for ok in ["/*", "/auth/*", "*", "/app/KEY"] {
            assert!(check_pattern(ok).is_ok(), "{ok}");
        }
        for bad in ["auth", "", "/a\nb"] {
            assert!(check_pattern(bad).is_err(), "{bad:?}");
        }
    }
}
