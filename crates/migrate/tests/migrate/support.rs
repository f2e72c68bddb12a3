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
            {"projectId": PROJECT, "environment": "dev", "path": "/database", "key": "DIFF", "value": EXISTING_DIFF}
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
