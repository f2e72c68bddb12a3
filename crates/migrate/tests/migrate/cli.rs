//! The `ikit migrate` runner (feature `cli`) end to end against the emulator: exit codes, what
//! reaches stdout, stderr and the logs, check-prerequisites writing nothing, the docs' mapping.

use clap::Parser;
use ikit_client::Client;
use ikit_common::clock::ManualClock;
use ikit_common::testsuite::LogCapture;
use ikit_emulator::{ApiVersion, Fault};
use ikit_migrate::cli::{Invocation, MigrateArgs, run};
use ikit_migrate::mapping::Mapping;
use ikit_migrate::source;

use crate::support::{self, PROJECT, Workdir, all_writes};

#[derive(Parser)]
struct Top {
    #[command(flatten)]
    migrate: MigrateArgs,
}

struct Outcome {
    code: Result<u8, String>,
    stdout: String,
    stderr: String,
}

async fn ikit_migrate(
    client: &Client,
    work: &Workdir,
    args: &[&str],
    env: &[(&str, &str)],
) -> Outcome {
    let top = Top::try_parse_from(std::iter::once("migrate").chain(args.iter().copied()))
        .unwrap_or_else(|error| panic!("{args:?}: {error}"));
    let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let clock = ManualClock::new(1_767_225_600_000);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let code = run(
        &top.migrate,
        Invocation {
            client,
            project_id: PROJECT,
            env: &env,
            cwd: work.path(),
            clock: &clock,
            actor: "migrator".to_owned(),
            stdout: &mut stdout,
            stderr: &mut stderr,
            tty: false,
        },
    )
    .await
    .map_err(|error| error.to_string());
    Outcome {
        code,
        stdout: String::from_utf8(stdout).expect("utf-8"),
        stderr: String::from_utf8(stderr).expect("utf-8"),
    }
}

const VALUES: [&str; 5] = [
    "dotenv-secret-9f2c",
    "multi\nline-7d1e",
    "yaml-secret-33aa",
    "yaml block-51bc",
    "env-secret-0c4d",
];

fn sources(work: &Workdir) {
    work.write(
        ".env",
        "# app\nexport APP_TOKEN=\"dotenv-secret-9f2c\"\nAPP_MULTI=\"multi\nline-7d1e\"\nDEBUG=1\n",
    );
    work.write(
        "cfg.yaml",
        "infrastructure:\n  REGION: \"yaml-secret-33aa\"\n  NOTE: |-\n    yaml block-51bc\n",
    );
    work.write(
        "migrate.toml",
        "skip = [\"DEBUG\"]\n[defaults]\nenvironment = \"dev\"\nfolder = \"/\"\n\
         [[rule]]\nprefix = \"APP_\"\nfolder = \"/app\"\nstrip_prefix = true\n",
    );
}

async fn plan_apply_status(version: ApiVersion) {
    let emulator = support::emulator(version).await;
    let client = support::client(&emulator);
    let work = Workdir::new();
    sources(&work);
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let env = [("JOURNAL_SMTP", "env-secret-0c4d"), ("PATH", "/bin")];
    let source_args = [
        "-m",
        "migrate.toml",
        ".env",
        "cfg.yaml",
        "--from-env",
        "--prefix",
        "JOURNAL_",
        "--strip-prefix",
    ];
    let with = |command: &str, extra: &[&str]| -> Vec<String> {
        let mut args = vec![command.to_owned()];
        args.extend(source_args.iter().map(|s| (*s).to_owned()));
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let (logs, _guard) = LogCapture::start("trace");
    let mut shown = String::new();

    let args = with("plan", &[]);
    let plan =
        ikit_migrate(&client, &work, &args.iter().map(String::as_str).collect::<Vec<_>>(), &env)
            .await;
    assert_eq!(plan.code, Ok(2), "{version:?}: {}", plan.stdout);
    assert!(plan.stdout.contains("create     dev:/app/TOKEN  (.env:2)"), "{}", plan.stdout);
    assert!(plan.stdout.contains("create     dev:/infrastructure/REGION  (cfg.yaml)"));
    assert!(plan.stdout.contains("create     dev:/SMTP  (env)"));
    assert!(plan.stdout.contains("skip       DEBUG"));
    assert!(plan.stdout.contains("5 to create, 0 to update, 0 unchanged, 0 conflicts, 1 skipped"));
    shown += &plan.stdout;

    let args = with("plan", &["--json"]);
    let json =
        ikit_migrate(&client, &work, &args.iter().map(String::as_str).collect::<Vec<_>>(), &env)
            .await;
    assert_eq!(json.code, Ok(2));
    let parsed: serde_json::Value = serde_json::from_str(&json.stdout).expect("plan json");
    assert_eq!(parsed["items"].as_array().map(Vec::len), Some(6));
    assert_eq!(parsed["items"][0]["value_hmac"].as_str().map(str::len), Some(64));
    shown += &json.stdout;
    assert_eq!(all_writes(&emulator).await, 0, "planning wrote");

    let args = with("apply", &["--recipient", &recipient]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let applied = ikit_migrate(&client, &work, &args, &env).await;
    assert_eq!(applied.code, Ok(0), "{version:?}: {}{}", applied.stdout, applied.stderr);
    assert!(
        applied.stderr.contains("dev:/app: 2/2 keys written (chunk 1/1)"),
        "{}",
        applied.stderr
    );
    assert!(
        applied.stdout.contains("5 written, 0 pending approval, 2 folders created"),
        "{}",
        applied.stdout
    );
    shown += &applied.stdout;
    shown += &applied.stderr;
    let writes = all_writes(&emulator).await;

    let again = ikit_migrate(&client, &work, &args, &env).await;
    assert_eq!(again.code, Ok(0));
    assert!(again.stdout.contains("0 written"), "{}", again.stdout);
    assert_eq!(all_writes(&emulator).await, writes, "{version:?}: the second apply wrote");

    let args = with("plan", &[]);
    let clean =
        ikit_migrate(&client, &work, &args.iter().map(String::as_str).collect::<Vec<_>>(), &env)
            .await;
    assert_eq!(clean.code, Ok(0), "{}", clean.stdout);

    let status_args = [
        "status",
        "-m",
        "migrate.toml",
        ".env",
        "cfg.yaml",
        "--from-env",
        "--prefix",
        "JOURNAL_",
        "--strip-prefix",
    ];
    let status = ikit_migrate(&client, &work, &status_args, &env).await;
    assert_eq!(status.code, Ok(0), "{}", status.stdout);
    assert_eq!(status.stdout.matches("  apply     done").count(), 2, "{}", status.stdout);
    assert!(
        status.stdout.contains("drift: 0 to create, 0 to update, 5 unchanged"),
        "{}",
        status.stdout
    );
    // the sources move on: status reports the drift with exit 2
    work.write(
        ".env",
        "export APP_TOKEN=\"rotated-value-1\"\nAPP_MULTI=\"multi\nline-7d1e\"\nDEBUG=1\n",
    );
    let drift = ikit_migrate(&client, &work, &status_args, &env).await;
    assert_eq!(drift.code, Ok(2));
    assert!(drift.stdout.contains("1 conflicts"), "{}", drift.stdout);
    shown += &status.stdout;
    shown += &drift.stdout;

    // values arrived byte for byte
    let query = ikit_client::FolderQuery::new(PROJECT, "dev", "/app")
        .include_imports(false)
        .expand_references(false);
    let listing = client.list_secrets(&query).await.expect("lists");
    let multi = listing.secrets.iter().find(|s| s.key == "MULTI").expect("MULTI");
    assert_eq!(multi.value.expose(), "multi\nline-7d1e");

    let logged = logs.text();
    assert!(!logged.is_empty(), "the capture saw nothing");
    for value in VALUES {
        assert!(!shown.contains(value), "{version:?}: {value:?} reached the output");
        assert!(!logged.contains(value), "{version:?}: {value:?} reached the logs");
    }
}

#[tokio::test]
async fn plan_apply_status_show_no_value_and_exit_as_documented_v2026() {
    plan_apply_status(ApiVersion::V2026).await;
}

#[tokio::test]
async fn plan_apply_status_show_no_value_and_exit_as_documented_v2024() {
    plan_apply_status(ApiVersion::V2024).await;
}

#[tokio::test]
async fn check_prerequisites_writes_nothing_and_names_each_failure() {
    let emulator = support::emulator(ApiVersion::V2026).await;
    let client = support::client(&emulator);
    let work = Workdir::new();
    sources(&work);
    let good = ikit_migrate(
        &client,
        &work,
        &["check-prerequisites", "-m", "migrate.toml", ".env", "cfg.yaml"],
        &[],
    )
    .await;
    assert_eq!(good.code, Ok(0), "{}", good.stdout);
    assert!(good.stdout.contains("ok    project: "), "{}", good.stdout);
    assert!(good.stdout.contains("ok    environment: dev"));
    assert!(
        good.stdout.contains("ok    folder: dev:/app missing; apply creates it under /"),
        "{}",
        good.stdout
    );
    assert!(good.stdout.contains("note  write permission: not checked"));

    work.write("bad.toml", "[defaults]\nenvironment = \"staging\"\nfolder = \"/database\"\n");
    let bad =
        ikit_migrate(&client, &work, &["check-prerequisites", "-m", "bad.toml", ".env"], &[]).await;
    assert_eq!(bad.code, Ok(1), "{}", bad.stdout);
    assert!(
        bad.stdout.contains("FAIL  environment: staging does not exist in the project (fix: "),
        "{}",
        bad.stdout
    );

    let unknown = ikit_client::ClientConfig::new(
        &emulator.base_url(),
        ikit_client::AuthMethod::universal("migrate-client", "wrong-secret"),
    )
    .expect("config");
    let refused = Client::new(unknown).expect("client");
    let auth =
        ikit_migrate(&refused, &work, &["check-prerequisites", "-m", "migrate.toml", ".env"], &[])
            .await;
    assert_eq!(auth.code, Ok(1));
    assert!(auth.stdout.contains("FAIL  auth: login refused"), "{}", auth.stdout);
    assert!(!auth.stdout.contains("wrong-secret"));
    assert_eq!(all_writes(&emulator).await, 0, "check-prerequisites wrote");

    let nowhere = ikit_client::ClientConfig::new(
        "http://127.0.0.1:9",
        ikit_client::AuthMethod::token("fixed-token-value"),
    )
    .expect("config")
    .with_retry(ikit_client::RetryPolicy { max_attempts: 1, ..Default::default() });
    let offline = Client::new(nowhere).expect("client");
    let down =
        ikit_migrate(&offline, &work, &["check-prerequisites", "-m", "migrate.toml", ".env"], &[])
            .await;
    assert_eq!(down.code, Ok(1));
    assert!(down.stdout.starts_with("FAIL  server: not reachable"), "{}", down.stdout);
    assert_eq!(down.stdout.lines().count(), 1, "{}", down.stdout);
}

#[tokio::test]
async fn a_bad_dotenv_line_names_file_and_line_never_the_value() {
    let emulator = support::emulator(ApiVersion::V2026).await;
    let client = support::client(&emulator);
    let work = Workdir::new();
    sources(&work);
    work.write("broken.env", "GOOD=1\nBROKEN=\"unterminated s3cr3t-4411\n");
    let outcome =
        ikit_migrate(&client, &work, &["plan", "-m", "migrate.toml", "broken.env"], &[]).await;
    let error = outcome.code.expect_err("refused");
    assert!(error.starts_with("broken.env:2: "), "{error}");
    assert!(!error.contains("s3cr3t"), "{error}");
}

#[tokio::test]
async fn an_infisical_refusal_names_the_key_and_the_server_reason() {
    let emulator = support::emulator(ApiVersion::V2026).await;
    let client = support::client(&emulator);
    let work = Workdir::new();
    sources(&work);
    emulator.faults().add(Fault::status("/api/v4/secrets/batch", 403));
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let outcome = ikit_migrate(
        &client,
        &work,
        &["apply", "-m", "migrate.toml", ".env", "--recipient", &recipient],
        &[],
    )
    .await;
    let error = outcome.code.expect_err("refused");
    assert!(error.contains("writing dev:/app failed at key TOKEN"), "{error}");
    assert!(error.contains("You are not allowed to access this resource"), "{error}");
    assert!(!error.contains("dotenv-secret-9f2c"));
    // the run is recorded as failed and stays resumable
    let (runs, journal) =
        ikit_migrate::run::list_runs(&work.path().join(".ikit/migrations")).expect("runs");
    assert_eq!(runs.iter().map(|run| run.outcome.as_str()).collect::<Vec<_>>(), ["failed"]);
    assert!(journal.is_some());
}

#[tokio::test]
async fn apply_behind_approval_exits_three_and_rollback_needs_yes() {
    let emulator = support::emulator(ApiVersion::V2026).await;
    let client = support::client(&emulator);
    let work = Workdir::new();
    work.write(".env", "JWT_KEY=\"k-1\"\nDB_URL=\"postgres://x\"\n");
    work.write(
        "migrate.toml",
        "[defaults]\nenvironment = \"prod\"\nfolder = \"/auth\"\n[[rule]]\nprefix = \"DB_\"\nfolder = \"/database\"\n",
    );
    let passphrase = [("IKIT_BACKUP_PASSPHRASE", "pass phrase for the test")];
    let applied = ikit_migrate(
        &client,
        &work,
        &["apply", "-m", "migrate.toml", ".env", "--backup-out", "b.age"],
        &passphrase,
    )
    .await;
    assert_eq!(applied.code, Ok(3), "{}", applied.stdout);
    assert!(applied.stdout.contains("pending approval  prod:/auth/JWT_KEY"), "{}", applied.stdout);

    let preview = ikit_migrate(&client, &work, &["rollback", "b.age"], &passphrase).await;
    assert_eq!(preview.code, Ok(2), "{}", preview.stdout);
    assert!(preview.stdout.contains("delete         prod:/database/DB_URL"), "{}", preview.stdout);
    assert!(preview.stdout.contains("run again with --yes"));
    let restored = ikit_migrate(&client, &work, &["rollback", "b.age", "--yes"], &passphrase).await;
    assert_eq!(restored.code, Ok(0), "{}", restored.stdout);
    assert!(restored.stdout.contains("verified"), "{}", restored.stdout);
    let wrong =
        ikit_migrate(&client, &work, &["rollback", "b.age"], &[("IKIT_BACKUP_PASSPHRASE", "nope")])
            .await;
    assert!(wrong.code.expect_err("wrong passphrase").starts_with("backup: cannot decrypt"));
}

/// The mapping and `.env` blocks of docs/migration.md, parsed and placed as its table says.
#[test]
fn docs_mapping_places_the_seeds_layout() {
    let doc = include_str!("../../../../docs/migration.md");
    let block = |fence: &str| -> String {
        let start = doc.find(fence).unwrap_or_else(|| panic!("{fence} block")) + fence.len();
        let end = doc[start..].find("```").expect("closed") + start;
        doc[start..end].to_owned()
    };
    let mapping = Mapping::from_toml("docs/migration.md", &block("```toml\n"))
        .expect("the doc's mapping parses");
    let secrets = source::from_dotenv(
        "docs/migration.md",
        &block("```sh\n"),
        ikit_migrate::dotenv::Interpolation::Off,
    )
    .expect("the doc's .env parses");
    let mapped = mapping.apply(secrets).expect("maps");
    let targets: Vec<(String, String)> = mapped
        .secrets
        .iter()
        .map(|secret| (secret.source_key.clone(), secret.target.to_string()))
        .collect();
    let expected = [
        ("JWT_PRIVATE_KEY", "prod:/auth/jwt/PRIVATE_KEY"),
        ("JWT_ISSUER", "prod:/auth/jwt/ISSUER"),
        ("AES_KEY_CURRENT", "prod:/auth/aes/KEY_CURRENT"),
        ("DB_URL", "prod:/database/URL"),
        ("DB_POOL_SIZE", "prod:/database/POOL_SIZE"),
        ("REDIS_URL", "prod:/infrastructure/CACHE_URL"),
        ("SMTP_HOST", "prod:/infrastructure/SMTP_HOST"),
    ];
    let expected: Vec<(String, String)> =
        expected.iter().map(|(k, t)| ((*k).to_owned(), (*t).to_owned())).collect();
    assert_eq!(targets, expected);
    assert_eq!(mapped.skipped.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(), ["DEBUG"]);
    for (key, target) in &expected {
        let row = format!("`{target}`");
        assert!(
            doc.contains(&row) || doc.contains(&target.replace("prod:", "`prod:")),
            "{key} row"
        );
    }
}

#[tokio::test]
async fn backup_writes_a_private_age_file_of_the_target_folders() {
    use std::os::unix::fs::PermissionsExt as _;
    let emulator = support::emulator(ApiVersion::V2024).await;
    let client = support::client(&emulator);
    let work = Workdir::new();
    work.write(".env", "SAME=\"x\"\nFRESH=\"y\"\n");
    work.write("migrate.toml", "[defaults]\nenvironment = \"dev\"\nfolder = \"/database\"\n");
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let args =
        ["backup", "-m", "migrate.toml", ".env", "--out", "saved.age", "--recipient", &recipient];
    let outcome = ikit_migrate(&client, &work, &args, &[]).await;
    assert_eq!(outcome.code, Ok(0), "{}", outcome.stdout);
    assert!(
        outcome.stdout.contains("backup of 1 folders (2 keys) written to"),
        "{}",
        outcome.stdout
    );
    let path = work.path().join("saved.age");
    assert_eq!(std::fs::metadata(&path).expect("written").permissions().mode() & 0o777, 0o600);
    let backup = ikit_migrate::backup::Backup::read(
        &path,
        &ikit_migrate::backup::Unlock::Identities(vec![identity]),
    )
    .expect("opens");
    let folder = backup.folder("dev", "/database").expect("the target folder");
    let mut saved: Vec<(&str, &str, &str, Vec<&str>)> = folder
        .secrets
        .iter()
        .map(|s| {
            let tags = s.tags.iter().map(|t| t.1.as_str()).collect();
            (s.key.as_str(), s.value.expose(), s.comment.as_str(), tags)
        })
        .collect();
    saved.sort();
    assert_eq!(
        saved,
        [
            ("DIFF", support::EXISTING_DIFF, "kept by every write", vec!["backend"]),
            ("SAME", "same ${REF} value", "", vec![]),
        ]
    );
    assert_eq!(all_writes(&emulator).await, 0, "a backup wrote");
}
