//! The hash chain, with no IO: canonical row content, row hashes and the verifier that walks
//! rows in `seq` order and names the first one that does not fit.
//!
//! `hash = SHA-256(prev_hash || content)`, hex-encoded, where `prev_hash` is the previous row's
//! hex hash (64 zeros before the first row) and `content` is a length-prefixed encoding of every
//! stored column of the row, `seq` included, so moving, editing or deleting a row breaks the chain.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first row.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const DOMAIN: &[u8] = b"ikit-audit-v1";

/// One row as stored: the columns that the hash covers, plus the stored links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRow {
    pub seq: i64,
    pub time_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub request_id: Option<String>,
    /// Canonical JSON text (see [`canonical_json`]).
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

impl ChainRow {
    /// The hash this row should carry, given its own `prev_hash`.
    pub fn expected_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(DOMAIN);
        field(&mut h, self.seq.to_string().as_bytes());
        field(&mut h, self.time_ms.to_string().as_bytes());
        field(&mut h, self.actor.as_bytes());
        field(&mut h, self.action.as_bytes());
        field(&mut h, self.target.as_bytes());
        field(&mut h, self.outcome.as_bytes());
        match &self.request_id {
            None => h.update([0u8]),
            Some(id) => {
                h.update([1u8]);
                field(&mut h, id.as_bytes());
            }
        }
        field(&mut h, self.details.as_bytes());
        hex::encode(h.finalize())
    }
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// JSON text with object keys sorted at every level, so equal values always hash the same.
pub fn canonical_json(value: &Value) -> String {
    fn sort(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sort(&map[k]))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(value).to_string()
}

/// What `verify_chain` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainStatus {
    /// Every row links to the one before it and the head matches the last row.
    Intact { rows: u64 },
    /// `seq` is the first row that is missing, edited or out of place.
    Broken { seq: i64, reason: BreakReason },
}

/// Why the chain broke at a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakReason {
    /// The row's content no longer matches its hash: it was edited.
    ContentChanged,
    /// The row's `prev_hash` is not the previous row's hash.
    LinkBroken,
    /// No row carries this `seq`: it was deleted.
    Missing,
    /// The head record (last `seq` and hash) disagrees with the rows.
    HeadMismatch,
}

/// Walks rows in `seq` order.
#[derive(Debug)]
pub struct Verifier {
    expected_seq: i64,
    prev_hash: String,
    rows: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Self { expected_seq: 1, prev_hash: GENESIS_HASH.to_owned(), rows: 0 }
    }
}

impl Verifier {
    /// Checks the next row; `Some` names the first break.
    pub fn check(&mut self, row: &ChainRow) -> Option<ChainStatus> {
        let broken = |seq, reason| Some(ChainStatus::Broken { seq, reason });
        if row.seq != self.expected_seq {
            return broken(self.expected_seq, BreakReason::Missing);
        }
        if row.prev_hash != self.prev_hash {
            return broken(row.seq, BreakReason::LinkBroken);
        }
        if row.expected_hash() != row.hash {
            return broken(row.seq, BreakReason::ContentChanged);
        }
        self.prev_hash.clone_from(&row.hash);
        self.expected_seq += 1;
        self.rows += 1;
        None
    }

    /// Compares the end of the walk with the stored head (last `seq` and hash).
    pub fn finish(self, head_seq: i64, head_hash: &str) -> ChainStatus {
        let last = self.expected_seq - 1;
        if head_seq > last {
            // Rows at the tail were deleted.
            return ChainStatus::Broken { seq: last + 1, reason: BreakReason::Missing };
        }
        if head_seq < last || head_hash != self.prev_hash {
            return ChainStatus::Broken { seq: head_seq.max(1), reason: BreakReason::HeadMismatch };
        }
        ChainStatus::Intact { rows: self.rows }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: i64) -> Vec<ChainRow> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let mut row = ChainRow {
                    seq,
                    time_ms: 1_000 + seq,
                    actor: "svc".into(),
                    action: "secret.read".into(),
                    target: format!("/auth/k{seq}"),
                    outcome: "success".into(),
                    request_id: (seq % 2 == 0).then(|| format!("req-{seq}")),
                    details: canonical_json(&json!({"n": seq})),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                row.hash = row.expected_hash();
                prev.clone_from(&row.hash);
                row
            })
            .collect()
    }

    fn verify(rows: &[ChainRow], head: (i64, &str)) -> ChainStatus {
        let mut v = Verifier::default();
        for row in rows {
            if let Some(b) = v.check(row) {
                return b;
            }
        }
        v.finish(head.0, head.1)
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"z": [ {"y": 1, "x": 2} ], "c": null}});
        assert_eq!(canonical_json(&a), r#"{"a":{"c":null,"z":[{"x":2,"y":1}]},"b":1}"#);
    }

    #[test]
    fn hash_covers_every_column() {
        let row = chain(1).remove(0);
        let base = row.expected_hash();
        let edits: [fn(&mut ChainRow); 8] = [
            |r| r.seq += 1,
            |r| r.time_ms += 1,
            |r| r.actor.push('x'),
            |r| r.action.push('x'),
            |r| r.target.push('x'),
            |r| r.outcome = "failure".into(),
            |r| r.request_id = Some(String::new()),
            |r| r.details = "{}".into(),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut r = row.clone();
            edit(&mut r);
            assert_ne!(r.expected_hash(), base, "edit {i} not covered");
        }
        // Length prefixes keep field boundaries: moving a character across fields changes the hash.
        let mut shifted = row.clone();
        shifted.actor = "sv".into();
        shifted.action = "csecret.read".into();
        assert_ne!(shifted.expected_hash(), base);
    }

    #[test]
    fn intact_chain_verifies() {
        let rows = chain(5);
        let head = rows.last().unwrap().hash.clone();
        assert_eq!(verify(&rows, (5, &head)), ChainStatus::Intact { rows: 5 });
        assert_eq!(verify(&[], (0, GENESIS_HASH)), ChainStatus::Intact { rows: 0 });
    }

    #[test]
    fn finds_the_first_broken_row() {
        let rows = chain(5);
        let head = rows.last().unwrap().hash.clone();
        let head = (5, head.as_str());

        let mut edited = rows.clone();
        edited[2].target = "/other".into();
        assert_eq!(
            verify(&edited, head),
            ChainStatus::Broken { seq: 3, reason: BreakReason::ContentChanged }
        );

        // Edited and re-hashed: the next row's link exposes it.
        let mut rehashed = rows.clone();
        rehashed[1].actor = "mallory".into();
        rehashed[1].hash = rehashed[1].expected_hash();
        assert_eq!(
            verify(&rehashed, head),
            ChainStatus::Broken { seq: 3, reason: BreakReason::LinkBroken }
        );

        let mut deleted = rows.clone();
        deleted.remove(1);
        assert_eq!(
            verify(&deleted, head),
            ChainStatus::Broken { seq: 2, reason: BreakReason::Missing }
        );

        let mut tail_deleted = rows.clone();
        tail_deleted.pop();
        assert_eq!(
            verify(&tail_deleted, head),
            ChainStatus::Broken { seq: 5, reason: BreakReason::Missing }
        );

        assert_eq!(
            verify(&rows, (5, GENESIS_HASH)),
            ChainStatus::Broken { seq: 5, reason: BreakReason::HeadMismatch }
        );
    }
}
