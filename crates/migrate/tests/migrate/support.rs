//! An emulator on port 0 with a small project, and a client logged in with universal auth.

use ikit_client::{AuthMethod, Client, ClientConfig};
use ikit_emulator::{ApiVersion, Emulator, EmulatorConfig, RunningEmulator, Seed};

pub(crate) const PROJECT: &str = "9b6f8a70-0000-4000-8000-0000000000aa";
pub(crate) const EXISTING_DIFF: &str = "old-value-in-infisical";

fn seed_json() -> String {
    serde_json::json!({
        "projects": [{"id": PROJECT, "slug": "journal", "environments": ["dev", "prod"]}],
        "identities": [
            {"id": "id-ua", "name": "migrator", "clientId": "migrate-client", "clientSecret": "migrate-secret",
             "accessTokenTTL": 600, "accessTokenMaxTTL": 3600, "projects": [PROJECT]}
        ],
        "folders": [
            {"projectId": PROJECT, "environment": "dev", "path": "/database"},
            {"projectId": PROJECT, "environment": "prod", "path": "/auth"}
        ],
        "secrets": [
            {"projectId": PROJECT, "environment": "dev", "path": "/database", "key": "SAME", "value": "same ${REF} value"},
            {"projectId": PROJECT, "environment": "dev", "path": "/database", "key": "DIFF", "value": EXISTING_DIFF,
             "comment": "kept by every write", "tags": ["backend"]}
        ],
        "approvalPolicies": [{"projectId": PROJECT, "environment": "prod", "secretPath": "/auth"}]
    })
    .to_string()
}

pub(crate) async fn emulator(version: ApiVersion) -> RunningEmulator {
    let seed = Seed::from_json(&seed_json()).expect("seed parses");
    Emulator::start(EmulatorConfig::new(seed).api_version(version)).await.expect("emulator starts")
}

pub(crate) fn client(emulator: &RunningEmulator) -> Client {
    let auth = AuthMethod::universal("migrate-client", "migrate-secret");
    let config = ClientConfig::new(&emulator.base_url(), auth).expect("config");
    Client::new(config).expect("client")
}

/// Every request other than a GET or a login that the emulator counted, on any route.
pub(crate) async fn all_writes(emulator: &RunningEmulator) -> u64 {
    let counters: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/__emulator/counters", emulator.base_url()))
        .bearer_auth(emulator.admin_token())
        .send()
        .await
        .expect("counters answer")
        .json()
        .await
        .expect("counters json");
    counters["counters"]
        .as_array()
        .expect("counter list")
        .iter()
        .filter(|row| {
            row["method"].as_str() != Some("GET")
                && !row["route"].as_str().unwrap_or_default().starts_with("/api/v1/auth/")
        })
        .map(|row| row["count"].as_u64().unwrap_or_default())
        .sum()
}

/// A state directory and an audit database of the test's own.
pub(crate) struct Workdir {
    pub(crate) dir: tempfile::TempDir,
}

impl Workdir {
    pub(crate) fn new() -> Self {
        Workdir { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub(crate) fn state_dir(&self) -> std::path::PathBuf {
        self.dir.path().join(".ikit/migrations")
    }

    pub(crate) fn audit(&self) -> ikit_common::audit::AuditLog {
        let url = format!("sqlite://{}", self.dir.path().join(".ikit/audit.db").display());
        ikit_common::audit::AuditLog::connect(
            &url,
            ikit_common::audit::AuditOptions::new(self.dir.path().join(".ikit/spool")),
        )
        .expect("audit log")
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("writes");
        path
    }
}
