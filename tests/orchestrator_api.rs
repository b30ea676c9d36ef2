//! The orchestrator's HTTP API on an in-process daemon: symptoms in, flags and status out,
//! clearing needs the token, and the daemon's orchestrator runs a playbook for an API intent.

mod common;

use common::{TestDaemon, TOKEN};
use serde_json::{json, Value};

const CONFIG: &str = r#"
[playbooks.note]
on = "trigger_note"
steps = [{ run = ["sh", "-c", "echo ran > {dir}/ran"] }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symptoms_flags_status_and_audit_over_http() {
    let d = TestDaemon::start(CONFIG).await;
    let http = reqwest::Client::new();
    for i in 0..3 {
        let r = http
            .post(d.api("/api/symptoms"))
            .bearer_auth(TOKEN)
            .json(&json!({"kind": "vllm_oom", "meta": {"i": i}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["count"], i + 1);
    }
    let flags: Value = http
        .get(d.api("/api/escalation"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(flags[0]["armed"], true);
    assert_eq!(flags[0]["reason"], "3 vllm_oom in last 24h (threshold: 3)");

    let r = http
        .post(d.api("/api/escalation/vllm_oom/clear"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "clearing needs the token");
    let r = http
        .post(d.api("/api/escalation/vllm_oom/clear"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["was_armed"], true);

    // An intent through the API is run by the daemon's orchestrator.
    let r = http
        .post(d.api("/api/intents"))
        .bearer_auth(TOKEN)
        .json(&json!({"intent_type": "trigger_note", "priority": 5, "reason": "api"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let ran = d.path("ran");
    d.wait_until("the playbook ran", || ran.exists()).await;
    d.wait_until("the intent is done", || {
        d.intents()
            .iter()
            .any(|i| i.status == vigil::intent::IntentStatus::Done)
    })
    .await;

    let status: Value = http
        .get(d.api("/api/orchestrator"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["playbooks"][0]["name"], "note");
    assert_eq!(status["playbooks"][0]["runs_24h"], 1);
    assert_eq!(status["intents"]["done"], 1);
    let audit: Value = http
        .get(d.api("/api/audit?n=3"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["playbook_start", "step_ok", "playbook_end"]);
    let metrics = http
        .get(d.api("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("vigil_symptoms_total{kind=\"vllm_oom\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "vigil_playbook_runs_total{playbook=\"note\",result=\"done\",mode=\"default\"} 1"
        ),
        "{metrics}"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_playbook_does_not_hold_up_the_queue_and_its_lock_denies_a_second_run() {
    let d = TestDaemon::start(
        r#"
[playbooks.slow]
on = "trigger_slow"
lock = "gpu0"
steps = [{ run = ["sh", "-c", "touch {dir}/started; while [ ! -f {dir}/go ]; do sleep 0.05; done"], timeout = "1m" }]
"#,
    )
    .await;
    let submit = |t: &str, n: u32| {
        let i = vigil::intent::NewIntent {
            intent_type: t.into(),
            priority: 5,
            reason: "test".into(),
            data: json!({ "n": n }).as_object().unwrap().clone(),
            dedup_key: None,
            origin: "test".into(),
        };
        vigil::intent::queue::submit(&d.app, &i).unwrap().id()
    };
    let status = |id: i64| {
        use vigil::store::Store;
        d.app.store().unwrap().intent(id).unwrap().unwrap()
    };
    let slow = submit("trigger_slow", 1);
    let started = d.path("started");
    d.wait_until("the slow step started", || started.exists())
        .await;
    let alert = submit("alert_other", 1);
    let second = submit("trigger_slow", 2);
    d.wait_until("the alert ended", || status(alert).status.is_finished())
        .await;
    d.wait_until("the second run ended", || {
        status(second).status.is_finished()
    })
    .await;
    assert_eq!(status(alert).status, vigil::intent::IntentStatus::Unmatched);
    let denied = status(second);
    assert_eq!(denied.status, vigil::intent::IntentStatus::Denied);
    let note = denied.note.unwrap();
    assert!(
        note.starts_with("lock gate: Lock \"gpu0\" held by "),
        "{note}"
    );
    assert_eq!(status(slow).status, vigil::intent::IntentStatus::Running);
    std::fs::write(d.path("go"), "").unwrap();
    d.wait_until("the slow run finished", || {
        status(slow).status.is_finished()
    })
    .await;
    assert_eq!(status(slow).status, vigil::intent::IntentStatus::Done);
    d.stop().await;
}
