//! `ikit rotate jwt|aes|all`: through the health service's admin API when `IKIT_HEALTH_URL` and
//! `IKIT_ADMIN_TOKEN` are set (audited there, and the service's ring changes at once), else
//! directly through ikit-keys under the rotation lock the health service takes (PostgreSQL
//! advisory with a PostgreSQL `IKIT_DATABASE_URL`, else Redis with `IKIT_REDIS_URL`); with
//! Redis, each committed step is published so every replica reloads its key ring.

use std::process::ExitCode;
use std::sync::Arc;

use ikit_keys::{RotationTarget, Trigger};
use serde_json::{Value, json};

use crate::health_api::HealthApi;
use crate::{CliError, Context};
use crate::{keyops, reauth};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RotateKind {
    Jwt,
    Aes,
    All,
}

impl RotateKind {
    fn api_name(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::Aes => "aes",
            Self::All => "both",
        }
    }

    fn target(self) -> RotationTarget {
        match self {
            Self::Jwt => RotationTarget::Jwt,
            Self::Aes => RotationTarget::Aes,
            Self::All => RotationTarget::Both,
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  ikit rotate jwt --force --reason \"suspected leak\"\n  \
                        IKIT_HEALTH_URL=http://127.0.0.1:8000 IKIT_ADMIN_TOKEN=... ikit rotate all\n\n\
                        --force starts a rotation before its schedule; it never skips the overlap \
                        (a new JWT key signs only after it was published) or the AES activation delay.")]
pub struct RotateArgs {
    #[arg(value_enum)]
    pub kind: RotateKind,
    /// Start a rotation now instead of when it is due.
    #[arg(long)]
    pub force: bool,
    /// Why (recorded in the audit log).
    #[arg(long, default_value = "manual rotation with ikit rotate")]
    pub reason: String,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Context, args: RotateArgs) -> Result<ExitCode, CliError> {
    if args.reason.trim().is_empty() {
        return Err(CliError::Usage("--reason must say why you rotate".into()));
    }
    let outcome = match HealthApi::from_env(&ctx.env)? {
        Some(api) if api.has_admin_token() => {
            let answer = api.rotate(args.kind.api_name(), args.force, &args.reason).await?;
            json!({
                "via": "health-service",
                "outcome": answer.get("outcome").cloned().unwrap_or(Value::Null),
                "steps": answer.get("steps").cloned().unwrap_or(Value::Null),
                "published_kids": answer.get("published_kids").cloned().unwrap_or(Value::Null),
                "current_kid": answer.get("current_kid").cloned().unwrap_or(Value::Null),
                "active_kid": answer.get("active_kid").cloned().unwrap_or(Value::Null),
            })
        }
        other => {
            if other.is_some() {
                ctx.warn("IKIT_HEALTH_URL is set without IKIT_ADMIN_TOKEN: rotating directly");
            }
            direct(ctx, &args).await?
        }
    };
    if args.json {
        println!("{outcome}");
    } else {
        println!("{}", summary(&outcome));
    }
    Ok(ExitCode::SUCCESS)
}

async fn direct(ctx: &Context, args: &RotateArgs) -> Result<Value, CliError> {
    let project = ctx.require_project()?;
    let (lock, shared) = keyops::rotation_lock(
        project,
        &ctx.environment,
        Some(ctx.settings.database_url.as_str()),
        ctx.settings.redis_url.as_deref(),
    )
    .map_err(CliError::Usage)?;
    if !shared {
        ctx.warn(
            "no shared rotation lock (set a PostgreSQL IKIT_DATABASE_URL or IKIT_REDIS_URL): \
             make sure no health service rotates these keys at the same time",
        );
    }
    // a probe of the JWT folder: a refused cached token is replaced before anything is written
    let client = reauth::with_client(ctx, async |client: ikit_client::Client| {
        keyops::read_key_folder(&client, project, &ctx.environment, keyops::JWT_FOLDER)
            .await
            .map_err(|e| CliError::client("rotate: reading the keys", e))?;
        Ok(client)
    })
    .await?;
    // with Redis, the replicas (health services) reload their ring after each step
    let publisher: Option<Arc<dyn ikit_keys::KeyChangePublisher>> = match &ctx.settings.redis_url {
        Some(_) => {
            let cache = ikit_client::CachedClient::builder()
                .client(client.clone())
                .settings(&ctx.settings)
                .and_then(|builder| builder.build())
                .map_err(|e| CliError::Usage(e.to_string()))?;
            Some(Arc::new(cache))
        }
        None => None,
    };
    let keys = keyops::manager(client, project, &ctx.environment, lock, publisher)
        .map_err(|e| CliError::Failed(format!("rotate: {e}")))?;
    let loaded = keys
        .load()
        .await
        .map_err(|e| CliError::Failed(format!("rotate: loading the keys: {e}")))?;
    let trigger = if args.force { Trigger::Forced } else { Trigger::Manual };
    let outcome = keys
        .rotate(args.kind.target(), args.force, &args.reason, trigger)
        .await
        .map_err(|e| CliError::Failed(format!("rotate: {e}")))?;
    if outcome.busy {
        return Err(CliError::Failed(
            "rotate: busy: another process holds the rotation lock".into(),
        ));
    }
    let health = keys.health();
    let steps: Vec<_> = loaded.steps.iter().chain(&outcome.steps).collect();
    Ok(json!({
        "via": "direct",
        "outcome": if outcome.steps.is_empty() { "nothing_due" } else { "rotated" },
        "steps": steps,
        "published_kids": health.jwt.as_ref().map(|j| j.published_kids.clone()),
        "current_kid": health.jwt.as_ref().map(|j| j.current_kid.clone()),
        "active_kid": health.aes.as_ref().and_then(|a| a.active_kid.clone()),
    }))
}

/// One line per step, then the kids now in use (key ids are public, never key material).
fn summary(outcome: &Value) -> String {
    let mut out = format!(
        "{} ({})\n",
        outcome["outcome"].as_str().unwrap_or("done"),
        outcome["via"].as_str().unwrap_or("")
    );
    for step in outcome["steps"].as_array().into_iter().flatten() {
        let kids: Vec<&str> =
            step["kids"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        out.push_str(&format!(
            "  {} {} {}\n",
            step["kind"].as_str().unwrap_or("?"),
            step["action"].as_str().unwrap_or("?"),
            kids.join(", ")
        ));
    }
    if let Some(kid) = outcome["current_kid"].as_str() {
        out.push_str(&format!("jwt signing kid: {kid}\n"));
    }
    if let Some(kids) = outcome["published_kids"].as_array() {
        let kids: Vec<&str> = kids.iter().filter_map(Value::as_str).collect();
        out.push_str(&format!("jwt published kids: {}\n", kids.join(", ")));
    }
    if let Some(kid) = outcome["active_kid"].as_str() {
        out.push_str(&format!("aes active kid: {kid}\n"));
    }
    out.truncate(out.trim_end().len());
    out
}
