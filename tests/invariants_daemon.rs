//! The harness inside the daemon and on the command line: the background loop's transitions
//! reach the rule engine as `invariant_red`, `POST /api/invariants/run-cycle` needs the token
//! and answers 409 while a cycle runs, and `vigil invariants run|list|snapshot`.

mod common;

use common::{TestDaemon, TOKEN};
use serde_json::Value;

fn config(dir: &str, extra: &str) -> String {
    let db = format!("{dir}/app.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS jobs (id TEXT, state TEXT); DELETE FROM jobs; INSERT INTO jobs VALUES ('j1', 'broken');",
    )
    .unwrap();
    format!(
        r#"
[collectors.app]
type = "sql"
url = "sqlite://{db}"
tables = {{ jobs = "SELECT id, state FROM jobs" }}

[invariants.J-01]
name = "No broken jobs"
tier = "A"
severity = "critical"
query = "SELECT id, state FROM jobs WHERE state = 'broken'"
signal = "job {{id}} is {{state}}"
key = ["id"]

[rules.invariant_broke]
on = "invariant_red"
intent = "investigate_invariant"
priority = 6
{extra}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_transitions_reach_the_rule_engine_and_the_api_runs_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        dir.path().to_str().unwrap(),
        "[collectors.slow]\ntype = \"command\"\ncommand = [\"sh\", \"-c\", \"sleep 1; echo '[]'\"]\n[invariants.SLOW]\nname = \"slow\"\nseverity = \"minor\"\nquery = \"SELECT * FROM slow\"\n",
    );
    let d = TestDaemon::start_in(
        dir,
        &text,
        std::sync::Arc::new(vigil::clock::SystemClock),
        Default::default(),
    )
    .await;
    d.wait_until("an intent from invariant_red", || {
        d.intents()
            .iter()
            .any(|i| i.intent_type == "investigate_invariant")
    })
    .await;

    let run_cycle = "/api/invariants/run-cycle";
    let r = d.post_as(None, run_cycle, None).await;
    assert_eq!(r.status(), 401);
    // Two at once: one runs, the other is told a cycle is running.
    let (a, b) = tokio::join!(
        d.post_as(Some(TOKEN), run_cycle, None),
        d.post_as(Some(TOKEN), run_cycle, None)
    );
    let mut codes = vec![a, b];
    codes.sort_by_key(|r| r.status());
    assert_eq!(codes[1].status(), 409);
    let ok = codes.remove(0);
    assert_eq!(ok.status(), 200);
    let body: Value = ok.json().await.unwrap();
    for k in [
        "checks_run",
        "skipped",
        "sources_unavailable",
        "violations",
        "transitions",
        "cycle_duration_ms",
    ] {
        assert!(body.get(k).is_some(), "{k} missing in {body}");
    }
    let v = &body["violations"][0];
    assert_eq!(v["invariant_id"], "J-01");
    assert_eq!(v["observed_state"]["id"], "j1");
    assert_eq!(v["signal_query"], "job j1 is broken");
    let list = d.get_json("/api/invariants").await;
    assert_eq!(list[0]["id"], "J-01");
    assert_eq!(list[0]["state"], "red");
    let metrics = d.get_text("/metrics").await;
    assert!(
        metrics.contains("vigil_invariant_state{invariant=\"J-01\",severity=\"critical\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("vigil_collector_up{source=\"app\"} 1"));
    d.stop().await;
}

#[test]
fn command_line_run_list_snapshot_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(&cfg, config(dir.path().to_str().unwrap(), "")).unwrap();
    let data = dir.path().join("data");
    let out = common::vigil(&data)
        .args(["invariants", "run", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["violations"][0]["observed_state"]["state"], "broken");
    assert_eq!(r["transitions"][0]["to"], "red");

    let out = common::vigil(&data)
        .args(["invariants", "list", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let l: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(l[0]["state"], "red");

    let snap = dir.path().join("snap.db");
    let out = common::vigil(&data)
        .args(["invariants", "snapshot", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&snap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: i64 = rusqlite::Connection::open(&snap)
        .unwrap()
        .query_row("SELECT count(*) FROM jobs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        config(dir.path().to_str().unwrap(), "").replace("FROM jobs WHERE", "FROM jobz WHERE"),
    )
    .unwrap();
    let out = common::vigil(&data)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:11:9: [invariants.J-01] query: no such table: jobz"),
        "{err}"
    );
}
