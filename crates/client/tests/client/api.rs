//! Secrets, folders and projects operations; v3 fallback; approvals; import merge order.

use ikit_client::{
    ApiVersion as ClientApi, ClientError, FolderQuery, GetOptions, ImportOrder, NewSecret, Scope,
    SecretRef, SecretType, SecretUpdate,
};
use ikit_emulator::ApiVersion;

use crate::support::{DB_VALUE, Harness, PROJECT, ua};

#[tokio::test]
async fn lists_with_imports_expansion_and_merge_order() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    let folder = client.fetch_folder(&FolderQuery::new(PROJECT, "dev", "/app")).await.unwrap();
    let reference = folder.secrets.iter().find(|s| s.key == "REF").unwrap();
    assert_eq!(reference.value.expose(), format!("x-{DB_VALUE}"), "server-side expansion");
    assert_eq!(folder.imports.len(), 2);
    assert_eq!(folder.imports[0].folder_id, None, "an import without folderId decodes");
    // CLI order: the later import (/shared2) wins.
    let common = |order| folder.find("COMMON", order).unwrap().value.expose().to_owned();
    assert_eq!(common(ImportOrder::LaterWins), "from-shared2");
    assert_eq!(common(ImportOrder::EarlierWins), "from-shared");
    let via_get =
        client.get(&SecretRef::parse(PROJECT, "dev", "/app/COMMON").unwrap()).await.unwrap();
    assert_eq!(via_get.0.value.expose(), "from-shared2");

    let unexpanded = client
        .fetch_folder(
            &FolderQuery::new(PROJECT, "dev", "/app")
                .expand_references(false)
                .include_imports(false),
        )
        .await
        .unwrap();
    assert!(unexpanded.imports.is_empty());
    assert_eq!(
        unexpanded.secrets.iter().find(|s| s.key == "REF").unwrap().value.expose(),
        "x-${DB_URL}"
    );
    let recursive =
        client.fetch_folder(&FolderQuery::new(PROJECT, "dev", "/").recursive(true)).await.unwrap();
    let mut paths: Vec<&str> = recursive.secrets.iter().map(|s| s.path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths, ["/app", "/shared", "/shared2"]);
}

async fn crud_round_trip(version: ApiVersion) -> Harness {
    let h = Harness::start(version).await;
    let client = h.client(ua());
    let scope = Scope::new(PROJECT, "dev", "/app");
    let created =
        client.create_secret(&scope, &NewSecret::new("NEW_KEY", "  v1\n\n")).await.unwrap();
    assert_eq!(created.value.expose(), "v1\n", "the server trims, keeping one newline");
    let dup = client.create_secret(&scope, &NewSecret::new("NEW_KEY", "x")).await.unwrap_err();
    assert!(matches!(dup, ClientError::InvalidInput { .. }), "{dup:?}");
    let updated =
        client.update_secret(&scope, &SecretUpdate::value("NEW_KEY", "v2")).await.unwrap();
    assert_eq!((updated.value.expose(), updated.version), ("v2", 2));
    let old = client
        .get_secret(&scope, "NEW_KEY", &GetOptions { version: Some(1), ..GetOptions::default() })
        .await
        .unwrap();
    assert_eq!(old.value.expose(), "v1\n");
    client.update_secret(&scope, &SecretUpdate::rename("NEW_KEY", "RENAMED")).await.unwrap();
    let gone = client.get_secret(&scope, "NEW_KEY", &GetOptions::default()).await.unwrap_err();
    assert!(matches!(gone, ClientError::NotFound { .. }), "{gone:?}");
    client.delete_secret(&scope, "RENAMED", SecretType::Shared).await.unwrap();
    let again = client.delete_secret(&scope, "RENAMED", SecretType::Shared).await.unwrap_err();
    assert!(matches!(again, ClientError::NotFound { .. }), "{again:?}");

    let batch = client
        .batch_create(&scope, &[NewSecret::new("B1", "1"), NewSecret::new("B2", "2")])
        .await
        .unwrap();
    assert_eq!(batch.len(), 2);
    let upserted = client
        .batch_upsert(&scope, &[NewSecret::new("B1", "1b"), NewSecret::new("B3", "3")])
        .await
        .unwrap();
    assert_eq!(upserted.len(), 2);
    let folder = client.fetch_folder(&FolderQuery::new(PROJECT, "dev", "/app")).await.unwrap();
    let value =
        |k: &str| folder.secrets.iter().find(|s| s.key == k).map(|s| s.value.expose().to_owned());
    assert_eq!((value("B1").as_deref(), value("B3").as_deref()), (Some("1b"), Some("3")));
    let deleted =
        client.batch_delete(&scope, &["B1".into(), "B2".into(), "B3".into()]).await.unwrap();
    assert_eq!(deleted.len(), 3);
    h
}

#[tokio::test]
async fn crud_and_batches_on_a_2026_server_use_v4() {
    let h = crud_round_trip(ApiVersion::V2026).await;
    assert!(h.count("POST", "/api/v4/secrets/batch") == 1);
    assert_eq!(h.count("POST", "/api/v3/secrets/batch/raw"), 0);
}

#[tokio::test]
async fn a_2024_server_switches_the_client_to_v3_once() {
    let h = crud_round_trip(ApiVersion::V2024).await;
    // The first call discovered the missing route; every later call went straight to v3.
    let v4_calls: u64 = [
        ("POST", "/api/v4/secrets/NEW_KEY"),
        ("GET", "/api/v4/secrets"),
        ("PATCH", "/api/v4/secrets/NEW_KEY"),
        ("POST", "/api/v4/secrets/batch"),
    ]
    .iter()
    .map(|(m, r)| h.count(m, r))
    .sum();
    assert_eq!(v4_calls, 1);
    assert_eq!(h.count("POST", "/api/v3/secrets/raw/NEW_KEY"), 2);
    assert_eq!(h.count("POST", "/api/v3/secrets/batch/raw"), 1);
    let client = h.client(ua());
    assert_eq!(client.api_version(), ClientApi::V4);
    client.fetch_folder(&FolderQuery::new(PROJECT, "dev", "/app")).await.unwrap();
    assert_eq!(client.api_version(), ClientApi::V3);
    client.fetch_folder(&FolderQuery::new(PROJECT, "dev", "/app")).await.unwrap();
    assert_eq!(h.count("GET", "/api/v4/secrets"), 1, "the new client probed v4 once");
}

#[tokio::test]
async fn writes_under_an_approval_policy_are_pending() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    let scope = Scope::new(PROJECT, "prod", "/locked");
    let created = client.create_secret(&scope, &NewSecret::new("NEW", "v")).await.unwrap_err();
    assert!(
        matches!(created, ClientError::PendingApproval { approval_id: Some(_) }),
        "{created:?}"
    );
    let updated = client.update_secret(&scope, &SecretUpdate::value("K", "v2")).await.unwrap_err();
    assert!(matches!(updated, ClientError::PendingApproval { .. }), "{updated:?}");
    let batch = client.batch_delete(&scope, &["K".into()]).await.unwrap_err();
    assert!(matches!(batch, ClientError::PendingApproval { .. }), "{batch:?}");
    // Nothing was written.
    let folder = client.fetch_folder(&FolderQuery::new(PROJECT, "prod", "/locked")).await.unwrap();
    let keys: Vec<(&str, &str)> =
        folder.secrets.iter().map(|s| (s.key.as_str(), s.value.expose())).collect();
    assert_eq!(keys, [("K", "v")]);
}

#[tokio::test]
async fn folders_and_projects() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    let created = client.create_folder(PROJECT, "dev", "/app", "nested").await.unwrap();
    assert_eq!(created.name, "nested");
    let folders = client.list_folders(PROJECT, "dev", "/app", false).await.unwrap();
    assert_eq!(folders.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(), ["nested"]);
    client.delete_folder(PROJECT, "dev", "/app", "nested").await.unwrap();
    assert!(client.list_folders(PROJECT, "dev", "/app", false).await.unwrap().is_empty());
    let projects = client.list_projects().await.unwrap();
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0].id, PROJECT);
    let mut envs: Vec<&str> = projects[0].environments.iter().map(|e| e.slug.as_str()).collect();
    envs.sort_unstable();
    assert_eq!(envs, ["dev", "prod"]);
}

#[tokio::test]
async fn typed_errors_for_missing_and_forbidden_things() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    let missing =
        client.get(&SecretRef::parse(PROJECT, "dev", "/app/NOPE").unwrap()).await.unwrap_err();
    assert!(matches!(missing, ClientError::NotFound { .. }), "{missing:?}");
    let by_name = client
        .get_secret(&Scope::new(PROJECT, "dev", "/app"), "NOPE", &GetOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(by_name, ClientError::NotFound { .. }), "{by_name:?}");
    let other_project = client
        .fetch_folder(&FolderQuery::new("11111111-2222-4333-8444-555555555555", "dev", "/"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            other_project,
            ClientError::PermissionDenied { .. } | ClientError::NotFound { .. }
        ),
        "{other_project:?}"
    );
    let bad_key = client
        .create_secret(&Scope::new(PROJECT, "dev", "/app"), &NewSecret::new("a:b", "v"))
        .await
        .unwrap_err();
    assert!(
        matches!(bad_key, ClientError::InvalidInput { .. } | ClientError::NotFound { .. }),
        "{bad_key:?}"
    );
}

#[tokio::test]
async fn keys_with_spaces_dots_and_unicode_are_path_encoded() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    let scope = Scope::new(PROJECT, "dev", "/app");
    for key in ["WITH SPACE", "dotted.key-1", "naïve?&#"] {
        client.create_secret(&scope, &NewSecret::new(key, "v")).await.unwrap();
        let got = client.get_secret(&scope, key, &GetOptions::default()).await.unwrap();
        assert_eq!(got.key, key);
        client.delete_secret(&scope, key, SecretType::Shared).await.unwrap();
    }
}

#[tokio::test]
async fn folder_listings_revalidate_with_etags() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    let query = FolderQuery::new(PROJECT, "dev", "/app");
    let ikit_client::FolderFetch::Modified { folder, etag: Some(etag) } =
        client.fetch_folder_if_changed(&query, None).await.unwrap()
    else {
        panic!("the first fetch returns a listing with an etag");
    };
    assert!(!folder.secrets.is_empty());
    let again = client.fetch_folder_if_changed(&query, Some(&etag)).await.unwrap();
    assert!(matches!(again, ikit_client::FolderFetch::NotModified), "{again:?}");
    client
        .update_secret(
            &Scope::new(PROJECT, "dev", "/app"),
            &SecretUpdate::value("DB_URL", "changed"),
        )
        .await
        .unwrap();
    match client.fetch_folder_if_changed(&query, Some(&etag)).await.unwrap() {
        ikit_client::FolderFetch::Modified { folder, etag: Some(new) } => {
            assert_ne!(new, etag);
            let db = folder.secrets.iter().find(|s| s.key == "DB_URL").unwrap();
            assert_eq!(db.value.expose(), "changed");
        }
        other => panic!("{other:?}"),
    }
}
