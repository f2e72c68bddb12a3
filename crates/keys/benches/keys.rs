//! Sign, verify, encrypt and decrypt: the hot paths readers take.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ikit_keys::cipher::{AesKey, AesKeyRing, AesKeyState, RingKey};
use ikit_keys::jwt::{JwkSet, JwtAlgorithm, JwtKey, VerifyOptions};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

fn jwt(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let claims =
        json!({"sub": "user-123", "iss": "ikit", "exp": 2_000_000_000i64, "scope": "read write"});
    for alg in [JwtAlgorithm::ES256, JwtAlgorithm::EdDSA, JwtAlgorithm::RS256] {
        let key = JwtKey::generate(alg, &mut rng).unwrap();
        // a realistic published set: current, next and previous
        let others: Vec<JwtKey> =
            (0..2).map(|_| JwtKey::generate(alg, &mut rng).unwrap()).collect();
        let set = JwkSet::new(
            std::iter::once(key.public().clone()).chain(others.iter().map(|k| k.public().clone())),
        );
        let token = key.sign(&claims).unwrap();
        c.bench_function(&format!("sign {alg}"), |b| {
            b.iter(|| key.sign(black_box(&claims)).unwrap())
        });
        c.bench_function(&format!("verify {alg}"), |b| {
            let options = VerifyOptions::default().with_leeway(60);
            b.iter(|| set.verify_at::<Value>(black_box(&token), 1_900_000_000, &options).unwrap())
        });
    }
}

fn aes(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(2);
    let ring = AesKeyRing::new(
        [AesKeyState::Active, AesKeyState::DecryptOnly, AesKeyState::DecryptOnly].map(|state| {
            RingKey {
                key: AesKey::generate(&mut rng),
                state,
                created_at: 0,
                activated_at: None,
                deactivated_at: None,
                retired_at: None,
            }
        }),
    )
    .unwrap();
    let plaintext = vec![0x42u8; 256];
    let ct = ring.encrypt(&mut rng, &plaintext, b"user-123").unwrap();
    c.bench_function("encrypt 256 B", |b| {
        b.iter(|| ring.encrypt(&mut rng, black_box(&plaintext), b"user-123").unwrap())
    });
    c.bench_function("decrypt 256 B", |b| {
        b.iter(|| ring.decrypt(black_box(&ct), b"user-123").unwrap())
    });
}

criterion_group!(benches, jwt, aes);
criterion_main!(benches);
