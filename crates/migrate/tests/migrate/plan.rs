use ikit_client::FolderQuery;
use ikit_emulator::ApiVersion;
use ikit_migrate::dotenv::Interpolation;
use ikit_migrate::mapping::Mapping;
use ikit_migrate::plan::{Action, plan, value_hmac};
use ikit_migrate::source;
use sha2::{Digest, Sha256};

use crate::support::{self, EXISTING_DIFF, PROJECT};

const DOTENV: &str = "\
export SAME='same ${REF} value'
DIFF=\"brand-new-diff-value\"
NEW_KEY=\"multi\\nline new value\"
DEBUG=1
";
const JSON: &str = r#"{"auth": {"jwt": {"PRIVATE_KEY": "jwt-private-key-material"}}}"#;
const VALUES: [&str; 4] =
    ["brand-new-diff-value", "multi\nline new value", "jwt-private-key-material", EXISTING_DIFF];
const PLAN_KEY: &[u8] = b"plan-key-for-tests-0123456789abc";

fn mapping(overwrite: bool) -> Mapping {
    let text = format!(
        "skip = [\"DEBUG\"]\n[defaults]\nenvironment = \"dev\"\nfolder = \"/database\"\noverwrite = {overwrite}\n\
         [[rule]]\nprefix = \"PRIVATE\"\nfolder = \"/\"\n"
    );
    Mapping::from_toml("map.toml", &text).expect("mapping parses")
}

fn sources() -> Vec<source::SourceSecret> {
    let mut all = source::from_dotenv(".env", DOTENV, Interpolation::Off).expect(".env parses");
    all.extend(source::from_json("cfg.json", JSON).expect("json parses"));
    all
}

async fn plan_against(version: ApiVersion) {
    let emulator = support::emulator(version).await;
    let client = support::client(&emulator);

    let mapped = mapping(false).apply(sources()).expect("maps");
    let planned = plan(&client, PROJECT, &mapped, false, PLAN_KEY).await.expect("plans");
    let actions: Vec<(Action, &str)> =
        planned.items.iter().map(|item| (item.action, item.target.as_str())).collect();
    assert_eq!(
        actions,
        [
            (Action::Unchanged, "dev:/database/SAME"),
            (Action::Conflict, "dev:/database/DIFF"),
            (Action::Create, "dev:/database/NEW_KEY"),
            (Action::Create, "dev:/auth/jwt/PRIVATE_KEY"),
            (Action::Skip, "DEBUG"),
        ],
        "{version:?}"
    );
    assert!(planned.has_work());
    assert_eq!(planned.items[1].origin, ".env:2");

    let overwriting =
        plan(&client, PROJECT, &mapping(true).apply(sources()).expect("maps"), true, PLAN_KEY)
            .await
            .expect("plans");
    assert_eq!(overwriting.items[1].action, Action::Update);
    assert_eq!(overwriting.count(Action::Conflict), 0);

    // Neither the text, the JSON plan file nor the HMACs reveal a value or a plain hash of one.
    let outputs =
        [planned.render(), planned.to_json(), overwriting.render(), overwriting.to_json()];
    for output in &outputs {
        for value in VALUES {
            assert!(!output.contains(value), "{version:?}: a value leaked into the plan");
            let plain_hash = hex::encode(Sha256::digest(value.as_bytes()));
            assert!(!output.contains(&plain_hash), "{version:?}: a plain hash in the plan");
        }
    }
    let diff_hmac = planned.items[1].value_hmac.clone().expect("mapped keys carry an hmac");
    assert_eq!(diff_hmac, value_hmac(PLAN_KEY, &"brand-new-diff-value".into()));
    assert_ne!(diff_hmac, value_hmac(b"another key", &"brand-new-diff-value".into()));

    // Planning wrote nothing: the old value is still there and no folder was created.
    let listing =
        client.list_secrets(&FolderQuery::new(PROJECT, "dev", "/database")).await.expect("lists");
    let diff = listing.secrets.iter().find(|s| s.key == "DIFF").expect("DIFF still there");
    assert_eq!(diff.value.expose(), EXISTING_DIFF);
    assert_eq!(listing.secrets.len(), 2);
    let folders = client.list_folders(PROJECT, "dev", "/", false).await.expect("folders");
    assert!(folders.iter().all(|folder| folder.name != "auth"), "{version:?}");
}

#[tokio::test]
async fn plan_decides_each_key_and_shows_no_value_v2026() {
    plan_against(ApiVersion::V2026).await;
}

#[tokio::test]
async fn plan_decides_each_key_and_shows_no_value_v2024() {
    plan_against(ApiVersion::V2024).await;
}
