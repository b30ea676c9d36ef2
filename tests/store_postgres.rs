//! The PostgreSQL store itself: it opens and migrates once however many hosts start at once,
//! it answers from async code as from threads, and it says where it failed.

mod common;

use common::store::{fresh_postgres_url, open_postgres};
use serde_json::json;
use vigil::intent::NewIntent;
use vigil::store::prelude::*;
use vigil::store::{IntentQuery, PgStore};

fn intent(n: u32) -> NewIntent {
    NewIntent {
        intent_type: "alert_x".into(),
        priority: 5,
        reason: "r".into(),
        data: json!({ "n": n }).as_object().unwrap().clone(),
        dedup_key: None,
        origin: "test".into(),
    }
}

#[test]
fn eight_hosts_opening_a_new_store_at_once_migrate_it_once() {
    let url = fresh_postgres_url();
    let stores: Vec<PgStore> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(|| open_postgres(&url))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let id = stores[0].put_intent(&intent(1), 0, 1000).unwrap().id();
    assert_eq!(stores[7].intent(id).unwrap().unwrap().data["n"], 1);
    drop(stores);
    // Opening again runs nothing and keeps the data.
    let again = open_postgres(&url);
    assert_eq!(again.intent(id).unwrap().unwrap().data["n"], 1);
    assert_eq!(
        common::store::pg_query(&url, "SELECT version FROM vigil_schema"),
        vec![Some(PgStore::SCHEMA_VERSION.to_string())],
        "every migration, once"
    );
}

#[tokio::test]
async fn it_answers_from_an_async_test_body_and_from_spawn_blocking() {
    let store = std::sync::Arc::new(open_postgres(&fresh_postgres_url()));
    // Directly on the runtime's thread (tests and tools do this) ...
    let a = store.put_intent(&intent(1), 0, 1000).unwrap().id();
    // ... and from the daemon's way, a blocking thread of the runtime.
    let s = store.clone();
    let b = tokio::task::spawn_blocking(move || s.put_intent(&intent(2), 0, 1000).unwrap().id())
        .await
        .unwrap();
    assert_ne!(a, b);
    assert_eq!(store.intents(&IntentQuery::default()).unwrap().len(), 2);
    assert!(store.health().is_ok());
}

#[test]
fn an_unreachable_server_is_an_error_that_names_it_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://vigil_test:secret@127.0.0.1:{port}/vigil_test");
    let err = PgStore::open(&url)
        .err()
        .expect("nothing listens there")
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("secret"), "{err}");
}
