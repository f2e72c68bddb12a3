//! `ikit check`: the secrets a SecretSpec manifest (`secretspec.toml`) declares are verified to
//! exist in the chosen environment and folder before a deploy. Missing ones are listed by name,
//! never with a value, and the exit code is 1, so CI fails before the application does.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::secretspec::{self, DEFAULT_PROFILE};
use crate::{CliError, Context};
use crate::{reauth, render};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  ikit check\n  ikit check --manifest deploy/secretspec.toml \
                        --profile production --env prod --path /app\n\n\
                        The profile is --profile, else SECRETSPEC_PROFILE, else `default`. A \
                        missing secret with a default in the manifest passes; a required one \
                        without a default fails the check.")]
pub struct CheckArgs {
    #[arg(long, default_value = "secretspec.toml", value_name = "FILE")]
    pub manifest: PathBuf,
    /// The manifest profile (else SECRETSPEC_PROFILE, else `default`).
    #[arg(long)]
    pub profile: Option<String>,
    /// The folder to check (default: `defaultSecretPath` of .infisical.json, else /).
    #[arg(long)]
    pub path: Option<String>,
    /// Count imported secrets as present (they are in the application's environment too).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub include_imports: bool,
}

pub async fn run(ctx: &Context, args: CheckArgs) -> Result<ExitCode, CliError> {
    let path = ctx.cwd.join(&args.manifest);
    let text = std::fs::read_to_string(&path).map_err(|e| CliError::io(&args.manifest, e))?;
    let manifest = secretspec::parse(&text)
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.manifest.display())))?;
    let profile = args
        .profile
        .clone()
        .or_else(|| ctx.env.get("SECRETSPEC_PROFILE").cloned())
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_PROFILE.to_owned());
    let requirements = manifest
        .requirements(&profile)
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.manifest.display())))?;

    let mut query = ctx.folder_query(args.path.as_deref())?;
    query.include_imports = args.include_imports;
    // names are all this needs: no reference expansion, so a broken reference elsewhere in the
    // folder cannot fail the check
    query.expand_references = false;
    let (client, folder) = reauth::with_client(ctx, async |client: ikit_client::Client| {
        let folder = client
            .fetch_folder(&query)
            .await
            .map_err(|e| CliError::client("check: cannot list secrets", e))?;
        Ok((client, folder))
    })
    .await?;
    let present: BTreeSet<String> =
        folder.merged(client.import_order()).into_iter().map(|s| s.key.clone()).collect();
    let report = secretspec::check(&requirements, &present);

    let mut rows = Vec::new();
    for (keys, status) in [
        (&report.missing, "MISSING"),
        (&report.defaulted, "default applies"),
        (&report.optional_missing, "optional, absent"),
        (&report.present, "ok"),
    ] {
        rows.extend(keys.iter().map(|k| vec![k.clone(), status.to_owned()]));
    }
    print!("{}", render::table(&["SECRET NAME", "STATUS"], &rows));
    let place = format!("{} {} (profile {profile})", ctx.environment, query.path);
    if report.ok() {
        eprintln!("check passed: {} declared secrets satisfied in {place}", requirements.len());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "ikit: check failed: {} required secret(s) missing in {place}: {}",
            report.missing.len(),
            report.missing.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}
