//! The workflow store contract ([`WorkflowStore`]'s doc), one behaviour suite run against SQLite
//! (a temp file, as `nodetool serve` opens it) and against a real PostgreSQL (the testkit's, from
//! Debian's packages; `DATABASE_URL`). Each case gets a fresh database.
#![allow(clippy::unwrap_used)]

use chrono::{DurationRound, Utc};
use nodetool_assets::PgOptions;
use nodetool_server::workflow_store::{NewVersion, WorkflowPatch, WorkflowRow, WorkflowStore};
use nodetool_testkit::postgres::PostgresServer;

/// Where a case's database lives, so that it can be opened again ("after a restart").
enum Target {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Target {
    async fn open(&self) -> WorkflowStore {
        match self {
            Target::Sqlite(dir) => WorkflowStore::sqlite(
                nodetool_server::db::open(&dir.path().join("nodetool.db"))
                    .await
                    .unwrap(),
            ),
            Target::Postgres(url) => WorkflowStore::connect(url, &PgOptions::default())
                .await
                .unwrap(),
        }
    }
}

fn row(id: &str, user: &str, access: &str) -> WorkflowRow {
    // Microseconds: what PostgreSQL keeps.
    let now = Utc::now()
        .duration_trunc(chrono::TimeDelta::microseconds(1))
        .unwrap();
    WorkflowRow {
        id: id.to_owned(),
        user_id: user.to_owned(),
        access: access.to_owned(),
        name: format!("wf {id}"),
        description: String::new(),
        tags: "[\"a\"]".to_owned(),
        thumbnail: None,
        graph: r#"{"nodes":[],"edges":[]}"#.to_owned(),
        settings: Some(r#"{"k": 1}"#.to_owned()),
        run_mode: None,
        tool_name: Some("tool".to_owned()),
        created_at: now,
        updated_at: now,
    }
}

fn version<'a>(workflow_id: &'a str, save_type: &'a str, graph: &'a str) -> NewVersion<'a> {
    NewVersion {
        workflow_id,
        user_id: "u1",
        save_type,
        name: Some("v"),
        description: None,
        graph,
        autosave_metadata: None,
    }
}

async fn per_user_access_and_public_read_only(t: &Target) {
    let store = t.open().await;
    let mine = row("w1", "u1", "private");
    store.insert(&mine).await.unwrap();
    assert_eq!(store.visible("u1", "w1").await.unwrap(), Some(mine.clone()));
    assert_eq!(store.visible("u2", "w1").await.unwrap(), None, "private");
    assert_eq!(
        store.owner_of("w1").await.unwrap(),
        Some(("u1".to_owned(), "private".to_owned()))
    );
    assert_eq!(store.owner_of("nope").await.unwrap(), None);
    // A duplicate id is refused, whoever asks.
    let err = store.insert(&row("w1", "u2", "private")).await.unwrap_err();
    assert_eq!(err.kind(), nodetool_core::ErrorKind::AlreadyExists, "{err}");

    let public = row("w2", "u1", "public");
    store.insert(&public).await.unwrap();
    assert_eq!(
        store.visible("u2", "w2").await.unwrap(),
        Some(public.clone())
    );
    // Readable is not writable: another user's update and delete touch nothing.
    let patch = WorkflowPatch {
        name: Some("hijacked".into()),
        ..WorkflowPatch::default()
    };
    assert!(!store.update("u2", "w2", &patch, Utc::now()).await.unwrap());
    assert!(!store.delete("u2", "w2").await.unwrap());
    assert_eq!(store.visible("u1", "w2").await.unwrap(), Some(public));
    // The owner's update changes only the set fields.
    let at = Utc::now()
        .duration_trunc(chrono::TimeDelta::microseconds(1))
        .unwrap();
    assert!(store.update("u1", "w1", &patch, at).await.unwrap());
    let got = store.visible("u1", "w1").await.unwrap().unwrap();
    assert_eq!(got.name, "hijacked");
    assert_eq!(got.updated_at, at);
    assert_eq!(
        (got.graph, got.tags, got.settings, got.tool_name),
        (mine.graph, mine.tags, mine.settings, mine.tool_name)
    );
    assert!(store.list("u2", None, None).await.unwrap().is_empty());
}

async fn list_pages_newest_first(t: &Target) {
    let store = t.open().await;
    let ids: Vec<String> = (0..5).map(|_| nodetool_core::id::new_id()).collect();
    for id in &ids {
        store.insert(&row(id, "u1", "private")).await.unwrap();
    }
    store
        .insert(&row(&nodetool_core::id::new_id(), "u2", "public"))
        .await
        .unwrap();
    // As the handler pages: limit + 1 tells whether there is more; the last id is the cursor.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let rows = store.list("u1", cursor.as_deref(), Some(3)).await.unwrap();
        let more = rows.len() > 2;
        seen.extend(rows.iter().take(2).map(|r| r.id.clone()));
        if !more {
            break;
        }
        cursor = seen.last().cloned();
        assert!(seen.len() <= 10, "paging terminates");
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first, "every workflow once, newest first");
    let all: Vec<String> = store
        .list("u1", None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(all, newest_first);
}

async fn versions_and_autosaves(t: &Target) {
    let store = t.open().await;
    store.insert(&row("w", "u1", "private")).await.unwrap();
    let v1 = store
        .insert_version(&version("w", "manual", "{\"g\":1}"))
        .await
        .unwrap();
    let mut auto = version("w", "autosave", "{\"g\":2}");
    auto.autosave_metadata = Some("{\"client\":\"x\"}".into());
    let v2 = store.insert_version(&auto).await.unwrap();
    let v3 = store
        .insert_version(&version("w", "autosave", "{\"g\":3}"))
        .await
        .unwrap();
    assert_eq!((v1.version, v2.version, v3.version), (1, 2, 3));
    assert_eq!(v2.autosave_metadata.as_deref(), Some("{\"client\":\"x\"}"));
    assert_eq!(v1.graph, "{\"g\":1}", "kept byte for byte");
    // Another workflow numbers its own from 1.
    store.insert(&row("other", "u1", "private")).await.unwrap();
    let o1 = store
        .insert_version(&version("other", "manual", "{}"))
        .await
        .unwrap();
    assert_eq!(o1.version, 1);

    let listed: Vec<i64> = store
        .list_versions("w", 100)
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(listed, [3, 2, 1]);
    assert_eq!(store.list_versions("w", 2).await.unwrap().len(), 2);
    assert_eq!(
        store.find_version("w", "2").await.unwrap(),
        Some(v2.clone())
    );
    assert_eq!(
        store.find_version("w", &v1.id).await.unwrap(),
        Some(v1.clone())
    );
    assert_eq!(store.find_version("other", &v1.id).await.unwrap(), None);
    assert_eq!(store.find_version("w", "9").await.unwrap(), None);
    assert_eq!(
        store.workflow_of_version(&o1.id).await.unwrap().as_deref(),
        Some("other")
    );
    assert_eq!(
        store.last_autosave_at("w").await.unwrap(),
        Some(v3.created_at)
    );
    assert_eq!(store.last_autosave_at("other").await.unwrap(), None);

    // Pruning keeps the newest autosaves and every manual version.
    store
        .insert_version(&version("w", "autosave", "{}"))
        .await
        .unwrap();
    assert_eq!(store.prune_autosaves("w", 1).await.unwrap(), 2);
    let kinds: Vec<(i64, String)> = store
        .list_versions("w", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.version, v.save_type))
        .collect();
    assert_eq!(kinds, [(4, "autosave".into()), (1, "manual".into())]);
    // Deleting an older version leaves the numbering alone: the next is still greatest + 1.
    assert!(store.delete_version(&v1.id).await.unwrap());
    assert!(!store.delete_version(&v1.id).await.unwrap());
    let v5 = store
        .insert_version(&version("w", "manual", "{}"))
        .await
        .unwrap();
    assert_eq!(v5.version, 5);
}

async fn concurrent_saves_never_share_a_number(t: &Target) {
    let store = t.open().await;
    store.insert(&row("w", "u1", "private")).await.unwrap();
    let saves = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .insert_version(&version("w", "autosave", "{}"))
                .await
                .unwrap()
                .version
        })
    });
    let mut numbers = Vec::new();
    for save in saves {
        numbers.push(save.await.unwrap());
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=8).collect::<Vec<i64>>());
}

async fn delete_removes_versions_and_persists(t: &Target) {
    let store = t.open().await;
    store.insert(&row("gone", "u1", "private")).await.unwrap();
    store.insert(&row("kept", "u1", "private")).await.unwrap();
    let v = store
        .insert_version(&version("gone", "manual", "{}"))
        .await
        .unwrap();
    store
        .insert_version(&version("kept", "manual", "{}"))
        .await
        .unwrap();
    assert!(store.delete("u1", "gone").await.unwrap());
    assert!(!store.delete("u1", "gone").await.unwrap(), "idempotent");
    assert_eq!(store.visible("u1", "gone").await.unwrap(), None);
    assert!(store.list_versions("gone", 100).await.unwrap().is_empty());
    assert_eq!(store.workflow_of_version(&v.id).await.unwrap(), None);
    drop(store);
    // A new process sees the same rows.
    let again = t.open().await;
    assert!(again.visible("u1", "kept").await.unwrap().is_some());
    assert_eq!(again.list_versions("kept", 100).await.unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let t = Target::Sqlite(tempfile::tempdir().unwrap());
                    super::$case(&t).await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(pg) = PostgresServer::start().await else {
                        let why = PostgresServer::why_missing().unwrap_or_default();
                        nodetool_testkit::skip_or_fail(stringify!($case), &why);
                        return;
                    };
                    let t = Target::Postgres(pg.create_database("workflows"));
                    super::$case(&t).await;
                }
            )*
        }
    };
}

suite!(
    per_user_access_and_public_read_only,
    list_pages_newest_first,
    versions_and_autosaves,
    concurrent_saves_never_share_a_number,
    delete_removes_versions_and_persists,
);
