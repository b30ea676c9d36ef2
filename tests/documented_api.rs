//! What the README's HTTP API table and metric list promise, on an in-process daemon:
//! `GET /api/sources`, `sources_down` in `/healthz`, `GET /api/intents/{id}` and the
//! `?status=&type=&limit=` filters, `GET /api/symptoms`, and the gauges
//! `vigil_budget_seconds_remaining`, `vigil_cooldown_seconds`, `vigil_invariant_violations` and
//! `vigil_invariant_cycle_duration_seconds`.

mod common;
mod orchestrator_support;

use common::{TestDaemon, TOKEN};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use vigil::app::App;
use vigil::clock::ManualClock;
use vigil::config::Config;
use vigil::intent::IntentStatus;
use vigil::orchestrator::Orchestrator;
use vigil::store::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_and_healthz_name_the_source_that_is_down() {
    let d = TestDaemon::start(
        "[sources.gone]\ntype = \"dir\"\npath = \"{dir}/missing\"\nevent = \"x\"\n\
         [sources.here]\ntype = \"dir\"\npath = \"{dir}\"\nevent = \"y\"\n",
    )
    .await;
    let missing = d.path("missing");
    let mut sources = Value::Null;
    for _ in 0..2000 {
        sources = d.get_json("/api/sources").await;
        let attached = sources
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["reason"] != "starting" && (s["source"] == "gone" || s["up"] == true));
        if attached {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let by_name = |name: &str| {
        sources
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["source"] == name)
            .unwrap_or_else(|| panic!("{name} in {sources}"))
            .clone()
    };
    let gone = by_name("gone");
    assert_eq!((&gone["kind"], &gone["up"]), (&json!("dir"), &json!(false)));
    let reason = gone["reason"].as_str().unwrap();
    assert!(reason.contains(&missing.display().to_string()), "{reason}");
    let here = by_name("here");
    assert_eq!(
        (&here["kind"], &here["up"], &here["reason"]),
        (&json!("dir"), &json!(true), &Value::Null)
    );

    let health = reqwest::get(d.api("/healthz")).await.unwrap();
    assert_eq!(
        health.status(),
        200,
        "a source down does not make vigil unhealthy"
    );
    let health: Value = health.json().await.unwrap();
    assert_eq!(health, json!({"status": "ok", "sources_down": ["gone"]}));
    d.stop().await;
}

async fn post_intent(d: &TestDaemon, intent_type: &str, n: u32) -> i64 {
    let r = d
        .post(
            "/api/intents",
            &json!({"intent_type": intent_type, "priority": 4, "reason": format!("r{n}"), "data": {"n": n}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

fn ids(list: &Value) -> Vec<i64> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_by_id_and_by_status_type_and_limit() {
    let d = TestDaemon::start("").await;
    let a1 = post_intent(&d, "alert_a", 1).await;
    let b1 = post_intent(&d, "alert_b", 2).await;
    let a2 = post_intent(&d, "alert_a", 3).await;
    let a3 = post_intent(&d, "alert_a", 4).await;
    let store = d.app.store().unwrap();
    for id in [a2, b1] {
        store
            .set_intent_status(id, IntentStatus::Done, Some("handled"), 0)
            .unwrap();
    }

    let one = d.get_json(&format!("/api/intents/{a3}")).await;
    assert_eq!(one["id"], a3);
    assert_eq!(one["intent_type"], "alert_a");
    assert_eq!(one["reason"], "r4");
    assert_eq!(one["data"], json!({"n": 4}));
    assert_eq!(one["status"], "pending");
    assert_eq!(one["origin"], "api");
    let done = d.get_json(&format!("/api/intents/{a2}")).await;
    assert_eq!(
        (&done["status"], &done["note"]),
        (&json!("done"), &json!("handled"))
    );
    let missing = reqwest::get(d.api("/api/intents/999")).await.unwrap();
    assert_eq!(missing.status(), 404);

    assert_eq!(ids(&d.get_json("/api/intents").await), [a3, a2, b1, a1]);
    assert_eq!(
        ids(&d.get_json("/api/intents?type=alert_a").await),
        [a3, a2, a1]
    );
    assert_eq!(ids(&d.get_json("/api/intents?status=done").await), [a2, b1]);
    assert_eq!(
        ids(&d.get_json("/api/intents?status=pending&type=alert_a").await),
        [a3, a1]
    );
    assert_eq!(ids(&d.get_json("/api/intents?limit=2").await), [a3, a2]);
    assert_eq!(
        ids(&d
            .get_json("/api/intents?status=done&type=alert_b&limit=5")
            .await),
        [b1]
    );
    let bad = reqwest::get(d.api("/api/intents?status=bogus"))
        .await
        .unwrap();
    assert_eq!(
        bad.status(),
        400,
        "an unknown status is refused, not ignored"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symptoms_are_listed_within_the_escalation_window() {
    let clock = ManualClock::at("2026-11-23T08:00:00Z");
    let d = TestDaemon::start_with(
        "[escalation]\nthreshold = 5\nwindow = \"24h\"\n",
        Arc::new(clock.clone()),
        Default::default(),
    )
    .await;
    for i in 1..=3 {
        if i == 2 {
            clock.advance(Duration::from_secs(25 * 3600));
        }
        let r = d
            .post(
                "/api/symptoms",
                &json!({"kind": "vllm_oom", "meta": {"i": i}}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let list = d.get_json("/api/symptoms").await;
    let seen: Vec<(Value, Value, Value)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["kind"].clone(), s["meta"]["i"].clone(), s["ts"].clone()))
        .collect();
    let ts = json!("2026-11-24T09:00:00.000Z");
    assert_eq!(
        seen,
        [
            (json!("vllm_oom"), json!(3), ts.clone()),
            (json!("vllm_oom"), json!(2), ts)
        ],
        "newest first, the one from 25 h ago left out: {list}"
    );
    d.stop().await;
}

/// The metric line `name{labels}` (or `name` alone) of the Prometheus text, as a number.
fn gauge(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// No window and no `timezone` (the daemon's `[api]` table comes first): the budget's day is
/// the local date, the same for the hour the test spans.
const FIX: &str = r#"
[orchestrator]
systemctl = ["{dir}/systemctl"]

[budgets.gpu_downtime]
seconds = 60

[playbooks.fix]
on = "alert_fix"
budget = "gpu_downtime"
cooldown = "6h"
steps = [
  { systemd = "stop", unit = "judge.service", downtime = true },
  { run = ["sh", "-c", "touch {dir}/started; while [ ! -e {dir}/go ]; do sleep 0.01; done"] },
  { systemd = "start", unit = "judge.service", restore = true },
]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_and_cooldown_gauges_follow_the_store() {
    // One run before the daemon starts, with 7 s of downtime on the clock: the step waits
    // until the test has moved the clock.
    let dir = tempfile::tempdir().unwrap();
    orchestrator_support::fake_systemctl(dir.path(), true);
    let config = FIX.to_string();
    let text = config.replace("{dir}", dir.path().to_str().unwrap());
    let clock = ManualClock::at(orchestrator_support::IN_WINDOW);
    {
        let parsed = Config::parse("test.toml", &text).unwrap_or_else(|e| panic!("{e}"));
        let app = Arc::new(App::new(
            parsed,
            dir.path().join("data"),
            Arc::new(clock.clone()),
        ));
        let id = vigil::intent::queue::submit(
            &app,
            &vigil::intent::NewIntent {
                intent_type: "alert_fix".into(),
                priority: 8,
                reason: "fix it".into(),
                data: Default::default(),
                dedup_key: None,
                origin: "test".into(),
            },
        )
        .unwrap()
        .id();
        let started = dir.path().join("started");
        let go = dir.path().join("go");
        let mover = async {
            common::wait_until("the step started", &mut || started.exists()).await;
            clock.advance(Duration::from_secs(7));
            std::fs::write(&go, "").unwrap();
        };
        let orchestrator = Orchestrator::new(app.clone());
        let (drained, ()) = tokio::join!(orchestrator.drain(), mover);
        drained.unwrap();
        let intent = app.store().unwrap().intent(id).unwrap().unwrap();
        assert_eq!(intent.status, IntentStatus::Done, "{:?}", intent.note);
    }
    clock.advance(Duration::from_secs(3600));

    let d = TestDaemon::start_in(dir, &config, Arc::new(clock.clone()), Default::default()).await;
    let budget = "vigil_budget_seconds_remaining{budget=\"gpu_downtime\"}";
    let cooldown = "vigil_cooldown_seconds{playbook=\"fix\"}";
    let mut text = String::new();
    for _ in 0..2000 {
        text = d.get_text("/metrics").await;
        if gauge(&text, budget).is_some() && gauge(&text, cooldown).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        gauge(&text, budget),
        Some(53.0),
        "60 s less 7 s of downtime:\n{text}"
    );
    assert_eq!(
        gauge(&text, cooldown),
        Some(6.0 * 3600.0 - 3607.0),
        "6 h from the run's start, 1 h 7 s ago:\n{text}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariant_violation_and_cycle_duration_gauges() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "CREATE TABLE jobs (id TEXT, state TEXT);
         INSERT INTO jobs VALUES ('j1', 'broken'), ('j2', 'broken'), ('j3', 'ok');",
    )
    .unwrap();
    let config = format!(
        r#"
[invariants]
enabled = false

[collectors.app]
type = "sql"
url = "sqlite://{}"
tables = {{ jobs = "SELECT id, state FROM jobs" }}

[invariants.J-01]
name = "No broken jobs"
severity = "major"
query = "SELECT id FROM jobs WHERE state = 'broken'"
key = ["id"]
"#,
        db.display()
    );
    let d = TestDaemon::start_in(
        dir,
        &config,
        Arc::new(vigil::clock::SystemClock),
        Default::default(),
    )
    .await;
    let violations = "vigil_invariant_violations{invariant=\"J-01\"}";
    let duration = "vigil_invariant_cycle_duration_seconds";
    let text = d.get_text("/metrics").await;
    assert_eq!(gauge(&text, violations), None, "no cycle yet:\n{text}");

    for (broken, want) in [(2, 2.0), (1, 1.0)] {
        if broken == 1 {
            c.execute("UPDATE jobs SET state = 'ok' WHERE id = 'j1'", [])
                .unwrap();
        }
        let r = d
            .post_as(Some(TOKEN), "/api/invariants/run-cycle", None)
            .await;
        assert_eq!(r.status(), 200);
        let cycle: Value = r.json().await.unwrap();
        assert_eq!(cycle["violations"].as_array().unwrap().len(), broken);
        let text = d.get_text("/metrics").await;
        assert_eq!(gauge(&text, violations), Some(want), "{text}");
        let seconds = gauge(&text, duration).expect("a cycle duration");
        assert_eq!(
            (seconds * 1000.0).floor() as u64,
            cycle["cycle_duration_ms"].as_u64().unwrap(),
            "the gauge is this cycle's duration: {seconds} s"
        );
    }
    d.stop().await;
}
