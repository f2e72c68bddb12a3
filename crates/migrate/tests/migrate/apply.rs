use std::sync::{Arc, Mutex};

use ikit_client::{BatchProgress, FolderQuery};
use ikit_emulator::{ApiVersion, RunningEmulator};
use ikit_migrate::apply::apply;
use ikit_migrate::dotenv::Interpolation;
use ikit_migrate::mapping::Mapping;
use ikit_migrate::source;

use crate::support::{self, PROJECT};

/// Every corner of the dialect, with the value each must arrive as.
const DOTENV: &str = "\
# comment
export EXPORTED=plain
UNQUOTED=  spaced out   # comment dropped
SINGLE='no \\n escape, ${HOME} kept, it\\'s'
DOUBLE=\"tab\\t quote\\\" backslash\\\\ dollar $X\"
MULTI=\"first
second\"
UNICODE=\"é ✓ 🦀\"
PADDED=\"  kept spaces  \"
EMPTY=
HASH=a#b
";
const EXPECTED: [(&str, &str); 9] = [
    ("EXPORTED", "plain"),
    ("UNQUOTED", "spaced out"),
    ("SINGLE", "no \\n escape, ${HOME} kept, it's"),
    ("DOUBLE", "tab\t quote\" backslash\\ dollar $X"),
    ("MULTI", "first\nsecond"),
    ("UNICODE", "é ✓ 🦀"),
    ("EMPTY", ""),
    ("HASH", "a#b"),
    ("WIDE", ""),
];

fn writes(emulator: &RunningEmulator) -> u64 {
    let routes = [
        "/api/v4/secrets/batch",
        "/api/v3/secrets/batch/raw",
        "/api/v1/folders",
        "/api/v2/folders",
    ];
    ["POST", "PATCH", "DELETE"]
        .iter()
        .flat_map(|method| routes.iter().map(move |route| emulator.request_count(method, route)))
        .sum()
}

/// Every request a migration sends: its writes and its reads of folders and listings.
fn all_requests(emulator: &RunningEmulator) -> u64 {
    let reads = ["/api/v1/folders", "/api/v2/folders", "/api/v4/secrets", "/api/v3/secrets/raw"];
    writes(emulator) + reads.iter().map(|route| emulator.request_count("GET", route)).sum::<u64>()
}

async fn corners_migrate_exactly(version: ApiVersion) {
    let emulator = support::emulator(version).await;
    let client = support::client(&emulator);
    let mapping = Mapping::from_toml(
        "map.toml",
        "[defaults]\nenvironment = \"dev\"\nfolder = \"/app/config\"\n",
    )
    .expect("mapping parses");
    let mut text = DOTENV.to_owned();
    // enough keys for three chunks of the client's default
    let per_chunk = ikit_client::BatchLimits::default().max_items;
    let bulk = 2 * per_chunk + 50;
    for n in 0..bulk {
        text.push_str(&format!("BULK_{n:03}=\"value {n}\"\n"));
    }
    text.push_str("WIDE=\n");
    let sources = || source::from_dotenv(".env", &text, Interpolation::Off).expect("parses");

    let steps: Arc<Mutex<Vec<(String, BatchProgress)>>> = Arc::default();
    let recorder = steps.clone();
    let mut progress = move |folder: &str, step: BatchProgress| {
        recorder.lock().unwrap().push((folder.to_owned(), step));
    };
    let mapped = mapping.apply(sources()).expect("maps");
    let (_, report) =
        apply(&client, PROJECT, &mapped, false, b"k", &mut progress).await.expect("applies");
    // PADDED would lose its spaces on the server: a conflict, not written
    let written = bulk + 9;
    assert_eq!(report.written.len(), written, "{version:?}");
    assert!(!report.written.iter().any(|target| target.ends_with("/PADDED")));
    assert_eq!(report.folders_created, ["dev:/app", "dev:/app/config"]);
    assert!(report.pending_approval.is_empty());
    let steps = steps.lock().unwrap().clone();
    assert_eq!(steps.len(), 3, "{version:?}: three chunks of at most {per_chunk}");
    assert_eq!((steps[0].1.done, steps[1].1.done), (per_chunk, 2 * per_chunk));
    assert_eq!(steps[2].1.done, written);
    assert_eq!(steps[0].0, "dev:/app/config");
    let batch_writes = writes(&emulator) - 2; // two folder creations
    assert_eq!(batch_writes, 3, "{version:?}");

    let listing = client
        .list_secrets(
            &FolderQuery::new(PROJECT, "dev", "/app/config")
                .include_imports(false)
                .expand_references(false),
        )
        .await
        .expect("reads back");
    for (key, expected) in EXPECTED {
        let secret = listing
            .secrets
            .iter()
            .find(|secret| secret.key == key)
            .unwrap_or_else(|| panic!("{version:?}: {key} missing"));
        assert_eq!(secret.value.expose().as_bytes(), expected.as_bytes(), "{version:?}: {key}");
    }
    assert_eq!(listing.secrets.len(), written);

    // A second apply finds everything unchanged and writes nothing.
    let before = writes(&emulator);
    let (second_plan, second) = apply(
        &client,
        PROJECT,
        &mapping.apply(sources()).expect("maps"),
        false,
        b"k",
        &mut |_, _| {},
    )
    .await
    .expect("applies again");
    assert!(second.written.is_empty(), "{version:?}");
    let padded = second_plan.items.iter().find(|item| item.target.ends_with("/PADDED"));
    assert_eq!(
        padded.map(|item| item.reason),
        Some(Some("the server trims surrounding white space from this value"))
    );
    assert_eq!(writes(&emulator), before, "{version:?}: the second apply wrote");
}

#[tokio::test]
async fn every_dotenv_corner_migrates_exactly_and_twice_is_once_v2026() {
    corners_migrate_exactly(ApiVersion::V2026).await;
}

#[tokio::test]
async fn every_dotenv_corner_migrates_exactly_and_twice_is_once_v2024() {
    corners_migrate_exactly(ApiVersion::V2024).await;
}

#[tokio::test]
async fn a_folder_behind_approval_is_reported_pending() {
    let emulator = support::emulator(ApiVersion::V2026).await;
    let client = support::client(&emulator);
    let mapping =
        Mapping::from_toml("m", "[defaults]\nenvironment = \"prod\"\nfolder = \"/auth\"\n")
            .expect("mapping parses");
    let sources =
        source::from_dotenv(".env", "JWT_KEY=\"k\"\n", Interpolation::Off).expect("parses");
    let mapped = mapping.apply(sources).expect("maps");
    let (_, report) =
        apply(&client, PROJECT, &mapped, false, b"k", &mut |_, _| {}).await.expect("applies");
    assert_eq!(report.pending_approval, ["prod:/auth/JWT_KEY"]);
    assert!(report.written.is_empty());
}

#[tokio::test]
async fn ten_thousand_keys_take_at_most_a_hundred_requests_in_chunks_within_the_limits() {
    let emulator = support::emulator(ApiVersion::V2026).await;
    let client = support::client(&emulator);
    let mapping = Mapping::from_toml("m", "[defaults]\nenvironment = \"prod\"\n").expect("parses");
    let text: String = (0..10_000).map(|n| format!("KEY_{n:05}=\"value-{n}\"\n")).collect();
    let sources = source::from_dotenv(".env", &text, Interpolation::Off).expect("parses");
    let mapped = mapping.apply(sources).expect("maps");
    // the whole recorded run: backup first, journal after every chunk, run file at the end
    let work = support::Workdir::new();
    let protection =
        ikit_migrate::backup::Protection::Recipient(age::x25519::Identity::generate().to_public());
    let clock = ikit_common::clock::SystemClock;
    let settings = ikit_migrate::run::RunSettings {
        state_dir: work.state_dir(),
        backup_out: None,
        protection: Some(&protection),
        audit: None,
        actor: "bench".to_owned(),
        clock: &clock,
    };
    let started = std::time::Instant::now();
    let run = ikit_migrate::run::apply_run(
        &client,
        PROJECT,
        &mapped,
        false,
        b"k",
        &settings,
        &mut |_, _| {},
    )
    .await
    .expect("applies");
    // measured, not asserted: printed for `make bench-migrate` and the closing note
    let (writes, all) = (writes(&emulator), all_requests(&emulator));
    println!("10000 keys: {:?}, {all} requests, {writes} writes", started.elapsed());
    assert_eq!(run.report.written.len(), 10_000);
    // Chunked by item count (small values), every chunk within the client's limit.
    let per_chunk = ikit_client::BatchLimits::default().max_items;
    assert_eq!(writes, 10_000u64.div_ceil(per_chunk as u64), "{per_chunk} keys a write");
    // Everything the run sent: the backup's reads, the plan's listing, the writes.
    assert!(all <= 100, "{all} requests");
}

#[tokio::test]
async fn an_apply_cancelled_after_one_chunk_is_finished_by_the_next() {
    let emulator = support::emulator(ApiVersion::V2026).await;
    let client = support::client(&emulator);
    let mapping =
        Mapping::from_toml("m", "[defaults]\nenvironment = \"dev\"\nfolder = \"/bulk\"\n")
            .expect("parses");
    // three chunks of the client's default
    let per_chunk = ikit_client::BatchLimits::default().max_items;
    let keys = 3 * per_chunk;
    let text: String = (0..keys).map(|n| format!("KEY_{n:03}=\"value-{n}\"\n")).collect();
    let mapped = || {
        let sources = source::from_dotenv(".env", &text, Interpolation::Off).expect("parses");
        mapping.apply(sources).expect("maps")
    };

    let first_chunk = Arc::new(tokio::sync::Notify::new());
    let signal = first_chunk.clone();
    let mut progress = move |_: &str, _: BatchProgress| signal.notify_one();
    let interrupted = mapped();
    tokio::select! {
        _ = apply(&client, PROJECT, &interrupted, false, b"k", &mut progress) => {
            panic!("the apply finished before it was cancelled")
        }
        _ = first_chunk.notified() => {}
    }
    let query = FolderQuery::new(PROJECT, "dev", "/bulk").include_imports(false);
    let partial = client.list_secrets(&query).await.expect("lists").secrets.len();
    assert!((per_chunk..keys).contains(&partial), "{partial} keys after the cancel");

    let (_, report) =
        apply(&client, PROJECT, &mapped(), false, b"k", &mut |_, _| {}).await.expect("applies");
    // the first chunk is never written again (a request in flight at the cancel may still land,
    // so the exact remainder is not fixed)
    assert!(report.written.len() <= keys - per_chunk, "{} rewritten", report.written.len());
    assert!(!report.written.iter().any(|target| target.ends_with("/KEY_000")));
    let listing = client.list_secrets(&query).await.expect("lists");
    assert_eq!(listing.secrets.len(), keys);
    for secret in &listing.secrets {
        let n = secret.key.trim_start_matches("KEY_").parse::<u32>().expect("numbered");
        assert_eq!(secret.value.expose(), format!("value-{n}"));
    }
}

#[tokio::test]
async fn the_apply_report_and_plan_show_no_value() {
    let emulator = support::emulator(ApiVersion::V2026).await;
    let client = support::client(&emulator);
    let mapping =
        Mapping::from_toml("m", "[defaults]\nenvironment = \"dev\"\nfolder = \"/logged\"\n")
            .expect("parses");
    let values = ["logged-value-5e1f0a", "second \"quoted\" value-77c2"];
    let quoted = ikit_migrate::dotenv::quote("B", values[1]).expect("quotes");
    let text = format!("A={}\n{quoted}\n", values[0]);
    let mapped = mapping
        .apply(source::from_dotenv(".env", &text, Interpolation::Off).expect("parses"))
        .expect("maps");
    let (planned, report) =
        apply(&client, PROJECT, &mapped, false, b"k", &mut |_, _| {}).await.expect("applies");
    assert_eq!(report.written, ["dev:/logged/A", "dev:/logged/B"]);
    let shown = format!("{}{}{report:?}{planned:?}", planned.render(), planned.to_json());
    for value in values {
        assert!(!shown.contains(value), "a value reached the output");
    }
}
