//! The daemon on a PostgreSQL store: an intent posted to its API is stored, claimed and run
//! (every store call from the runtime's blocking threads), `/healthz` checks the database,
//! `/api/fleet` lists this host, and the daemon's source states reach the shared store.

mod common;

use common::store::fresh_postgres_url;
use common::TestDaemon;
use vigil::intent::IntentStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_on_postgresql_runs_what_it_is_given() {
    let url = fresh_postgres_url();
    let config = format!(
        r#"
# A heartbeat (a third of the lease) every second, so the fleet view fills quickly.
[orchestrator]
lease = "3s"

[playbooks.note]
on = "alert_*"
steps = [{{ log = "noted {{reason}}" }}]

[store]
url = "{url}"
"#
    );
    let d = TestDaemon::start(&config).await;
    // `host` defaults to the hostname (the test daemon's config starts with `[api]`).
    let me = Some(vigil::store::hostname());
    assert_eq!(d.app.store().unwrap().backend(), "postgres");
    let r = d
        .post(
            "/api/intents",
            &serde_json::json!({"intent_type": "alert_disk", "priority": 5, "reason": "disk at 91%", "data": {}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    d.wait_until("the intent to run", || {
        d.intents()
            .first()
            .is_some_and(|i| i.status == IntentStatus::Done)
    })
    .await;
    let health = d.get_json("/healthz").await;
    assert_eq!(health["status"], "ok", "{health}");
    d.wait_until("the heartbeat and the source states", || {
        let hosts = common::store::pg_query(&url, "SELECT host FROM hosts");
        let sources = common::store::pg_query(&url, "SELECT DISTINCT host FROM source_states");
        hosts == vec![me.clone()] && sources == vec![me.clone()]
    })
    .await;
    let fleet = d.get_json("/api/fleet").await;
    assert_eq!(fleet[0]["host"].as_str(), me.as_deref(), "{fleet}");
    let runs = common::store::pg_query(&url, "SELECT host FROM runs");
    assert_eq!(runs, vec![me.clone()]);
    d.stop().await;
}
