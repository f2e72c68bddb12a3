//! Property tests of the pure logic: decisions hold for every input, not just the examples.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::retry::{BudgetConfig, RetryPolicy, TokenBucket, parse_retry_after};
use crate::token::{TokenAction, TokenTimes};
use crate::wire::{FolderSecrets, ImportOrder, decode_list};

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

proptest! {
    #[test]
    fn token_decisions_respect_expiry_and_max_ttl(
        login in 0u64..100_000,
        since_obtained in 0u64..100_000,
        until_now in 0u64..100_000,
        ttl in 0u64..10_000,
        max in 0u64..50_000,
    ) {
        let times = TokenTimes {
            login_at: t(login),
            obtained_at: t(login + since_obtained),
            expires_in: Duration::from_secs(ttl),
            max_ttl: Duration::from_secs(max),
        };
        let now = t(login + since_obtained + until_now);
        let since_login = since_obtained + until_now;
        match times.decide(now) {
            TokenAction::Renew => {
                // Never a renewal the server would punish, never of an expired token.
                prop_assert!(max == 0 || since_login + ttl <= max);
                prop_assert!(until_now < ttl);
                prop_assert!(until_now as f64 >= ttl as f64 * 0.8 - 1.0);
            }
            TokenAction::Use => {
                prop_assert!(ttl == 0 || (until_now as f64) < ttl as f64 * 0.8 + 1.0);
                prop_assert!(max == 0 || since_login < max);
            }
            TokenAction::Login => {}
        }
    }

    #[test]
    fn backoff_never_exceeds_its_ceiling(attempt in 0u32..100, seed in any::<u64>(), base_ms in 0u64..5_000, cap_ms in 0u64..60_000) {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(base_ms),
            max_delay: Duration::from_millis(cap_ms),
            max_retry_after: Duration::from_secs(60),
        };
        let d = policy.backoff(attempt, &mut StdRng::seed_from_u64(seed));
        prop_assert!(d <= Duration::from_millis(cap_ms));
        let ceiling = Duration::from_millis(base_ms).saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX));
        prop_assert!(d <= ceiling);
    }

    #[test]
    fn retry_after_parsing_never_panics(header in ".{0,40}", message in ".{0,80}") {
        let _ = parse_retry_after(Some(&header), Some(&message), t(0));
    }

    #[test]
    fn retry_after_seconds_round_trip(secs in 0u64..1_000_000) {
        prop_assert_eq!(parse_retry_after(Some(&secs.to_string()), None, t(0)), Some(Duration::from_secs(secs)));
        let message = format!("Rate limit exceeded. Please try again in {secs} seconds");
        prop_assert_eq!(parse_retry_after(None, Some(&message), t(0)), Some(Duration::from_secs(secs)));
    }

    #[test]
    fn the_bucket_never_exceeds_capacity_and_its_wait_is_enough(
        capacity in 1u32..50, refill in 1u32..20, steps in proptest::collection::vec(0u64..3_000, 1..60)
    ) {
        let config = BudgetConfig { capacity: f64::from(capacity), refill_per_sec: f64::from(refill) };
        let mut bucket = TokenBucket::new(config, t(0));
        let mut now = t(0);
        for step in steps {
            now += Duration::from_millis(step);
            prop_assert!(bucket.available(now) <= f64::from(capacity) + 1e-9);
            if let Err(wait) = bucket.try_take(now) {
                // Waiting what it says (rounded up to the next microsecond) is enough.
                now += wait + Duration::from_micros(1);
                prop_assert!(bucket.try_take(now).is_ok());
            }
        }
    }

    #[test]
    fn merge_keeps_each_key_once_and_agrees_with_find(
        own in proptest::collection::vec(0u8..6, 0..5),
        imports in proptest::collection::vec(proptest::collection::vec(0u8..6, 0..5), 0..4),
        later_wins in any::<bool>(),
    ) {
        let secret = |k: u8, v: String| format!(r#"{{"secretKey":"K{k}","secretValue":"{v}"}}"#);
        let own_json: Vec<String> = own.iter().enumerate().map(|(i, k)| secret(*k, format!("own{i}"))).collect();
        let imports_json: Vec<String> = imports
            .iter()
            .enumerate()
            .map(|(n, keys)| {
                let s: Vec<String> = keys.iter().map(|k| secret(*k, format!("imp{n}"))).collect();
                format!(r#"{{"secretPath":"/i{n}","environment":"dev","secrets":[{}]}}"#, s.join(","))
            })
            .collect();
        let body = format!(r#"{{"secrets":[{}],"imports":[{}]}}"#, own_json.join(","), imports_json.join(","));
        let folder: FolderSecrets = decode_list(body.as_bytes()).unwrap();
        let order = if later_wins { ImportOrder::LaterWins } else { ImportOrder::EarlierWins };
        let merged = folder.merged(order);
        // The folder's own secrets come first, untouched.
        prop_assert_eq!(&merged[..folder.secrets.len()], &folder.secrets[..]);
        for s in &merged[folder.secrets.len()..] {
            prop_assert!(!folder.secrets.iter().any(|o| o.key == s.key));
            prop_assert_eq!(folder.find(&s.key, order).map(|f| f.value.expose()), Some(s.value.expose()));
            prop_assert_eq!(merged.iter().filter(|m| m.key == s.key).count(), 1);
        }
    }
}
