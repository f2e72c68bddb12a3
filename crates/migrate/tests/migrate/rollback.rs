//! Recorded runs: the backup taken first (age, 0600), resume after a cancel, rollback to the exact
//! prior state, run files and audit records.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;

use ikit_client::{BatchProgress, Client, FolderQuery};
use ikit_common::audit::AuditFilter;
use ikit_common::clock::ManualClock;
use ikit_emulator::ApiVersion;
use ikit_migrate::backup::{Backup, Protection, Unlock};
use ikit_migrate::dotenv::Interpolation;
use ikit_migrate::mapping::{Mapped, Mapping};
use ikit_migrate::run::{self, RunSettings};
use ikit_migrate::{rollback, source};

use crate::support::{self, EXISTING_DIFF, PROJECT, Workdir};

/// (key, value, comment, tag slugs) of every shared secret of a folder, sorted; `None` when the
/// folder does not exist.
async fn state(
    client: &Client,
    environment: &str,
    folder: &str,
) -> Option<Vec<(String, String, String, Vec<String>)>> {
    let (parent, name) = folder.rsplit_once('/').expect("absolute");
    let parent = if parent.is_empty() { "/" } else { parent };
    let folders = client.list_folders(PROJECT, environment, parent, false).await.expect("folders");
    if !folders.iter().any(|known| known.name == name) {
        return None;
    }
    let query = FolderQuery::new(PROJECT, environment, folder)
        .include_imports(false)
        .expand_references(false);
    let mut out: Vec<_> = client
        .list_secrets(&query)
        .await
        .expect("lists")
        .secrets
        .into_iter()
        .map(|secret| {
            let tags = secret.tags.iter().map(|tag| tag.slug.clone()).collect();
            (secret.key, secret.value.expose().to_owned(), secret.comment, tags)
        })
        .collect();
    out.sort();
    Some(out)
}

fn mapped(text: &str) -> Mapped {
    let mapping = Mapping::from_toml(
        "map.toml",
        "[defaults]\nenvironment = \"dev\"\nfolder = \"/database\"\noverwrite = true\n\
         [[rule]]\nprefix = \"JWT_\"\nfolder = \"/auth/jwt\"\nstrip_prefix = true\n",
    )
    .expect("mapping parses");
    mapping
        .apply(source::from_dotenv(".env", text, Interpolation::Off).expect("parses"))
        .expect("maps")
}

async fn rollback_restores_exactly(version: ApiVersion) {
    let emulator = support::emulator(version).await;
    let client = support::client(&emulator);
    let work = Workdir::new();
    let identity = age::x25519::Identity::generate();
    let protection = Protection::Recipient(identity.to_public());
    let audit = work.audit();
    let clock = ManualClock::new(1_767_225_600_000);
    let settings = RunSettings {
        state_dir: work.state_dir(),
        backup_out: None,
        protection: Some(&protection),
        audit: Some(&audit),
        actor: "migrator".to_owned(),
        clock: &clock,
    };
    let before_database = state(&client, "dev", "/database").await;
    assert_eq!(before_database.as_ref().map(Vec::len), Some(2));
    assert_eq!(state(&client, "dev", "/auth").await, None);

    let text = "DIFF=\"new-diff-value\"\nNEW_KEY=\"brand new\"\nJWT_PRIVATE_KEY=\"jwt-material\"\n";
    let applied =
        run::apply_run(&client, PROJECT, &mapped(text), true, b"k", &settings, &mut |_, _| {})
            .await
            .expect("applies");
    assert!(!applied.resumed);
    assert_eq!(applied.record.outcome, "done");
    assert_eq!(applied.report.written.len(), 3, "{version:?}");
    // the update kept the comment and the tag; only the value moved
    let after = state(&client, "dev", "/database").await.expect("exists");
    let diff = after.iter().find(|row| row.0 == "DIFF").expect("DIFF");
    assert_eq!(
        (diff.1.as_str(), diff.2.as_str(), diff.3.clone()),
        ("new-diff-value", "kept by every write", vec!["backend".to_owned()])
    );
    assert!(state(&client, "dev", "/auth/jwt").await.is_some());

    // The backup: 0600, age format, opened by the age crate's own decryptor.
    let backup_path = applied.record.backup.clone();
    assert!(backup_path.starts_with(work.state_dir()));
    let mode = std::fs::metadata(&backup_path).expect("backup exists").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let sealed = std::fs::read(&backup_path).expect("reads");
    let plain = age::decrypt(&identity, &sealed).expect("the age crate decrypts it");
    let plain: serde_json::Value = serde_json::from_slice(&plain).expect("json inside");
    let folders = plain["folders"].as_array().expect("folders");
    let database = folders.iter().find(|f| f["folder"] == "/database").expect("/database saved");
    assert!(
        database["secrets"]
            .as_array()
            .expect("secrets")
            .iter()
            .any(|s| s["value"] == EXISTING_DIFF)
    );
    let jwt = folders.iter().find(|f| f["folder"] == "/auth/jwt").expect("/auth/jwt saved");
    assert_eq!(
        (jwt["existed"].as_bool(), jwt["existingAncestor"].as_str()),
        (Some(false), Some("/"))
    );
    age_cli_decrypts(&identity, &backup_path);

    // The run file: keys, actions and outcome, no value.
    let run_file = work.state_dir().join(format!("{}.json", applied.record.run_id));
    let run_text = std::fs::read_to_string(&run_file).expect("run file");
    assert!(run_text.contains("dev:/auth/jwt/PRIVATE_KEY") && run_text.contains("\"written\""));
    for value in ["new-diff-value", "brand new", "jwt-material", EXISTING_DIFF] {
        assert!(!run_text.contains(value), "a value in the run file");
    }
    assert!(!work.state_dir().join(run::JOURNAL_FILE).exists(), "journal left after success");

    // Rollback: shows its plan, restores, verifies.
    let backup = Backup::read(&backup_path, &Unlock::Identities(vec![identity])).expect("opens");
    let planned = rollback::plan(&client, &backup).await.expect("plans");
    let shown = planned.render();
    assert!(shown.contains("restore        dev:/database/DIFF"), "{shown}");
    assert!(shown.contains("delete         dev:/database/NEW_KEY"), "{shown}");
    assert!(shown.contains("remove-folder  dev:/auth/jwt"), "{shown}");
    let report =
        run::rollback_run(&client, &backup, &backup_path, &settings).await.expect("rolls back");
    assert!(report.differences.is_empty(), "{}", report.differences.render());
    assert_eq!(state(&client, "dev", "/database").await, before_database, "{version:?}");
    assert_eq!(state(&client, "dev", "/auth").await, None, "{version:?}: created folders stay");
    assert!(rollback::plan(&client, &backup).await.expect("plans").is_empty());

    let records = audit.query(&AuditFilter::default()).await.expect("audit query");
    let actions: Vec<(&str, &str)> = records
        .iter()
        .map(|record| (record.event.action.as_str(), record.event.outcome.as_str()))
        .collect();
    assert_eq!(actions, [("migrate.apply", "success"), ("migrate.rollback", "success")]);
    assert_eq!(records[0].event.details["written"], 3);
    let (runs, journal) = run::list_runs(&work.state_dir()).expect("runs");
    assert_eq!(runs.len(), 2);
    assert!(journal.is_none());
}

/// Opens the backup with the standard `age` tool too, where it is installed.
fn age_cli_decrypts(identity: &age::x25519::Identity, backup: &std::path::Path) {
    let Ok(found) = std::process::Command::new("age").arg("--version").output() else {
        eprintln!("the age tool is not installed: decryption checked with the age crate only");
        return;
    };
    assert!(found.status.success());
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = dir.path().join("key.txt");
    use age::secrecy::ExposeSecret as _;
    std::fs::write(&key_file, identity.to_string().expose_secret()).expect("writes key");
    let output = std::process::Command::new("age")
        .arg("--decrypt")
        .arg("-i")
        .arg(&key_file)
        .arg(backup)
        .output()
        .expect("age runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let plain: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(plain["format"], 1);
}

#[tokio::test]
async fn rollback_after_apply_restores_the_prior_state_exactly_v2026() {
    rollback_restores_exactly(ApiVersion::V2026).await;
}

#[tokio::test]
async fn rollback_after_apply_restores_the_prior_state_exactly_v2024() {
    rollback_restores_exactly(ApiVersion::V2024).await;
}

async fn cancel_then_resume(version: ApiVersion) {
    let emulator = support::emulator(version).await;
    let client = support::client(&emulator);
    let work = Workdir::new();
    let passphrase = "resume passphrase";
    let protection = Protection::Passphrase {
        passphrase: zeroize::Zeroizing::new(passphrase.to_owned()),
        work_factor: Some(2),
    };
    let clock = ManualClock::new(1_767_225_600_000);
    let settings = RunSettings {
        state_dir: work.state_dir(),
        backup_out: Some(work.path().join("before.age")),
        protection: Some(&protection),
        audit: None,
        actor: "migrator".to_owned(),
        clock: &clock,
    };
    let before = state(&client, "dev", "/database").await;
    // Three full chunks of the client's default in /auth/jwt, then one in /database.
    let per_chunk = ikit_client::BatchLimits::default().max_items;
    let keys = 3 * per_chunk;
    let mut text = String::from("DIFF=\"changed by the run\"\n");
    for n in 0..keys {
        text.push_str(&format!("JWT_KEY_{n:03}=\"value-{n}\"\n"));
    }

    // Cancel after the second chunk the server accepted (of four).
    let chunks = Arc::new(tokio::sync::Notify::new());
    let signal = chunks.clone();
    let mut seen = 0;
    let mut progress = move |_: &str, _: BatchProgress| {
        seen += 1;
        if seen == 2 {
            signal.notify_one();
        }
    };
    let first = mapped(&text);
    tokio::select! {
        _ = run::apply_run(&client, PROJECT, &first, true, b"k", &settings, &mut progress) => {
            panic!("the apply finished before it was cancelled")
        }
        _ = chunks.notified() => {}
    }
    let journal = run::read_journal(&work.state_dir()).expect("reads").expect("journal kept");
    assert_eq!(journal.backup, work.path().join("before.age"));
    assert!(journal.written.values().sum::<usize>() > per_chunk, "{:?}", journal.written);
    // the chunk in flight at the cancel may still land; the run's last chunk (DIFF) is never sent
    let partial = state(&client, "dev", "/auth/jwt").await.map(|rows| rows.len()).unwrap_or(0);
    assert!(
        (2 * per_chunk..=keys).contains(&partial),
        "{version:?}: {partial} keys after the cancel"
    );
    let database = state(&client, "dev", "/database").await.expect("exists");
    assert_eq!(
        database,
        before.clone().expect("seeded"),
        "{version:?}: DIFF written before the cancel"
    );

    // a resume may only write where the kept backup reaches
    let outside =
        Mapping::from_toml("m", "[defaults]\nenvironment = \"prod\"\nfolder = \"/new\"\n")
            .expect("parses")
            .apply(source::from_dotenv(".env", "K=\"v\"\n", Interpolation::Off).expect("parses"))
            .expect("maps");
    let refused = run::apply_run(&client, PROJECT, &outside, true, b"k", &settings, &mut |_, _| {})
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(refused.contains("has no backup of prod:/new"), "{refused}");

    clock.advance(60_000);
    let resumed =
        run::apply_run(&client, PROJECT, &mapped(&text), true, b"k", &settings, &mut |_, _| {})
            .await
            .expect("resumes");
    assert!(resumed.resumed);
    assert_eq!(resumed.record.run_id, journal.run_id);
    assert_eq!((resumed.record.resumes, resumed.record.started_ms), (1, journal.started_ms));
    let jwt = state(&client, "dev", "/auth/jwt").await.expect("folder exists");
    let expected: BTreeMap<String, String> =
        (0..keys).map(|n| (format!("KEY_{n:03}"), format!("value-{n}"))).collect();
    let found: BTreeMap<String, String> = jwt.into_iter().map(|row| (row.0, row.1)).collect();
    assert_eq!(found, expected, "{version:?}: exact final state");
    assert!(!work.state_dir().join(run::JOURNAL_FILE).exists());

    // The kept backup is the state before the first run: the rollback undoes both runs.
    let unlock = Unlock::Passphrase(zeroize::Zeroizing::new(passphrase.to_owned()));
    let backup = Backup::read(&work.path().join("before.age"), &unlock).expect("opens");
    let report = rollback::rollback(&client, &backup).await.expect("rolls back");
    assert!(report.differences.is_empty(), "{}", report.differences.render());
    assert_eq!(state(&client, "dev", "/database").await, before);
    assert_eq!(state(&client, "dev", "/auth").await, None);
}

#[tokio::test]
async fn an_apply_cancelled_after_two_chunks_resumes_its_run_exactly_v2026() {
    cancel_then_resume(ApiVersion::V2026).await;
}

#[tokio::test]
async fn an_apply_cancelled_after_two_chunks_resumes_its_run_exactly_v2024() {
    cancel_then_resume(ApiVersion::V2024).await;
}
