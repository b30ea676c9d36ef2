//! The whole loop of issue 13 through a real daemon, with the real test service supervised as
//! production: three OOM log lines within 24 h arm the flag; the next intent runs the playbook
//! in canary mode inside the window; the canary starts on the first free port (the test holds
//! the first one busy); it is judged; production is stopped and restored within the SLA; the
//! candidate is promoted; the flag is cleared; the audit trail has every step; the budget shows
//! the downtime spent.

mod canary_support;
mod common;

use canary_support::*;
use common::TestDaemon;
use serde_json::json;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use vigil::clock::ManualClock;
use vigil::intent::IntentStatus;
use vigil::store::{AuditStore, RunStore};

const LOOP: &str = r#"
[sources.judge_log]
type = "file"
path = "{dir}/judge.log"
[[sources.judge_log.match]]
regex = 'CUDA out of memory\. Tried to allocate (?P<gib>[0-9.]+) GiB'
event = "gpu_oom"

[rules.gpu_oom]
on = "gpu_oom"
intent = "alert_gpu_oom"
priority = 9
cooldown = "1h"
symptom = "vllm_oom"
reason = "GPU OOM: tried to allocate {gib} GiB"

[escalation]
threshold = 3
window = "24h"
flag_ttl = "4h"

[playbooks.vllm_oom]
on = "alert_gpu_oom"
mode = { default = "predictive", escalate_on = "vllm_oom" }
window = "maintenance"
steps = [
  { canary = "judge", candidate = { delay_ms = "{data.delay_ms}" }, mode = "canary" },
  { canary = "judge", mode = "predictive" },
  { log = "promoted the candidate of intent {intent}" },
]
"#;

fn oom(d: &TestDaemon, gib: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.path("judge.log"))
        .unwrap();
    writeln!(
        f,
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {gib} GiB"
    )
    .unwrap();
}

fn status(d: &TestDaemon, id: i64) -> IntentStatus {
    d.intents().into_iter().find(|i| i.id == id).unwrap().status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_ooms_escalate_to_a_canary_that_is_promoted_and_clears_the_flag() {
    let p = Ports::pick();
    let clock = ManualClock::at("2026-11-30T04:00:00Z");
    let text = format!("{}{LOOP}", config(p, "prod_loop", "15s"));
    let d = TestDaemon::start_with(&text, Arc::new(clock.clone()), Default::default()).await;
    let _guard = UnitGuard {
        data: d.app.data_dir.clone(),
        unit: "prod_loop".into(),
    };
    wait_healthy(p.production, 20).await;
    let held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, p.first)).unwrap();

    // The first OOM proposes an intent, which runs in the default mode, predictive: the
    // canary step says what it would do and starts nothing.
    oom(&d, "2.50");
    d.wait_until("the first intent", || d.intents().len() == 1)
        .await;
    let first = d.intents()[0].id;
    d.wait_until("the first intent ran", || {
        !matches!(
            status(&d, first),
            IntentStatus::Pending | IntentStatus::Running
        )
    })
    .await;
    assert_eq!(status(&d, first), IntentStatus::Done);
    assert!(!d.path("promoted").exists(), "predictive started nothing");
    // Two more within 24 h (the rule's cooldown keeps them from proposing): the flag arms.
    oom(&d, "3.00");
    oom(&d, "4.25");
    let store = d.app.store().unwrap();
    d.wait_until("the flag armed", || {
        vigil::escalation::armed(&d.app, "vllm_oom")
            .unwrap()
            .is_some()
    })
    .await;

    // The next intent runs the playbook in canary mode, inside the window.
    let r = d
        .post(
            "/api/intents",
            &json!({"intent_type": "alert_gpu_oom", "priority": 9, "reason": "OOM again",
                    "data": {"delay_ms": 5}}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_i64()
        .unwrap();
    common::wait_within("the canary run ended", 60, || {
        !matches!(
            status(&d, id),
            IntentStatus::Pending | IntentStatus::Running
        )
    })
    .await;
    let intent = d.intents().into_iter().find(|i| i.id == id).unwrap();
    assert_eq!(intent.status, IntentStatus::Done, "{intent:?}");
    assert!(
        vigil::escalation::armed(&d.app, "vllm_oom")
            .unwrap()
            .is_none(),
        "a promoted escalated run clears the flag"
    );
    assert!(healthy(p.production).await, "production restored");
    assert_eq!(
        std::fs::read_to_string(d.path("promoted")).unwrap().trim(),
        "5"
    );

    let audit = store.audit_tail(10_000).unwrap();
    let after: Vec<_> = audit
        .iter()
        .skip_while(|e| !(e.event == "playbook_start" && e.intent == Some(id)))
        .collect();
    let events: Vec<&str> = after.iter().map(|e| e.event.as_str()).collect();
    let mut at = 0;
    for step in [
        "playbook_start",
        "canary_start",
        "quiesced_path_selected",
        "port_selected",
        "production_stopped",
        "canary_healthy",
        "canary_judged",
        "canary_stopped",
        "production_restored",
        "promoted",
        "step_ok",
        "escalation_cleared",
        "playbook_end",
    ] {
        let found = events[at..].iter().position(|e| *e == step);
        assert!(
            found.is_some(),
            "{step} after {:?} in {events:?}",
            events.get(at)
        );
        at += found.unwrap() + 1;
    }
    let start = after.iter().find(|e| e.event == "playbook_start").unwrap();
    assert_eq!(start.details["mode"], "canary");
    let port = after.iter().find(|e| e.event == "port_selected").unwrap();
    assert_eq!(port.details["port"], p.first + 1, "the first free port");
    let restored = after
        .iter()
        .find(|e| e.event == "production_restored")
        .unwrap();
    let downtime = restored.details["downtime_s"].as_f64().unwrap();
    assert!(restored.details["restore_s"].as_f64().unwrap() < 15.0);
    // The budget shows the downtime spent.
    let used = store
        .budget_usage("gpu_downtime", "2026-11-30")
        .unwrap()
        .used_ms;
    assert_eq!(used, (downtime * 1000.0) as i64);
    assert!(used > 0);
    drop(held);
    d.app.supervisor.get().unwrap().stop_all().await;
    d.stop().await;
}
