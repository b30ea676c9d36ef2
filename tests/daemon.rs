//! The daemon end to end: inbox, rejected files, API, spool, clean stop.

mod common;

use common::TestDaemon;
use std::time::Duration;
use vigil::intent::{inbox, IntentStatus, NewIntent};
use vigil::store::prelude::*;

fn intent(kind: &str, prio: u8) -> NewIntent {
    NewIntent {
        intent_type: kind.into(),
        priority: prio,
        reason: format!("{kind} happened"),
        data: serde_json::json!({"k": kind}).as_object().unwrap().clone(),
        dedup_key: None,
        origin: "test".into(),
    }
}

/// Puts a file into the inbox as producers must: under a hidden name, then renamed.
fn drop_in(inbox: &std::path::Path, name: &str, text: &str) {
    let tmp = inbox.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, inbox.join(name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_files_become_intents_and_bad_ones_are_rejected_with_a_reason() {
    let d = TestDaemon::start("").await;
    let inbox_dir = d.app.inbox_dir();
    let mut stored = d.app.stored.subscribe();
    inbox::write(&inbox_dir, &intent("alert_disk_full", 8), 1_700_000_000_000).unwrap();
    let id = tokio::time::timeout(Duration::from_secs(5), stored.recv())
        .await
        .expect("picked up")
        .unwrap();
    let got = d.intents();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, id);
    assert_eq!(got[0].intent_type, "alert_disk_full");
    assert_eq!(got[0].status, IntentStatus::Pending);
    assert_eq!(got[0].origin, "inbox");
    d.wait_until("inbox file removed", || {
        std::fs::read_dir(&inbox_dir).unwrap().count() == 0
    })
    .await;

    // A tampered file and a non-JSON file: rejected, never stored.
    let good = inbox::write(
        &inbox_dir.with_file_name("staging"),
        &intent("alert_x", 5),
        1,
    )
    .unwrap();
    let tampered = std::fs::read_to_string(&good)
        .unwrap()
        .replace("alert_x happened", "rm -rf /");
    drop_in(&inbox_dir, "2_alert_x_deadbeef.json", &tampered);
    drop_in(&inbox_dir, "3_junk_00000000.json", "{ not json");
    let rejected = d.app.rejected_dir();
    d.wait_until("two files rejected", || {
        std::fs::read_dir(&rejected).map(|r| r.count()).unwrap_or(0) == 4
    })
    .await;
    let reason = std::fs::read_to_string(rejected.join("2_alert_x_deadbeef.json.reason")).unwrap();
    assert!(reason.contains("checksum mismatch"), "{reason}");
    let reason = std::fs::read_to_string(rejected.join("3_junk_00000000.json.reason")).unwrap();
    assert!(reason.contains("not valid JSON"), "{reason}");
    assert_eq!(d.intents().len(), 1, "rejected files are never acted on");
    assert_eq!(d.app.metrics.inbox_rejected_total.total(), 2.0);

    let summary = d.stop().await;
    assert_eq!(summary.intents, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_already_in_the_inbox_at_start_are_taken() {
    let dir = tempfile::tempdir().unwrap();
    let inbox_dir = dir.path().join("data/inbox");
    inbox::write(&inbox_dir, &intent("alert_before_start", 5), 10).unwrap();
    let d = TestDaemon::start_in(
        dir,
        "",
        std::sync::Arc::new(vigil::clock::SystemClock),
        Default::default(),
    )
    .await;
    d.wait_until("stored", || d.intents().len() == 1).await;
    assert_eq!(d.intents()[0].intent_type, "alert_before_start");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_serves_health_and_metrics_and_takes_intents_only_with_the_token() {
    let d = TestDaemon::start("").await;
    let health = d.get_json("/healthz").await;
    assert_eq!(health["status"], "ok");

    let body = serde_json::json!({"intent_type": "alert_api", "priority": 7, "reason": "from api"});
    let r = d.post_as(None, "/api/intents", Some(&body)).await;
    assert_eq!(r.status(), 401, "no token: refused");
    let r = d.post_as(Some("wrong"), "/api/intents", Some(&body)).await;
    assert_eq!(r.status(), 401);
    let r = d.post("/api/intents", &body).await;
    assert_eq!(r.status(), 201);
    let r = d.post("/api/intents", &body).await;
    assert_eq!(
        r.status(),
        200,
        "same type and data within the hour: the same intent"
    );
    let bad = serde_json::json!({"intent_type": "alert_api", "priority": 11});
    let r = d.post("/api/intents", &bad).await;
    assert_eq!(r.status(), 422);
    let msg: serde_json::Value = r.json().await.unwrap();
    assert!(
        msg["error"]
            .as_str()
            .unwrap()
            .contains("priority 11 is out of range"),
        "{msg}"
    );
    let misspelt = serde_json::json!({"intent_type": "alert_api", "priority": 1, "pririty": 2});
    let r = d.post("/api/intents", &misspelt).await;
    assert_eq!(
        r.status(),
        422,
        "the inbox's parser: unknown keys are refused"
    );
    let msg: serde_json::Value = r.json().await.unwrap();
    assert!(
        msg["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `pririty`"),
        "{msg}"
    );

    let list = d.get_json("/api/intents").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["intent_type"], "alert_api");
    let metrics = d.get_text("/metrics").await;
    assert!(
        metrics.contains("vigil_intents_total{intent_type=\"alert_api\"} 1"),
        "{metrics}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_cannot_start_is_reported_and_the_daemon_keeps_running() {
    let d = TestDaemon::start(
        "[sources.gone]\ntype = \"dir\"\npath = \"{dir}/does-not-exist\"\nevent = \"x\"\n",
    )
    .await;
    d.wait_until("source recorded down", || {
        d.app
            .store()
            .unwrap()
            .source_states()
            .unwrap()
            .iter()
            .any(|s| s.source == "gone" && !s.up)
    })
    .await;
    assert_eq!(d.app.metrics.source_up.get(&["gone"]), 0.0);
    inbox::write(&d.app.inbox_dir(), &intent("alert_still_alive", 5), 10).unwrap();
    d.wait_until("still taking intents", || d.intents().len() == 1)
        .await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_posted_to_the_api_are_spooled_when_asked() {
    let opts = vigil::daemon::Options {
        spool_events: true,
        ..Default::default()
    };
    let d = TestDaemon::start_with("", std::sync::Arc::new(vigil::clock::SystemClock), opts).await;
    let ev = serde_json::json!({"type": "phase_complete", "data": {"duration_s": 9000}});
    let r = d.post("/api/events", &ev).await;
    assert_eq!(r.status(), 202);
    let r = d.post_as(None, "/api/events", Some(&ev)).await;
    assert_eq!(r.status(), 401);
    let spool = d.app.events_dir();
    d.wait_until("event spooled", || {
        std::fs::read_dir(&spool).map(|r| r.count()).unwrap_or(0) == 1
    })
    .await;
    let file = std::fs::read_dir(&spool)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(file
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .ends_with("_api_phase_complete.json"));
    let saved: vigil::event::Event =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved.data["duration_s"], 9000);
    // Spooled events are pruned after 7 days, judged by the time in their name.
    assert_eq!(
        vigil::daemon::prune_spool(&spool, saved.ts + 7 * 24 * 3600 * 1000 - 1),
        0
    );
    assert_eq!(
        vigil::daemon::prune_spool(&spool, saved.ts + 7 * 24 * 3600 * 1000 + 1),
        1
    );
    let summary = d.stop().await;
    assert_eq!(summary.events, 1);
}

/// The exposition passes Prometheus' own linter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool() {
    let d = TestDaemon::start("").await;
    inbox::write(&d.app.inbox_dir(), &intent("alert_lint", 5), 10).unwrap();
    d.wait_until("stored", || d.intents().len() == 1).await;
    let text = d.get_text("/metrics").await;
    common::promtool_check_metrics(&text);
    d.stop().await;
}

/// Rules run on the injected clock: a 5-minute absence takes no 5 minutes here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absence_and_duplicates_through_the_daemon_on_a_manual_clock() {
    let clock = vigil::clock::ManualClock::at("2026-03-08T06:00:00Z");
    let config = r#"
[rules.heartbeat_stall]
absent = "dream_heartbeat"
for = "5m"
intent = "alert_heartbeat_stall"
priority = 8
[rules.oom]
on = "gpu_oom"
intent = "alert_gpu_oom"
priority = 9
"#;
    let d = TestDaemon::start_with(
        config,
        std::sync::Arc::new(clock.clone()),
        Default::default(),
    )
    .await;
    clock.advance(Duration::from_secs(4 * 60));
    d.post_event("dream_heartbeat", serde_json::json!({"n": 1}))
        .await;
    clock.advance(Duration::from_secs(4 * 60 + 59));
    d.post_event("gpu_oom", serde_json::json!({"alloc_gib": "2.5"}))
        .await;
    d.post_event("gpu_oom", serde_json::json!({"alloc_gib": "2.5"}))
        .await; // the same fact again
    d.wait_until("oom intent", || d.intents().len() == 1).await;
    d.wait_until("duplicate counted", || {
        d.app.metrics.events_dropped_total.get(&["duplicate"]) == 1.0
    })
    .await;
    assert!(
        d.intents()
            .iter()
            .all(|i| i.intent_type != "alert_heartbeat_stall"),
        "4m59s of silence is not 5m"
    );
    clock.advance(Duration::from_secs(1));
    d.wait_until("stall intent", || {
        d.intents()
            .iter()
            .any(|i| i.intent_type == "alert_heartbeat_stall")
    })
    .await;
    let summary = d.stop().await;
    assert_eq!((summary.events, summary.intents), (3, 2));
}

/// A store deleted or corrupted under the daemon used to leave /healthz saying ok while writes
/// failed (or went into a file nobody would open again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_notices_a_store_deleted_or_corrupted_under_the_daemon() {
    let health = |d: &TestDaemon| {
        let url = d.api("/healthz");
        async move {
            let r = reqwest::get(url).await.unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let d = TestDaemon::start("").await;
    assert_eq!(health(&d).await.0, 200);
    std::fs::remove_file(d.app.data_dir().join("vigil.db")).unwrap();
    let (status, body) = health(&d).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "degraded");
    assert!(
        body["store"]
            .as_str()
            .unwrap()
            .contains("was deleted or replaced while vigil ran"),
        "{body}"
    );
    d.stop().await;

    let d = TestDaemon::start("").await;
    let db = d.app.data_dir().join("vigil.db");
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"garbage, not SQL", 0).unwrap();
    let (status, body) = health(&d).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["store"]
            .as_str()
            .unwrap()
            .contains("is not a SQLite database any more"),
        "{body}"
    );
    d.stop().await;
}
