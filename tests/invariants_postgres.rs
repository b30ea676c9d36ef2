//! The sql collector against the real PostgreSQL that `scripts/setup` (run by `.ci/run`)
//! starts: role and database `vigil_test` on 127.0.0.1:5432, or `VIGIL_TEST_POSTGRES_URL`.
//! Each run works in a schema of its own, so runs side by side do not meet.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use vigil::clock::ManualClock;

const DEFAULT_URL: &str = "postgres://vigil_test:vigil_test@127.0.0.1:5432/vigil_test";

#[tokio::test(flavor = "multi_thread")]
async fn sql_collector_reads_postgres() {
    let url = std::env::var("VIGIL_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("cannot reach PostgreSQL at {url}: {e}; run scripts/setup (it starts the packaged cluster and creates the vigil_test role and database), or set VIGIL_TEST_POSTGRES_URL")
        });
    tokio::spawn(conn);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let s = format!("vigil_t{}_{nanos}", std::process::id());
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.agents (name text, max_parallel_tasks int, weight numeric);
             INSERT INTO {s}.agents VALUES ('a1', 2, 1.5), ('a2', 1, NULL);"
        ))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Nothing listens on this port once the listener is dropped.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let text = format!(
        r#"
[collectors.pg]
type = "sql"
url = "{url}"
tables = {{ agents = "SELECT name, max_parallel_tasks, weight FROM {s}.agents" }}

[collectors.gone]
type = "sql"
url = "postgres://vigil_test:vigil_test@127.0.0.1:{closed}/vigil_test"
tables = {{ others = "SELECT 1 AS one" }}

[invariants.P-01]
name = "Agents with more than one slot"
severity = "minor"
query = "SELECT name, max_parallel_tasks, weight FROM agents WHERE max_parallel_tasks > 1"

[invariants.P-02]
name = "From a server that is down"
severity = "minor"
query = "SELECT one FROM others"
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::at("2026-01-15T10:00:00Z"));
    let h = common::invariants::harness(dir.path(), &text, clock, Arc::default());
    let r = h.run_cycle(None).await.unwrap();
    assert_eq!(r.checks_run, vec!["P-01"], "{r:?}");
    assert_eq!(r.violations.len(), 1, "{r:?}");
    let v = &r.violations[0].observed_state;
    assert_eq!(v["name"], "a1");
    assert_eq!(v["max_parallel_tasks"], 2, "integers stay integers: {v:?}");
    assert_eq!(v["weight"], 1.5);
    // A server that is down is a source unavailable, with its place but not its password.
    assert_eq!(r.skipped[0].invariant_id, "P-02");
    assert_eq!(r.sources_unavailable.len(), 1, "{r:?}");
    let down = &r.sources_unavailable[0];
    assert_eq!(down.source, "gone");
    assert!(
        down.error.contains(&format!("127.0.0.1:{closed}")),
        "{down:?}"
    );
    assert!(!down.error.contains("vigil_test:vigil_test"), "{down:?}");

    // A table that is gone makes its source unavailable too, not a green or red invariant.
    client
        .batch_execute(&format!("DROP TABLE {s}.agents"))
        .await
        .unwrap();
    let r = h.run_cycle(None).await.unwrap();
    client
        .batch_execute(&format!("DROP SCHEMA {s} CASCADE"))
        .await
        .unwrap();
    assert!(r.violations.is_empty(), "{r:?}");
    assert!(r.checks_run.is_empty(), "{r:?}");
    let pg = r.sources_unavailable.iter().find(|u| u.source == "pg");
    assert!(
        pg.is_some_and(|u| u.error.contains("does not exist")),
        "{r:?}"
    );
}
