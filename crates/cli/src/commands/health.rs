//! `ikit health`: the health service's view (`IKIT_HEALTH_URL`), one line per part; exit 0
//! healthy, 1 degraded, 2 unhealthy or unreachable.

use std::process::ExitCode;

use serde_json::Value;

use crate::health_api::{HealthApi, exit_for_status};
use crate::render;
use crate::{CliError, Context};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  ikit health\n  IKIT_HEALTH_URL=https://health.example.com ikit health --json\n\n\
                        Exit codes: 0 healthy, 1 degraded, 2 unhealthy or unreachable."
)]
pub struct HealthArgs {
    /// Print the service's JSON answer as it is.
    #[arg(long)]
    pub json: bool,
}

/// The parts in the service's order, each with its status and detail sentence.
fn parts_table(body: &Value) -> String {
    let rows: Vec<Vec<String>> = body
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.get("status").is_some())
        .map(|(name, part)| {
            vec![
                name.clone(),
                part["status"].as_str().unwrap_or("?").to_owned(),
                part.get("detail").and_then(Value::as_str).unwrap_or("").to_owned(),
            ]
        })
        .collect();
    render::table(&["PART", "STATUS", "DETAIL"], &rows)
}

pub async fn run(ctx: &Context, args: HealthArgs) -> Result<ExitCode, CliError> {
    let api = HealthApi::from_env(&ctx.env)?.ok_or_else(|| {
        CliError::Usage("health: set IKIT_HEALTH_URL (or IKIT_DEV_STATE for `make dev`)".into())
    })?;
    let (_, body) = match api.health().await {
        Ok(answer) => answer,
        Err(e) => {
            // unreachable is the worst answer there is, not a usage problem
            eprintln!("ikit: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let overall = body["overall_status"].as_str();
    if args.json {
        println!("{body}");
    } else {
        println!("overall: {}", overall.unwrap_or("?"));
        print!("{}", parts_table(&body));
    }
    Ok(ExitCode::from(exit_for_status(overall)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_parts_with_status_and_detail() {
        let body = serde_json::json!({
            "overall_status": "degraded",
            "jwt_system": {"status": "healthy", "detail": "signing"},
            "cache": {"status": "degraded", "detail": "redis down"},
            "timestamp": 1,
        });
        let text = parts_table(&body);
        assert!(text.contains("jwt_system  healthy   signing"), "{text}");
        assert!(text.contains("cache       degraded  redis down"), "{text}");
        assert!(!text.contains("timestamp"));
    }
}
