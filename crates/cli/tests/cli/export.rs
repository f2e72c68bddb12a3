//! `ikit export`: every troublesome value reads back exactly in the reader each format is for:
//! python-dotenv (`dotenv`), `bash -c 'set -a; source f'` (`dotenv-export`), docker's
//! `--env-file` rules (`docker`, a test-local parser), JSON and CSV; files are private.

use std::collections::BTreeMap;
use std::process::Command;

use crate::support::{CLIENT_SECRET, Harness, troublesome};

fn expected(one_line_only: bool) -> BTreeMap<String, String> {
    troublesome()
        .into_iter()
        .filter(|(_, v)| !one_line_only || !v.contains('\n'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

async fn harness() -> Harness {
    let mut extra: Vec<(&str, &str, &str)> =
        troublesome().into_iter().map(|(k, v)| ("/t", k, v)).collect();
    extra.extend(
        troublesome()
            .into_iter()
            .filter(|(_, v)| !v.contains('\n'))
            .map(|(k, v)| ("/oneline", k, v)),
    );
    Harness::with_secrets(&extra).await
}

fn python_json(code: &str, arg: &std::path::Path) -> BTreeMap<String, String> {
    let out = Command::new("python3").arg("-c").arg(code).arg(arg).output().expect("python3 runs");
    assert!(out.status.success(), "python3: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotenv_round_trips_through_python_dotenv_and_names_the_values_it_would_interpolate() {
    use std::os::unix::fs::PermissionsExt as _;

    let h = harness().await;
    let run = h.ikit(&["export", "--path", "/t", "--format", "dotenv", "-o", "out.env"]).await;
    run.ok();
    run.leaks_none(&["padded", "żółć", CLIENT_SECRET]);
    let file = h.work_file("out.env");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let code = "import json, sys\nfrom dotenv import dotenv_values\n\
                print(json.dumps(dict(dotenv_values(sys.argv[1], interpolate=False))))";
    assert_eq!(python_json(code, &file), expected(false));
    // `${HOME}` cannot be kept from python-dotenv's default interpolation: said, by key only
    assert!(run.stderr.contains("T_DOLLAR hold `${`"), "{}", run.stderr);
    assert!(!run.stderr.contains("T_SINGLE"), "{}", run.stderr);
    let text = std::fs::read_to_string(&file).unwrap();
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| k.starts_with("T_"))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "sorted by key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotenv_export_round_trips_through_bash_source_and_eval() {
    let h = harness().await;
    h.ikit(&["export", "--path", "/t", "--format", "dotenv-export", "-o", "out.sh"]).await.ok();
    let dump = "import json, os; print(json.dumps({k: v for k, v in os.environ.items() if k.startswith('T_')}))";
    for reader in ["set -a; source ./out.sh", "eval \"$(cat ./out.sh)\""] {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("{reader}; python3 -c \"$0\"",))
            .arg(dump)
            .current_dir(h.work.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let got: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(got, expected(false), "{reader}");
    }
}

/// `docker run --env-file` as documented: lines split at `\n` (a trailing `\r` dropped),
/// leading whitespace trimmed, blank lines and `#` lines skipped, `KEY=value` with the value
/// taken verbatim, a name with whitespace refused.
fn docker_env_file(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw).trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').expect("this test never writes bare names");
        assert!(!key.contains(char::is_whitespace), "docker refuses {key:?}");
        out.insert(key.to_owned(), value.to_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_format_round_trips_what_docker_can_hold_and_refuses_the_rest_by_name() {
    let h = harness().await;
    h.ikit(&["export", "--path", "/oneline", "--format", "docker", "-o", "docker.env"]).await.ok();
    let text = std::fs::read_to_string(h.work_file("docker.env")).unwrap();
    assert_eq!(docker_env_file(&text), expected(true));

    let run = h.ikit(&["export", "--path", "/t", "--format", "docker", "-o", "bad.env"]).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("docker")
            && (run.stderr.contains("T_NEWLINES") || run.stderr.contains("T_CR")),
        "{}",
        run.stderr
    );
    assert!(!h.work_file("bad.env").exists(), "no wrong file is left behind");
    run.leaks_none(&["line one", "win"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_csv_round_trip() {
    let h = harness().await;
    let run = h.ikit(&["export", "--path", "/t", "--format", "json"]).await;
    run.ok();
    let items: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    let got: BTreeMap<String, String> = items
        .iter()
        .map(|i| (i["key"].as_str().unwrap().to_owned(), i["value"].as_str().unwrap().to_owned()))
        .filter(|(k, _)| k.starts_with("T_"))
        .collect();
    assert_eq!(got, expected(false));

    h.ikit(&["export", "--path", "/t", "--format", "csv", "-o", "out.csv"]).await.ok();
    let code = "import csv, json, sys\nrows = list(csv.reader(open(sys.argv[1], newline='', encoding='utf-8')))\n\
                assert rows[0] == ['Key', 'Value']\nprint(json.dumps({k: v for k, v in rows[1:]}))";
    assert_eq!(python_json(code, &h.work_file("out.csv")), expected(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_is_filled_with_the_named_values() {
    let h = Harness::start().await;
    std::fs::write(h.work_file("tpl"), "key={{ .API_KEY }}\n").unwrap();
    let run = h.ikit(&["export", "--template", "tpl"]).await;
    run.ok();
    assert_eq!(run.stdout, format!("key={}\n", crate::support::API_KEY));
}
