//! Decoding a 1,000-secret folder listing (the hot path of every uncached read).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn listing(n: usize) -> String {
    let secrets: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r##"{{"id":"0b9c{i:08}-0000-4000-8000-000000000000","_id":"0b9c{i:08}-0000-4000-8000-000000000000","workspace":"5f1c2a9e-1111-4222-8333-944455556666","environment":"prod","version":{v},"type":"shared","secretKey":"SERVICE_{i}_DATABASE_URL","secretValue":"postgres://user_{i}:p4ssw0rd-{i}-x9@db-{i}.internal:5432/app?sslmode=require","secretComment":"owned by team {t}","secretReminderNote":null,"secretReminderRepeatDays":null,"skipMultilineEncoding":false,"createdAt":"2025-11-02T10:00:00.000Z","updatedAt":"2026-01-15T08:30:00.000Z","actor":{{"actorId":"a1","actorType":"identity","name":"ci"}},"isRotatedSecret":false,"rotationId":null,"secretPath":"/services/api","secretValueHidden":false,"tags":[{{"id":"t-{t}","slug":"team-{t}","color":"#aabbcc","name":"team {t}"}}],"secretMetadata":[]}}"##,
                v = i % 7 + 1,
                t = i % 5
            )
        })
        .collect();
    format!(r#"{{"secrets":[{}],"imports":[]}}"#, secrets.join(","))
}

fn decode(c: &mut Criterion) {
    let body = listing(1000);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("list_1000_secrets", |b| {
        b.iter(|| {
            let folder =
                ikit_client::internals::decode_list(black_box(body.as_bytes())).expect("decodes");
            assert_eq!(folder.secrets.len(), 1000);
            folder
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
