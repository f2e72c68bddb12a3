//! The export encoders against the real readers on many generated values at once: one file of
//! 300 random values (quotes, `$`, braces, backslashes, `#`, tabs, line breaks, unicode) read by
//! python-dotenv, by `bash` `source`, and by docker's documented `--env-file` rules.

use std::collections::BTreeMap;
use std::process::Command;

use ikit::fetch::SecretMap;
use ikit_common::SecretValue;
use rand::{Rng as _, SeedableRng as _};

const POOL: &[char] = &[
    '\'', '"', '$', '{', '}', '\\', '#', ' ', '\t', '\n', '\r', '=', '`', '!', '*', ';', '&', '|',
    'ż', '🚀', '日', 'a', 'Z', '0', '_', '-',
];

fn values() -> BTreeMap<String, String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    (0..300)
        .map(|i| {
            let len = rng.gen_range(0..24);
            let value: String = (0..len).map(|_| POOL[rng.gen_range(0..POOL.len())]).collect();
            (format!("K_{i:03}"), value)
        })
        .collect()
}

fn secret_map(values: &BTreeMap<String, String>) -> SecretMap {
    values.iter().map(|(k, v)| (k.clone(), SecretValue::new(v.as_str()))).collect()
}

fn read_json(out: std::process::Output) -> BTreeMap<String, String> {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn generated_values_round_trip_through_bash_python_dotenv_and_docker_rules() {
    let dir = tempfile::tempdir().unwrap();
    let all = values();

    // bash: every value
    let shell = dir.path().join("out.sh");
    std::fs::write(&shell, ikit::format::dotenv_export(&secret_map(&all)).unwrap()).unwrap();
    let dump = "import json, os; print(json.dumps({k: v for k, v in os.environ.items() if k.startswith('K_')}))";
    let out = Command::new("bash")
        .arg("-c")
        .arg("set -a; source \"$1\"; python3 -c \"$0\"")
        .arg(dump)
        .arg(&shell)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert_eq!(read_json(out), all, "bash source");

    // python-dotenv: every value the dialect can spell (a quoted value ending in a backslash
    // on several lines cannot be); those are refused by name, never written wrong
    let spellable: BTreeMap<String, String> = all
        .iter()
        .filter(|(k, v)| ikit_migrate::dotenv::quote(k, v).is_ok())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(spellable.len() > 250, "most values are spellable: {}", spellable.len());
    let env_file = dir.path().join("out.env");
    std::fs::write(&env_file, ikit::format::dotenv(&secret_map(&spellable)).unwrap()).unwrap();
    let code = "import json, sys\nfrom dotenv import dotenv_values\n\
                print(json.dumps(dict(dotenv_values(sys.argv[1], interpolate=False))))";
    let out = Command::new("python3").arg("-c").arg(code).arg(&env_file).output().unwrap();
    assert_eq!(read_json(out), spellable, "python-dotenv");
    if spellable.len() < all.len() {
        assert!(ikit::format::dotenv(&secret_map(&all)).is_err());
    }

    // docker: what one line can hold
    let one_line: BTreeMap<String, String> = all
        .iter()
        .filter(|(_, v)| !v.contains('\n') && !v.ends_with('\r'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let text = ikit::format::docker(&secret_map(&one_line)).unwrap();
    let mut read = BTreeMap::new();
    for raw in text.split('\n').filter(|l| !l.is_empty()) {
        let line = raw.strip_suffix('\r').unwrap_or(raw).trim_start();
        let (k, v) = line.split_once('=').unwrap();
        read.insert(k.to_owned(), v.to_owned());
    }
    assert_eq!(read, one_line, "docker --env-file rules");
    assert!(ikit::format::docker(&secret_map(&all)).is_err(), "multi-line values are refused");
}
