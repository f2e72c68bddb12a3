//! Secrets, folders and projects operations; v3 fallback; approvals; import merge order.

use ikit_client::{
    ApiVersion as ClientApi, BatchLimits, ClientError, FolderQuery, GetOptions, ImportOrder,
    NewSecret, Scope, SecretRef, SecretType, SecretUpdate,
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

#[tokio::test]
async fn login_returns_the_access_token_and_its_expiry() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    let login = client.login().await.unwrap();
    assert_eq!(login.expires_at, Some(h.now() + std::time::Duration::from_secs(600)));
    assert_eq!(login.renewable_until, Some(h.now() + std::time::Duration::from_secs(3600)));
    // The token works on its own, as `ikit login --plain` output would be used.
    let plain = h.client(ikit_client::AuthMethod::token(login.access_token.expose()));
    let secret = SecretRef::parse(PROJECT, "dev", "/app/DB_URL").unwrap();
    assert_eq!(plain.get_value(&secret).await.unwrap().expose(), DB_VALUE);
    // And the client that logged in uses it instead of logging in again.
    client.get_value(&secret).await.unwrap();
    assert_eq!(h.emulator.login_requests("universal-auth").len(), 1);
}

#[tokio::test]
async fn any_refusal_of_a_login_is_an_auth_error_carrying_the_servers_message() {
    let h = Harness::start(ApiVersion::V2024).await;
    let client = h.client(ikit_client::AuthMethod::universal("no-such-client-id", "x"));
    let err = client.ensure_token().await.unwrap_err();
    assert!(
        matches!(err, ClientError::Auth { ref message }
            if message.contains("No identity with specified client ID was found")),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_empty_listing_of_an_unknown_environment_says_it_may_not_exist() {
    let h = Harness::start(ApiVersion::V2024).await;
    let client = h.client(ua());
    let err =
        client.get(&SecretRef::parse(PROJECT, "staging", "/DB_URL").unwrap()).await.unwrap_err();
    assert!(
        matches!(err, ClientError::NotFound { ref message, .. }
            if message.contains("environment \"staging\" may not exist")),
        "{err:?}"
    );
    // The cache fills whole listings and says the same.
    let minute = std::time::Duration::from_secs(60);
    let cached = ikit_client::CachedClient::builder()
        .client(h.client(ua()))
        .ttl(minute)
        .max_stale(minute)
        .build()
        .unwrap();
    let err =
        cached.get(&SecretRef::parse(PROJECT, "staging", "/DB_URL").unwrap()).await.unwrap_err();
    assert!(
        matches!(err, ClientError::NotFound { ref message, .. }
            if message.contains("environment \"staging\" may not exist")),
        "{err:?}"
    );
    // A key missing from a folder that has secrets is just missing.
    let err =
        client.get(&SecretRef::parse(PROJECT, "dev", "/app/NOPE").unwrap()).await.unwrap_err();
    assert!(
        matches!(err, ClientError::NotFound { ref message, .. }
            if message.contains("NOPE not found in dev:/app") && !message.contains("environment")),
        "{err:?}"
    );
    assert_eq!((err.secret(), err.folder()), (Some("NOPE"), Some("/app")), "structured context");
    let missing = client
        .get_secret(&Scope::new(PROJECT, "dev", "/app"), "GONE", &GetOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(missing, ClientError::NotFound { secret: Some(ref k), folder: Some(ref f), .. }
            if k == "GONE" && f == "/app"),
        "{missing:?}"
    );
}

#[tokio::test]
async fn an_uncached_get_reads_one_key_by_name_and_imports_through_the_listing() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    let (own, _) =
        client.get(&SecretRef::parse(PROJECT, "dev", "/app/DB_URL").unwrap()).await.unwrap();
    assert_eq!(own.value.expose(), DB_VALUE);
    assert_eq!(h.count("GET", "/api/v4/secrets/DB_URL"), 1);
    assert_eq!(h.count("GET", "/api/v4/secrets"), 0, "no folder listing for a key of its own");
    // An imported key resolves by the client's import order, as the cache resolves it.
    let (imported, _) =
        client.get(&SecretRef::parse(PROJECT, "dev", "/app/COMMON").unwrap()).await.unwrap();
    assert_eq!(imported.value.expose(), "from-shared2");
    assert_eq!(h.count("GET", "/api/v4/secrets"), 1);
}

#[tokio::test]
async fn a_remembered_api_generation_skips_the_v4_probe() {
    let h = Harness::start(ApiVersion::V2024).await;
    let cold = h.client(ua());
    cold.fetch_folder(&FolderQuery::new(PROJECT, "dev", "/app")).await.unwrap();
    assert_eq!(cold.api_version(), ClientApi::V3);
    assert_eq!(h.count("GET", "/api/v4/secrets"), 1, "a cold client probes once");
    let warm =
        ikit_client::Client::new(h.config(ua()).with_api_version(cold.api_version())).unwrap();
    warm.fetch_folder(&FolderQuery::new(PROJECT, "dev", "/app")).await.unwrap();
    assert_eq!(h.count("GET", "/api/v4/secrets"), 1, "the warm client never asked v4");
    assert_eq!(h.count("GET", "/api/v3/secrets/raw"), 2);
}

#[tokio::test]
async fn a_conditional_update_refuses_when_the_version_moved() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    let scope = Scope::new(PROJECT, "dev", "/app");
    let read = client.get_secret(&scope, "DB_URL", &GetOptions::default()).await.unwrap();
    // Someone else writes in between.
    client.update_secret(&scope, &SecretUpdate::value("DB_URL", "theirs")).await.unwrap();
    let err = client
        .update_secret_if_version(&scope, &SecretUpdate::value("DB_URL", "mine"), read.version)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::VersionConflict { ref key, expected, found, .. }
            if key == "DB_URL" && expected == read.version && found == read.version + 1),
        "{err:?}"
    );
    let now = client.get_secret(&scope, "DB_URL", &GetOptions::default()).await.unwrap();
    assert_eq!(now.value.expose(), "theirs", "the refused update wrote nothing");
    let written = client
        .update_secret_if_version(&scope, &SecretUpdate::value("DB_URL", "mine"), now.version)
        .await
        .unwrap();
    assert_eq!(written.value.expose(), "mine");
}

#[tokio::test]
async fn secrets_carry_and_write_every_field_a_backup_needs() {
    for version in [ApiVersion::V2026, ApiVersion::V2024] {
        let h = Harness::start(version).await;
        let client = h.client(ua());
        let scope = Scope::new(PROJECT, "dev", "/app");
        let mut new = NewSecret::new("BACKED_UP", "line1\nline2");
        new.comment = "kept in the backup".into();
        new.skip_multiline_encoding = true;
        new.metadata = vec![ikit_client::SecretMetadata::new("owner", "team-a")];
        new.reminder_note = Some("rotate me".into());
        new.reminder_repeat_days = Some(30);
        client.create_secret(&scope, &new).await.unwrap();
        let folder = client.fetch_folder(&FolderQuery::new(PROJECT, "dev", "/app")).await.unwrap();
        let listed = folder.secrets.iter().find(|s| s.key == "BACKED_UP").unwrap().clone();
        let got = client.get_secret(&scope, "BACKED_UP", &GetOptions::default()).await.unwrap();
        for s in [&listed, &got] {
            assert_eq!(s.comment, "kept in the backup", "{version:?}");
            assert!(s.skip_multiline_encoding);
            assert_eq!(s.metadata, vec![ikit_client::SecretMetadata::new("owner", "team-a")]);
            assert_eq!(s.reminder_note.as_deref(), Some("rotate me"));
            assert_eq!(s.reminder_repeat_days, Some(30));
            assert_eq!(s.version, 1);
        }
        assert!(got.created_at.is_some() && got.updated_at.is_some(), "{version:?}");
        // A restore from what was read writes the same fields back.
        let restored = Scope::new(PROJECT, "dev", "/shared");
        client.create_secret(&restored, &NewSecret::from_secret(&got)).await.unwrap();
        let copy = client.get_secret(&restored, "BACKED_UP", &GetOptions::default()).await.unwrap();
        assert_eq!(
            (copy.value.expose(), copy.comment.as_str(), copy.metadata.clone()),
            (got.value.expose(), got.comment.as_str(), got.metadata.clone())
        );
        assert_eq!(
            (copy.reminder_note, copy.reminder_repeat_days),
            (got.reminder_note, got.reminder_repeat_days)
        );
        // An update sets them too.
        let mut update = SecretUpdate::value("BACKED_UP", "v2");
        update.metadata = Some(vec![]);
        update.reminder_repeat_days = Some(7);
        let updated = client.update_secret(&scope, &update).await.unwrap();
        assert!(updated.metadata.is_empty());
        assert_eq!(updated.reminder_repeat_days, Some(7));
    }
}

#[tokio::test]
async fn a_10000_secret_batch_is_written_in_chunks_within_the_limits_with_progress() {
    let h = Harness::start(ApiVersion::V2026).await;
    let client = h.client(ua());
    let scope = Scope::new(PROJECT, "dev", "/shared");
    let items: Vec<NewSecret> = (0..10_000)
        .map(|n| NewSecret::new(format!("BULK_{n:05}"), format!("value-{n}-{}", "x".repeat(100))))
        .collect();
    let mut seen = Vec::new();
    let written = client.batch_create_with(&scope, &items, &mut |p| seen.push(p)).await.unwrap();
    assert_eq!(written.len(), 10_000);
    // Small items: split by count, every chunk full but the last.
    let per_chunk = BatchLimits::default().max_items;
    let chunks = 10_000usize.div_ceil(per_chunk);
    assert!(chunks > 1 && chunks <= 50, "a 10,000-key migration fits 60 requests a minute");
    assert_eq!(h.count("POST", "/api/v4/secrets/batch"), chunks as u64, "{per_chunk} a chunk");
    assert_eq!(seen.len(), chunks);
    assert_eq!(
        (seen[0].done, seen[0].chunk, seen[0].chunks, seen[0].total),
        (per_chunk, 1, chunks, 10_000)
    );
    assert!(seen.windows(2).all(|w| w[1].done - w[0].done <= per_chunk), "within the item limit");
    assert_eq!(seen[chunks - 1].done, 10_000);
    let listed = client.fetch_folder(&FolderQuery::new(PROJECT, "dev", "/shared")).await.unwrap();
    assert_eq!(listed.secrets.iter().filter(|s| s.key.starts_with("BULK_")).count(), 10_000);

    // Large values are split by body size under the server's 1 MiB limit, not by count.
    let big: Vec<NewSecret> =
        (0..40).map(|n| NewSecret::new(format!("BIG_{n}"), "v".repeat(100_000))).collect();
    client.batch_upsert(&scope, &big).await.unwrap();
    assert_eq!(h.count("PATCH", "/api/v4/secrets/batch"), 6, "7 items of 100 kB per 768 KiB");
    // One item over the limit alone is refused by key before anything is sent.
    let huge = [NewSecret::new("HUGE", "v".repeat(2 << 20))];
    let err = client.batch_upsert(&scope, &huge).await.unwrap_err();
    assert!(
        matches!(err, ClientError::InvalidInput { ref message } if message.contains("HUGE")),
        "{err:?}"
    );
    assert_eq!(h.count("PATCH", "/api/v4/secrets/batch"), 6);
}
