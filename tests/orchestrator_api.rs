//! The orchestrator's HTTP API on an in-process daemon: symptoms in, flags and status out,
//! clearing needs the token, and the daemon's orchestrator runs a playbook for an API intent.

mod common;
mod orchestrator_support;

use common::{TestDaemon, TOKEN};
use orchestrator_support::{fake_systemctl, script};
use serde_json::{json, Value};

const CONFIG: &str = r#"
[playbooks.note]
on = "trigger_note"
steps = [{ run = ["sh", "-c", "echo ran > {dir}/ran"] }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symptoms_flags_status_and_audit_over_http() {
    let d = TestDaemon::start(CONFIG).await;
    for i in 0..3 {
        let r = d
            .post(
                "/api/symptoms",
                &json!({"kind": "vllm_oom", "meta": {"i": i}}),
            )
            .await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["count"], i + 1);
    }
    let flags = d.get_json("/api/escalation").await;
    assert_eq!(flags[0]["armed"], true);
    assert_eq!(flags[0]["reason"], "3 vllm_oom in last 24h (threshold: 3)");

    let clear = "/api/escalation/vllm_oom/clear";
    let r = d.post_as(None, clear, None).await;
    assert_eq!(r.status(), 401, "clearing needs the token");
    let r = d.post_as(Some(TOKEN), clear, None).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["was_armed"], true);

    // An intent through the API is run by the daemon's orchestrator.
    let r = d
        .post(
            "/api/intents",
            &json!({"intent_type": "trigger_note", "priority": 5, "reason": "api"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let ran = d.path("ran");
    d.wait_until("the playbook ran", || ran.exists()).await;
    d.wait_until("the intent is done", || {
        d.intents()
            .iter()
            .any(|i| i.status == vigil::intent::IntentStatus::Done)
    })
    .await;

    let status = d.get_json("/api/orchestrator").await;
    assert_eq!(status["playbooks"][0]["name"], "note");
    assert_eq!(status["playbooks"][0]["runs_24h"], 1);
    assert_eq!(status["intents"]["done"], 1);
    let audit = d.get_json("/api/audit?n=3").await;
    let events: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["playbook_start", "step_ok", "playbook_end"]);
    let metrics = d.get_text("/metrics").await;
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
async fn a_long_playbook_does_not_hold_up_the_queue_and_its_lock_defers_a_second_run() {
    let d = TestDaemon::start(
        r#"
[playbooks.slow]
on = "trigger_slow"
lock = "gpu0"
steps = [{ run = ["sh", "-c", "echo {data.n} >> {dir}/ran; touch {dir}/started; while [ ! -f {dir}/go ]; do sleep 0.05; done"], timeout = "1m" }]
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
        use vigil::store::prelude::*;
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
    d.wait_until("the second run was deferred", || {
        status(second)
            .note
            .is_some_and(|n| n.starts_with("deferred: waiting for lock \"gpu0\""))
    })
    .await;
    assert_eq!(status(alert).status, vigil::intent::IntentStatus::Unmatched);
    // Lock contention waits rather than denies: the second stays pending, not lost.
    let waiting = status(second);
    assert_eq!(waiting.status, vigil::intent::IntentStatus::Pending);
    let note = waiting.note.unwrap();
    assert!(note.contains("Lock \"gpu0\" held by "), "{note}");
    assert_eq!(status(slow).status, vigil::intent::IntentStatus::Running);
    std::fs::write(d.path("go"), "").unwrap();
    d.wait_until("both runs finished", || {
        status(slow).status.is_finished() && status(second).status.is_finished()
    })
    .await;
    assert_eq!(status(slow).status, vigil::intent::IntentStatus::Done);
    assert_eq!(status(second).status, vigil::intent::IntentStatus::Done);
    assert_eq!(std::fs::read_to_string(d.path("ran")).unwrap(), "1\n2\n");
    let deferred = vigil::audit::tail(&d.app, 1000)
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "intent_deferred")
        .count();
    assert_eq!(deferred, 1, "audited once, not once per retry");
    d.stop().await;
}

/// The issue's loop end to end, on the injected clock: gpu_oom events through the rule engine
/// record vllm_oom symptoms (also while the rule is in cooldown); the third arms the flag, so
/// the next intent runs the playbook in canary mode, with downtime and restore, and clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_ooms_escalate_the_playbook_from_predictive_to_canary() {
    let clock = vigil::clock::ManualClock::at("2026-11-23T08:30:00Z"); // 03:30 in New York
    let config = r#"
[orchestrator]
systemctl = ["{dir}/systemctl"]

[windows.maintenance]
at = "03:00-07:00"
timezone = "America/New_York"

[budgets.gpu_downtime]
seconds = 60

[escalation]
threshold = 3
window = "24h"
flag_ttl = "4h"

[rules.gpu_oom]
on = "gpu_oom"
intent = "alert_gpu_oom"
priority = 9
cooldown = "1h"
symptom = "vllm_oom"

[playbooks.vllm_oom]
on = "alert_gpu_oom"
mode = { default = "predictive", escalate_on = "vllm_oom" }
window = "maintenance"
budget = "gpu_downtime"
lock = "gpu0"
steps = [
  { run = ["{dir}/record", "fit-check", "--alloc", "{data.alloc_gib}"], mode = "predictive" },
  { systemd = "stop", unit = "judge.service", downtime = true, mode = "canary" },
  { run = ["{dir}/record", "tune", "--mode", "{mode}"], timeout = "5m", mode = "canary" },
  { systemd = "start", unit = "judge.service", restore = true, mode = "canary" },
]
"#;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    script(
        &p.join("record"),
        &format!("echo \"$@\" >> {}/record.log", p.display()),
    );
    fake_systemctl(p, true);
    let d = TestDaemon::start_in(
        dir,
        config,
        std::sync::Arc::new(clock.clone()),
        Default::default(),
    )
    .await;
    let post = |alloc: &str| d.post_event("gpu_oom", json!({ "alloc_gib": alloc }));
    let done = |n: usize| {
        d.intents()
            .iter()
            .filter(|i| i.status == vigil::intent::IntentStatus::Done)
            .count()
            >= n
    };
    let symptoms = |n: u32| {
        vigil::escalation::status(&d.app)
            .unwrap()
            .first()
            .is_some_and(|f| f.symptom_count >= n)
    };

    post("2.5").await;
    d.wait_until("the predictive run", || done(1)).await;
    for (i, alloc) in ["3.0", "3.5"].into_iter().enumerate() {
        clock.advance(std::time::Duration::from_secs(120));
        post(alloc).await;
        d.wait_until("the symptom", || symptoms(i as u32 + 2)).await;
    }
    assert_eq!(
        d.intents().len(),
        1,
        "the rule is in cooldown: no new intents"
    );
    let flag = vigil::escalation::armed(&d.app, "vllm_oom")
        .unwrap()
        .expect("armed");
    assert_eq!(flag.reason, "3 vllm_oom in last 24h (threshold: 3)");

    clock.advance(std::time::Duration::from_secs(3600)); // 04:34, rule cooldown over
    post("4.0").await;
    d.wait_until("the canary run", || done(2)).await;
    assert_eq!(
        std::fs::read_to_string(d.path("record.log")).unwrap(),
        "fit-check --alloc 2.5\ntune --mode canary\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.path("systemctl.log")).unwrap(),
        "stop judge.service\nstart judge.service\n"
    );
    assert!(
        vigil::escalation::armed(&d.app, "vllm_oom")
            .unwrap()
            .is_none(),
        "cleared"
    );
    let m = &d.app.metrics;
    assert_eq!(
        m.playbook_runs_total
            .get(&["vllm_oom", "done", "predictive"]),
        1.0
    );
    assert_eq!(
        m.playbook_runs_total.get(&["vllm_oom", "done", "canary"]),
        1.0
    );
    d.stop().await;
}
