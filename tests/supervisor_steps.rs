//! Playbook steps on supervised units, run by the orchestrator: `{ unit = "stop", ... }` with
//! `downtime = true` and `{ unit = "start", ..., restore = true }` charge the downtime budget
//! like `systemd` steps; a step on a quarantined unit fails and says to release it.

mod common;

use common::supervisor::*;
use std::sync::Arc;
use vigil::intent::{queue, IntentStatus, NewIntent};
use vigil::orchestrator::Orchestrator;
use vigil::store::prelude::*;
use vigil::supervisor::UnitState;

const CONFIG: &str = r#"
[budgets.gpu_downtime]
seconds = 60

[playbooks.bounce]
on = "trigger_bounce"
budget = "gpu_downtime"
expected_downtime = "20s"
steps = [
  { unit = "stop", name = "judge", downtime = true },
  { run = ["sleep", "0.05"] },
  { unit = "start", name = "{data.unit}", restore = true },
]

[playbooks.wake]
on = "trigger_wake"
steps = [{ unit = "start", name = "broken" }]

[units.judge]
command = ["/bin/sh", "-c", "exec sleep 1000"]

[units.broken]
command = ["/bin/sh", "-c", "echo 'fatal: missing model'; exit 1"]
max_restarts = 0
"#;

fn submit(app: &vigil::app::App, intent_type: &str) -> i64 {
    let i = NewIntent {
        intent_type: intent_type.into(),
        priority: 9,
        reason: format!("test {intent_type}"),
        data: serde_json::json!({ "unit": "judge" })
            .as_object()
            .unwrap()
            .clone(),
        dedup_key: None,
        origin: "test".into(),
    };
    queue::submit(app, &i).unwrap().id()
}

#[tokio::test]
async fn unit_steps_act_through_the_supervisor_and_charge_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), CONFIG);
    let (sup, _rx) = start(&app).await;
    let sup = Arc::new(sup);
    let _ = app.supervisor.set(sup.clone());
    let before = wait(&sup, "judge", "running", |s| s.state == UnitState::Running).await;
    wait(&sup, "broken", "quarantined", |s| {
        s.state == UnitState::Quarantined
    })
    .await;

    let id = submit(&app, "trigger_bounce");
    Orchestrator::new(app.clone()).drain().await.unwrap();
    let store = app.store().unwrap();
    let i = store.intent(id).unwrap().unwrap();
    assert_eq!(i.status, IntentStatus::Done, "{:?}", i.note);
    let after = sup.status("judge").unwrap();
    assert_eq!(
        after.state,
        UnitState::Running,
        "running when the step ended"
    );
    assert_eq!(after.starts, before.starts + 1);
    assert_ne!(after.pid, before.pid);
    assert!(!alive(before.pid.unwrap()));
    let events: Vec<String> = vigil::audit::tail(&app, 10_000)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    for e in ["downtime_start", "restored", "playbook_end"] {
        assert!(events.contains(&e.to_string()), "{e} in {events:?}");
    }
    let run = &store.runs(None, i64::MIN, false).unwrap()[0];
    let u = store
        .budget_usage("gpu_downtime", run.budget_day.as_deref().unwrap())
        .unwrap();
    assert_eq!(u.reserved_ms, 0, "settled");
    assert!(u.used_ms >= 50, "down from the stop to the start: {u:?}");

    // A quarantined unit is not started by a step: it must be released first.
    let id = submit(&app, "trigger_wake");
    Orchestrator::new(app.clone()).drain().await.unwrap();
    let i = store.intent(id).unwrap().unwrap();
    assert_eq!(i.status, IntentStatus::Failed);
    assert!(
        i.note.as_deref().unwrap_or("").contains("release"),
        "{:?}",
        i.note
    );
    assert_eq!(sup.status("broken").unwrap().state, UnitState::Quarantined);
    sup.stop_all().await;
}

#[test]
fn a_systemd_steps_unit_is_its_field_and_a_unit_step_is_checked() {
    use vigil::config::{Config, ConfigError};
    let ok = Config::parse(
        "t.toml",
        "[playbooks.p]\non = \"x\"\nsteps = [{ systemd = \"stop\", unit = \"judge.service\" }, { unit = \"snapshot\", name = \"judge\" }]\n",
    );
    assert!(ok.is_ok(), "{:?}", ok.err().map(|e| e.to_string()));
    let err = match Config::parse(
        "t.toml",
        "[playbooks.p]\non = \"x\"\nsteps = [{ unit = \"explode\", name = \"judge\" }]\n",
    ) {
        Err(ConfigError::Invalid(ds)) => ds[0].to_string(),
        other => panic!("{:?}", other.map(|_| ())),
    };
    assert!(
        err.contains("not start, stop, restart, release or snapshot"),
        "{err}"
    );
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}
