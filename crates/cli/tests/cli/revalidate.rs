//! A warm start in a new process: the listing a previous run left in the offline snapshot is
//! revalidated with its ETag, so an unchanged folder costs a 304 and no listing body (counted by
//! the emulator), while a change made between runs is downloaded and injected.

use std::path::{Path, PathBuf};

use ikit_client::{AuthMethod, Client, ClientConfig, Scope, SecretUpdate};

use crate::support::{API_KEY, CLIENT_ID, CLIENT_SECRET, Harness, PROJECT};

const LISTING: &str = "/api/v4/secrets";

fn snapshot_bytes(home: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = home.join(".ikit/snapshots");
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_revalidates_the_snapshot_and_downloads_no_listing_until_a_change() {
    let h = Harness::start().await;
    let emulator = h.emulator.as_ref().unwrap();
    let listings = || emulator.request_count("GET", LISTING);
    let not_modified = || emulator.not_modified_count("GET", LISTING);
    let out = h.work_file("v");
    let script = format!("printf '%s' \"$API_KEY\" > {}", out.display());

    h.ikit(&["run", "--", "sh", "-c", &script]).await.ok();
    assert_eq!((listings(), not_modified()), (1, 0), "the first run downloads the listing");
    // Sealing draws a fresh nonce: a rewritten file has other bytes.
    let written = snapshot_bytes(h.home.path());
    assert_eq!(written.len(), 1);

    std::fs::remove_file(&out).unwrap();
    let run = h.ikit(&["run", "--", "sh", "-c", &script]).await;
    run.ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), API_KEY, "the confirmed values injected");
    assert_eq!((listings(), not_modified()), (2, 1), "one conditional listing, answered 304");
    assert_eq!(snapshot_bytes(h.home.path()), written, "an unchanged snapshot is not rewritten");
    assert!(!run.stderr.contains("snapshot"), "served as confirmed, no warning: {}", run.stderr);

    // `secrets get` reads the same listing the same way.
    let get = h.ikit(&["secrets", "get", "API_KEY", "--plain"]).await;
    get.ok();
    assert_eq!(get.stdout, format!("{API_KEY}\n"));
    assert_eq!((listings(), not_modified()), (3, 2), "secrets get: a 304 too");

    // A change between runs: the ETag no longer matches, the new listing comes whole.
    let client = Client::new(
        ClientConfig::new(&h.url, AuthMethod::universal(CLIENT_ID, CLIENT_SECRET)).unwrap(),
    )
    .unwrap();
    let changed = "changed-between-runs-5b1";
    let update = SecretUpdate::value("API_KEY", ikit_client::SecretValue::new(changed));
    client.update_secret(&Scope::new(PROJECT, "dev", "/"), &update).await.unwrap();
    let before = listings();
    h.ikit(&["run", "--", "sh", "-c", &script]).await.ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), changed, "the change is seen");
    assert_eq!((listings(), not_modified()), (before + 1, 2), "a 200 with the new listing");
    assert_ne!(snapshot_bytes(h.home.path()), written, "the snapshot now holds the change");

    // And the next run revalidates the new copy.
    h.ikit(&["run", "--", "sh", "-c", &script]).await.ok();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), changed);
    assert_eq!((listings(), not_modified()), (before + 2, 3));
}
