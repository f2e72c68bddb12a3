//! The pure folder diff behind per-key change events: a folder's previous, value-free state and a
//! fresh listing in, the new state and one change per (key, secret type) that differs out.
//!
//! The state never holds a value, nor a plain hash of one (a low-entropy secret would not survive
//! a dictionary attack on a stored SHA-256): per entry it keeps the version and a keyed
//! HMAC-SHA256 of (key, type, value) under a service key, so equal values under different keys
//! do not look equal either. A change is `Created` (new entry), `Deleted` (gone) or `Updated`
//! (version or value MAC differs). Listings are diffed on the folder's own secrets, unexpanded:
//! an entry's value is what was written to it.
//!
//! **Imports.** Infisical reports only the folder where a secret changed, never the folders that
//! import it. The state records each folder's imports, so the service knows, from its own states,
//! which folders import a changed one. [`importer_changes`] maps the changes of an imported folder
//! onto an importing folder: every changed key the importer does not shadow with its own secret
//! becomes an `Updated` change of the importer (its resolved value may have changed: another
//! import, or the import order, can still supply the key, so a precise created or deleted is not
//! knowable without a merged re-read, and `updated` tells a subscriber to read again). A key the
//! importer defines itself is left out: the importer's own secret wins over every import.

use std::collections::{BTreeMap, BTreeSet};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::events::ChangeKind;

/// One secret of a fresh listing. Borrowed: the value is only read to compute its MAC.
pub struct ListingEntry<'a> {
    pub key: &'a str,
    /// `shared` or `personal`.
    pub secret_type: &'a str,
    pub version: u64,
    pub value: &'a [u8],
}

/// What is remembered of one entry: its version and the keyed MAC of its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryState {
    pub key: String,
    pub secret_type: String,
    pub version: u64,
    /// Hex HMAC-SHA256 of (key, type, value) under the service key.
    pub value_mac: String,
}

/// An import of a folder: the folder it imports from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ImportRef {
    pub environment: String,
    pub path: String,
}

/// The value-free state of one folder. `Serialize`s to a stable JSON for storage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderState {
    /// Sorted by (key, type).
    pub entries: Vec<EntryState>,
    /// The folders this one imports, sorted.
    #[serde(default)]
    pub imports: Vec<ImportRef>,
}

impl FolderState {
    /// True when the entry (key, type) exists.
    pub fn has(&self, key: &str, secret_type: &str) -> bool {
        self.entries.iter().any(|e| e.key == key && e.secret_type == secret_type)
    }
}

/// One per-key change of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    pub key: String,
    pub secret_type: String,
    pub kind: ChangeKind,
    /// The version after the change (none for deletions).
    pub version: Option<u64>,
}

/// The keyed MAC of one entry's value. `mac_key` is the service's state key.
pub fn value_mac(mac_key: &[u8], key: &str, secret_type: &str, value: &[u8]) -> String {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(mac_key).unwrap_or_else(|_| unreachable!());
    // Length-prefixed fields, so ("ab","c") and ("a","bc") never collide.
    for field in [key.as_bytes(), secret_type.as_bytes(), value] {
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// Diffs a fresh listing against the previous state. Duplicate (key, type) entries in the
/// listing keep the last one. Changes come sorted by (key, type); the same inputs always give
/// the same output.
pub fn diff(
    previous: &FolderState,
    listing: &[ListingEntry<'_>],
    imports: Vec<ImportRef>,
    mac_key: &[u8],
) -> (FolderState, Vec<KeyChange>) {
    let mut fresh: BTreeMap<(&str, &str), EntryState> = BTreeMap::new();
    for entry in listing {
        fresh.insert(
            (entry.key, entry.secret_type),
            EntryState {
                key: entry.key.to_owned(),
                secret_type: entry.secret_type.to_owned(),
                version: entry.version,
                value_mac: value_mac(mac_key, entry.key, entry.secret_type, entry.value),
            },
        );
    }
    let old: BTreeMap<(&str, &str), &EntryState> =
        previous.entries.iter().map(|e| ((e.key.as_str(), e.secret_type.as_str()), e)).collect();

    let mut changes = Vec::new();
    let ids: BTreeSet<(&str, &str)> = fresh.keys().chain(old.keys()).copied().collect();
    for id in ids {
        let change = match (old.get(&id), fresh.get(&id)) {
            (None, Some(new)) => Some((ChangeKind::Created, Some(new.version))),
            (Some(_), None) => Some((ChangeKind::Deleted, None)),
            (Some(was), Some(new)) => {
                let same_value: bool =
                    was.value_mac.as_bytes().ct_eq(new.value_mac.as_bytes()).into();
                (was.version != new.version || !same_value)
                    .then_some((ChangeKind::Updated, Some(new.version)))
            }
            (None, None) => None,
        };
        if let Some((kind, version)) = change {
            changes.push(KeyChange {
                key: id.0.to_owned(),
                secret_type: id.1.to_owned(),
                kind,
                version,
            });
        }
    }
    let mut imports = imports;
    imports.sort();
    imports.dedup();
    (FolderState { entries: fresh.into_values().collect(), imports }, changes)
}

/// The changes an importing folder sees when a folder it imports changed (see the module
/// documentation): each changed key it does not define itself, as `Updated`, without a version
/// (the version is the imported secret's, not the importer's).
pub fn importer_changes(importer: &FolderState, source_changes: &[KeyChange]) -> Vec<KeyChange> {
    let mut seen = BTreeSet::new();
    source_changes
        .iter()
        .filter(|c| !importer.has(&c.key, &c.secret_type))
        .filter(|c| seen.insert((c.key.clone(), c.secret_type.clone())))
        .map(|c| KeyChange {
            key: c.key.clone(),
            secret_type: c.secret_type.clone(),
            kind: ChangeKind::Updated,
            version: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &[u8] = b"service-state-key";

    fn entry<'a>(key: &'a str, version: u64, value: &'a str) -> ListingEntry<'a> {
        ListingEntry { key, secret_type: "shared", version, value: value.as_bytes() }
    }

    fn kinds(changes: &[KeyChange]) -> Vec<(&str, ChangeKind, Option<u64>)> {
        changes.iter().map(|c| (c.key.as_str(), c.kind, c.version)).collect()
    }

    #[test]
    fn created_updated_deleted_and_unchanged() {
        let (s1, c1) = diff(
            &FolderState::default(),
            &[entry("A", 1, "a"), entry("B", 1, "b"), entry("C", 1, "c")],
            vec![],
            K,
        );
        assert_eq!(
            kinds(&c1),
            [
                ("A", ChangeKind::Created, Some(1)),
                ("B", ChangeKind::Created, Some(1)),
                ("C", ChangeKind::Created, Some(1))
            ]
        );
        let (s2, c2) =
            diff(&s1, &[entry("A", 1, "a"), entry("B", 2, "b2"), entry("D", 1, "d")], vec![], K);
        assert_eq!(
            kinds(&c2),
            [
                ("B", ChangeKind::Updated, Some(2)),
                ("C", ChangeKind::Deleted, None),
                ("D", ChangeKind::Created, Some(1))
            ]
        );
        // The same listing again: nothing changed, the state is a fixed point.
        let (s3, c3) =
            diff(&s2, &[entry("D", 1, "d"), entry("B", 2, "b2"), entry("A", 1, "a")], vec![], K);
        assert!(c3.is_empty(), "{c3:?}");
        assert_eq!(s3, s2);
    }

    #[test]
    fn a_value_change_without_a_version_change_is_an_update() {
        let (s1, _) = diff(&FolderState::default(), &[entry("A", 3, "old")], vec![], K);
        let (_, c) = diff(&s1, &[entry("A", 3, "new")], vec![], K);
        assert_eq!(kinds(&c), [("A", ChangeKind::Updated, Some(3))]);
    }

    #[test]
    fn shared_and_personal_entries_of_one_key_are_distinct() {
        let personal = ListingEntry { key: "A", secret_type: "personal", version: 1, value: b"p" };
        let (s1, c1) = diff(&FolderState::default(), &[entry("A", 1, "s"), personal], vec![], K);
        assert_eq!(c1.len(), 2);
        let (_, c2) = diff(&s1, &[entry("A", 1, "s")], vec![], K);
        assert_eq!(c2.len(), 1);
        assert_eq!((c2[0].secret_type.as_str(), c2[0].kind), ("personal", ChangeKind::Deleted));
    }

    #[test]
    fn the_state_holds_no_value_and_no_plain_hash() {
        let value = "hunter2";
        let (state, _) = diff(&FolderState::default(), &[entry("PW", 1, value)], vec![], K);
        let text = serde_json::to_string(&state).unwrap();
        assert!(!text.contains(value));
        use sha2::Digest;
        let plain = hex::encode(Sha256::digest(value.as_bytes()));
        assert!(!text.contains(&plain));
        // The MAC depends on the service key and on the entry's identity.
        assert_ne!(value_mac(K, "PW", "shared", b"x"), value_mac(b"other", "PW", "shared", b"x"));
        assert_ne!(value_mac(K, "PW", "shared", b"x"), value_mac(K, "PW2", "shared", b"x"));
        assert_ne!(value_mac(K, "ab", "shared", b"c"), value_mac(K, "a", "shared", b"bc"));
        let back: FolderState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn imports_are_recorded_sorted_and_mapped_onto_importers() {
        let imports = vec![
            ImportRef { environment: "prod".into(), path: "/shared".into() },
            ImportRef { environment: "dev".into(), path: "/shared".into() },
            ImportRef { environment: "dev".into(), path: "/shared".into() },
        ];
        let (importer, _) = diff(&FolderState::default(), &[entry("OWN", 1, "x")], imports, K);
        assert_eq!(importer.imports.len(), 2);
        assert_eq!(importer.imports[0].environment, "dev");

        let (src, _) = diff(&FolderState::default(), &[entry("OWN", 1, "a")], vec![], K);
        let (_, source_changes) =
            diff(&src, &[entry("OWN", 2, "b"), entry("NEW", 1, "n")], vec![], K);
        // OWN is shadowed by the importer's own secret; NEW reaches it as an update.
        assert_eq!(
            kinds(&importer_changes(&importer, &source_changes)),
            [("NEW", ChangeKind::Updated, None)]
        );
    }

    #[test]
    fn duplicate_listing_entries_keep_the_last() {
        let (state, changes) =
            diff(&FolderState::default(), &[entry("A", 1, "a"), entry("A", 2, "b")], vec![], K);
        assert_eq!(kinds(&changes), [("A", ChangeKind::Created, Some(2))]);
        assert_eq!(state.entries.len(), 1);
    }
}
