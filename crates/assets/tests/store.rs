//! The `AssetStore` contract, one suite ([`contract`]) run against SQLite (a file database, as
//! `nodetool serve` and `nodetool run` use it, a lazy one, the in-memory one) and against a real
//! PostgreSQL (the testkit's, from Debian's packages; `DATABASE_URL`), plus PostgreSQL's
//! start-up failures.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use nodetool_assets::{PgOptions, PostgresAssetStore, SqliteAssetStore};
use nodetool_core::assets::FOLDER;
use nodetool_core::{AssetQuery, AssetRecord, AssetStore, ErrorKind};
use nodetool_testkit::postgres::PostgresServer;
use serde_json::json;

fn file(user: &str, parent: &str, name: &str, content_type: &str) -> AssetRecord {
    let id = nodetool_core::id::new_id();
    let mut r = AssetRecord::new(id.clone(), user, parent, name, content_type);
    // The contract keeps timestamps to the microsecond (PostgreSQL's precision).
    r.created_at = micros(r.created_at);
    r.updated_at = r.created_at;
    r.storage_key = Some(format!("{user}/{id}.bin"));
    r.size = Some(3);
    r
}

fn micros(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    use chrono::DurationRound;
    t.duration_trunc(chrono::TimeDelta::microseconds(1))
        .unwrap()
}

/// Every MUST of the contract, on one store.
async fn contract(store: &dyn AssetStore) {
    // create + get, all fields round-trip.
    let mut a = file("u1", "u1", "a.png", "image/png");
    a.workflow_id = Some("wf".into());
    a.node_id = Some("n".into());
    a.job_id = Some("j".into());
    a.metadata = Some(json!({"w": 1, "tags": ["x"]}));
    a.duration = Some(1.5);
    store.create(&a).await.unwrap();
    assert_eq!(store.get("u1", &a.id).await.unwrap(), Some(a.clone()));
    // Another user's record is missing, not forbidden.
    assert_eq!(store.get("u2", &a.id).await.unwrap(), None);
    assert_eq!(store.get("u1", "nope").await.unwrap(), None);

    // A duplicate id is AlreadyExists and changes nothing.
    let mut dup = a.clone();
    dup.name = "other".into();
    dup.user_id = "u2".into();
    let err = store.create(&dup).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert_eq!(store.get("u1", &a.id).await.unwrap().unwrap().name, "a.png");

    // list by (user, parent) with a cursor visits every child once, in id order.
    let folder = AssetRecord::new(nodetool_core::id::new_id(), "u1", "u1", "docs", FOLDER);
    store.create(&folder).await.unwrap();
    let mut children = Vec::new();
    for i in 0..5 {
        let ct = if i % 2 == 0 {
            "text/plain"
        } else {
            "image/jpeg"
        };
        let r = file("u1", &folder.id, &format!("c{i}"), ct);
        store.create(&r).await.unwrap();
        children.push(r.id);
    }
    store
        .create(&file("u2", &folder.id, "foreign", "text/plain"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut q = AssetQuery::children("u1", &folder.id, 2);
    let mut pages = 0;
    loop {
        let page = store.list(&q).await.unwrap();
        pages += 1;
        assert!(page.assets.len() <= 2);
        seen.extend(page.assets.iter().map(|r| r.id.clone()));
        match page.next {
            Some(next) => q.cursor = Some(next),
            None => break,
        }
        assert!(pages < 10, "pagination terminates");
    }
    assert_eq!(
        seen, children,
        "every child once, in id order, no other user's"
    );
    assert_eq!(pages, 3);

    // Filters: content-type prefix (LIKE wildcards are literal), workflow.
    let mut q = AssetQuery::children("u1", &folder.id, 100);
    q.content_type = Some("image".into());
    assert_eq!(store.list(&q).await.unwrap().assets.len(), 2);
    q.content_type = Some("%".into());
    assert!(store.list(&q).await.unwrap().assets.is_empty());
    let q = AssetQuery {
        user_id: "u1".into(),
        workflow_id: Some("wf".into()),
        limit: 10,
        ..AssetQuery::default()
    };
    let page = store.list(&q).await.unwrap();
    assert_eq!(page.assets.len(), 1);
    assert_eq!(page.next, None);
    // limit 0 is taken as 1.
    let page = store
        .list(&AssetQuery::children("u1", &folder.id, 0))
        .await
        .unwrap();
    assert_eq!(page.assets.len(), 1);
    assert!(page.next.is_some());

    // update: rename, move, retype; immutable fields stay.
    let mut moved = a.clone();
    moved.name = "renamed.png".into();
    moved.parent_id = folder.id.clone();
    moved.content_type = "image/webp".into();
    moved.metadata = None;
    moved.storage_key = Some("elsewhere".into());
    moved.size = Some(999);
    moved.updated_at = a.updated_at + chrono::Duration::seconds(5);
    store.update(&moved).await.unwrap();
    let got = store.get("u1", &a.id).await.unwrap().unwrap();
    assert_eq!(got.name, "renamed.png");
    assert_eq!(got.parent_id, folder.id);
    assert_eq!(got.content_type, "image/webp");
    assert_eq!(got.metadata, None);
    assert_eq!(got.updated_at, moved.updated_at);
    assert_eq!(got.storage_key, a.storage_key, "storage_key is immutable");
    assert_eq!(got.size, a.size, "size is immutable");
    assert_eq!(got.created_at, a.created_at);
    // Another user's or a missing record: NotFound.
    let mut foreign = moved.clone();
    foreign.user_id = "u2".into();
    assert_eq!(
        store.update(&foreign).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    // delete: idempotent, per user, children untouched.
    assert!(!store.delete("u2", &a.id).await.unwrap());
    assert!(store.delete("u1", &a.id).await.unwrap());
    assert!(!store.delete("u1", &a.id).await.unwrap());
    assert_eq!(store.get("u1", &a.id).await.unwrap(), None);
    assert!(store.delete("u1", &folder.id).await.unwrap());
    let left = store
        .list(&AssetQuery::children("u1", &folder.id, 100))
        .await
        .unwrap();
    assert_eq!(left.assets.len(), 5, "a store does not cascade");
}

#[tokio::test]
async fn file_database_meets_the_contract_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/nodetool.db");
    let store = SqliteAssetStore::open(&path).await.unwrap();
    contract(&store).await;
    let r = file("u9", "u9", "kept", "text/plain");
    store.create(&r).await.unwrap();
    drop(store);
    // A second open (a second process, say) sees the same rows; migrations are idempotent.
    let again = SqliteAssetStore::open(&path).await.unwrap();
    assert_eq!(again.get("u9", &r.id).await.unwrap(), Some(r));
}

#[tokio::test]
async fn in_memory_database_meets_the_contract() {
    contract(&SqliteAssetStore::in_memory().await.unwrap()).await;
}

#[tokio::test]
async fn lazy_store_opens_on_first_use_and_names_a_bad_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lazy.db");
    let store = SqliteAssetStore::lazy(&path);
    assert!(
        !path.exists(),
        "nothing is opened before the first operation"
    );
    contract(&store).await;
    assert!(path.exists());

    // A database path under a regular file cannot be created.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let bad = SqliteAssetStore::lazy(blocker.join("db.sqlite"));
    let err = bad.get("u", "x").await.unwrap_err();
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[tokio::test]
async fn shares_a_database_with_other_crates_migrations() {
    // The job store applies its own migrations to the same file; ours must not mind either
    // order. Simulate a foreign migration applied first.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let pool = nodetool_assets::open_pool(&path).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, \
         execution_time) VALUES (29990101000000, 'someone else', CURRENT_TIMESTAMP, 1, x'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let store = SqliteAssetStore::from_pool(pool).await.unwrap();
    contract(&store).await;
}

async fn postgres(test: &str) -> Option<PostgresServer> {
    let pg = PostgresServer::start().await;
    if pg.is_none() {
        let why = PostgresServer::why_missing().unwrap_or_default();
        nodetool_testkit::skip_or_fail(test, &why);
    }
    pg
}

#[tokio::test]
async fn postgres_meets_the_contract_and_persists() {
    let Some(pg) = postgres("postgres_meets_the_contract_and_persists").await else {
        return;
    };
    let url = pg.create_database("assets");
    let store = PostgresAssetStore::connect(&url, &PgOptions::default())
        .await
        .unwrap();
    contract(&store).await;
    let r = file("u9", "u9", "kept", "text/plain");
    store.create(&r).await.unwrap();
    drop(store);
    // A second process: the same rows; migrations are idempotent.
    let again = PostgresAssetStore::connect(&url, &PgOptions::default())
        .await
        .unwrap();
    assert_eq!(again.get("u9", &r.id).await.unwrap(), Some(r.clone()));
    // In the store's own schema, next to (not in) the default one the job store uses.
    assert_eq!(
        pg.psql(
            "assets",
            &format!(
                "SELECT name FROM nodetool_assets.nodetool_assets WHERE id = '{}'",
                r.id
            )
        ),
        "kept"
    );
}

#[tokio::test]
async fn postgres_lazy_store_connects_on_first_use() {
    let Some(pg) = postgres("postgres_lazy_store_connects_on_first_use").await else {
        return;
    };
    let url = pg.create_database("lazy");
    let store = PostgresAssetStore::lazy(url, PgOptions::default());
    assert_eq!(
        pg.psql(
            "lazy",
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'nodetool_assets'"
        ),
        "0",
        "nothing is created before the first operation"
    );
    contract(&store).await;
}

#[tokio::test]
async fn postgres_refuses_a_bad_url_a_down_server_and_a_newer_schema() {
    let options = PgOptions {
        startup_wait: std::time::Duration::from_millis(300),
        ..PgOptions::default()
    };
    let err = PostgresAssetStore::connect("mysql://u:secret@h/db", &options)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
    assert!(err.to_string().contains("DATABASE_URL"), "{err}");
    assert!(!err.to_string().contains("secret"), "{err}");
    let port = nodetool_testkit::free_port();
    let err = PostgresAssetStore::connect(
        &format!("postgres://u:secret@127.0.0.1:{port}/db"),
        &options,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("not reachable"), "{err}");
    assert!(!format!("{err:?}").contains("secret"), "{err:?}");

    let Some(pg) = postgres("postgres_refuses_a_bad_url_a_down_server_and_a_newer_schema").await
    else {
        return;
    };
    let url = pg.create_database("newer");
    drop(PostgresAssetStore::connect(&url, &options).await.unwrap());
    pg.psql(
        "newer",
        "INSERT INTO nodetool_assets._sqlx_migrations (version, description, installed_on, \
         success, checksum, execution_time) VALUES (29990101000000, 'from the future', now(), \
         true, '\\x00', 0)",
    );
    let err = PostgresAssetStore::connect(&url, &options)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("newer nodetool"), "{err}");
}
