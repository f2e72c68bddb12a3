//! R7: property tests over every parser of untrusted bytes. In CI they run at proptest's default
//! case count; `make fuzz` runs them with `PROPTEST_CASES` in the hundreds of thousands. The
//! property is always "an answer, never a panic", plus the round trip where there is one.
//! The snapshot file is a sealed entry: the seal is fuzzed on its own, and so is the entry codec
//! inside it (`ikit_client::internals::decode_snapshot_entry`).

use std::time::Duration;

use ikit_client::SealKey;
use ikit_common::webhook_signature::{sign, sign_sha256, verify_at};
use ikit_keys::cipher::{AesKey, AesKeyRing, AesKeyState, Envelope, RingKey};
use ikit_migrate::dotenv::{self, Interpolation};
use proptest::prelude::*;
use rand::SeedableRng as _;

fn ring() -> AesKeyRing {
    let key = AesKey::from_bytes("fuzz-kid", &[7u8; 32]).expect("key");
    let ring_key = RingKey {
        key,
        state: AesKeyState::Active,
        created_at: 0,
        activated_at: Some(0),
        deactivated_at: None,
        retired_at: None,
    };
    AesKeyRing::new([ring_key]).expect("ring")
}

/// Bytes that look like the format under test often enough to get past its first checks.
fn near_json() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        "\\{\"event\":\"[a-z.\\-]{0,24}\",\"project\":\\{\"workspaceId\":\"[a-z0-9\\-]{0,12}\",\"environment\":\"[a-z]{0,6}\",\"secretPath\":\"[/a-z{}*]{0,12}\"\\},\"timestamp\":-?[0-9]{0,14}(,\"payload\":\\{\"secretKey\":\"[A-Z_]{0,8}\"\\})?\\}"
            .prop_map(String::into_bytes),
        "[\\{\\}\\[\\]\":,a-z0-9 ]{0,64}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #[test]
    fn r7_webhook_payload_decode_never_panics(body in near_json()) {
        let _ = ikit_webhook::payload::decode(&body);
    }

    #[test]
    fn r7_signature_verify_never_panics_and_round_trips(
        header in "[ -~]{0,96}",
        body in proptest::collection::vec(any::<u8>(), 0..256),
        ts in any::<i64>(),
        now in any::<i64>(),
    ) {
        let secret: &[u8] = b"whsec-fuzz";
        let _ = verify_at(&header, &body, &[secret], now, Duration::from_secs(300));
        let signed = sign(ts, secret, &body);
        prop_assert!(verify_at(&signed, &body, &[secret], ts, Duration::from_secs(300)).is_ok());
        prop_assert!(verify_at(&signed, &body, &[b"other".as_slice()], ts, Duration::from_secs(300)).is_err());
        let sha = sign_sha256(secret, &body);
        let _ = verify_at(&sha, &body, &[secret], now, Duration::from_secs(300));
    }

    #[test]
    fn r7_dotenv_parse_never_panics(text in "([A-Za-z_ =#'\"\\\\$\\{\\}\\n\\t\\r\u{e9}]|export ){0,80}") {
        let _ = dotenv::parse(".env", &text, Interpolation::Off);
    }

    #[test]
    fn r7_dotenv_quote_round_trips(key in "[A-Za-z_][A-Za-z0-9_]{0,12}", value in "\\PC{0,40}|[ -~\\n\\t]{0,40}") {
        if let Ok(line) = dotenv::quote(&key, &value) {
            let entries = dotenv::parse(".env", &line, Interpolation::Off).expect("a quoted line parses");
            prop_assert_eq!(entries.len(), 1);
            prop_assert_eq!(&entries[0].key, &key);
            prop_assert_eq!(entries[0].value.as_ref().map(|v| v.expose()), Some(value.as_str()));
        }
    }

    #[test]
    fn r7_ciphertext_header_and_decrypt_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..128),
        text in "[A-Za-z0-9_\\-]{0,96}",
    ) {
        let _ = Envelope::decode(&bytes);
        let ring = ring();
        let _ = ring.decrypt_bytes(&bytes, b"aad");
        let _ = ring.decrypt(&text, b"aad");
        let _ = AesKeyRing::kid_of(&text);
    }

    #[test]
    fn r7_sealed_cache_value_never_panics_and_round_trips(
        sealed in proptest::collection::vec(any::<u8>(), 0..128),
        plaintext in proptest::collection::vec(any::<u8>(), 0..128),
        flip in any::<usize>(),
    ) {
        let key = SealKey::new([3u8; 32]);
        let _ = ikit_client::internals::open(&key, b"aad", &sealed);
        let mut rng = rand::rngs::StdRng::seed_from_u64(flip as u64);
        let mut good = ikit_client::internals::seal(&key, b"aad", &plaintext, &mut rng);
        prop_assert_eq!(&ikit_client::internals::open(&key, b"aad", &good).expect("opens")[..], &plaintext[..]);
        let at = flip % good.len();
        good[at] ^= 0x01;
        prop_assert!(ikit_client::internals::open(&key, b"aad", &good).is_err(), "a flipped byte is refused");
    }

    #[test]
    fn r7_snapshot_entry_never_panics_and_round_trips(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        saved_at_ms in any::<i64>(),
        etag in proptest::option::of("[ -~]{0,40}"),
    ) {
        let _ = ikit_client::internals::decode_snapshot_entry(&bytes);
        let listing = ikit_client::FolderSecrets::default();
        let encoded = ikit_client::internals::encode_snapshot_entry(saved_at_ms, etag.as_deref(), &listing);
        let (saved, stored_etag, folder) =
            ikit_client::internals::decode_snapshot_entry(&encoded).expect("decodes");
        prop_assert_eq!(saved, saved_at_ms);
        prop_assert_eq!(stored_etag, etag.filter(|e| !e.is_empty()));
        prop_assert!(folder.secrets.is_empty() && folder.imports.is_empty());
        // Every strict prefix of a valid entry is refused or decodes, never panics.
        for cut in 0..encoded.len() {
            let _ = ikit_client::internals::decode_snapshot_entry(&encoded[..cut]);
        }
    }

    #[test]
    fn r7_project_file_never_panics_and_round_trips(
        text in prop_oneof![
            "[ -~]{0,128}",
            "\\{(\"(workspaceId|defaultEnvironment|defaultSecretPath|domain|gitBranchToEnvironmentMapping)\":(null|\"[a-z0-9/]{0,8}\"|\\{\"[a-z]{0,4}\":\"[a-z]{0,4}\"\\}|[0-9]{1,3}),?){0,5}\\}",
        ],
        workspace in proptest::option::of("[a-z0-9\\-]{1,16}"),
        environment in proptest::option::of("[a-z]{1,8}"),
    ) {
        let path = std::path::Path::new(".infisical.json");
        let _ = ikit::context::ProjectConfig::parse(path, &text);
        let config = ikit::context::ProjectConfig {
            workspace_id: workspace,
            default_environment: environment,
            ..Default::default()
        };
        let written = serde_json::to_string(&config).expect("serialises");
        prop_assert_eq!(ikit::context::ProjectConfig::parse(path, &written).expect("parses"), config);
    }
}
