//! Escalation: a flag armed on the 3rd symptom (not the 2nd), expired after its TTL, and
//! cleared by a successful escalated run, which switches the playbook's mode back. On SQLite
//! and on PostgreSQL.

mod common;

use common::env::*;
use serde_json::json;
use vigil::escalation;
use vigil::intent::IntentStatus;

const PLAYBOOK: &str = r#"
[playbooks.vllm_oom]
on = "alert_gpu_oom"
mode = { default = "predictive", escalate_on = "vllm_oom" }
window = "maintenance"
budget = "gpu_downtime"
steps = [
  { run = ["{dir}/record", "fit-check", "{mode}"], mode = "predictive" },
  { systemd = "stop", unit = "judge.service", downtime = true, mode = "canary" },
  { run = ["{dir}/record", "tune", "{mode}"], mode = "canary" },
  { systemd = "start", unit = "judge.service", restore = true, mode = "canary" },
]
"#;

fn env(b: Backend) -> Env {
    let env = Env::on(b, &format!("{BASE}{PLAYBOOK}"), IN_WINDOW);
    script(
        &env.path("record"),
        &format!("echo \"$@\" >> {}", env.path("record.log").display()),
    );
    env
}

fn record(env: &Env, n: u32) -> escalation::SymptomRecorded {
    escalation::record(
        &env.app,
        "vllm_oom",
        json!({"n": n}).as_object().unwrap().clone(),
    )
    .unwrap()
}

on_both_stores!(#[test]
fn armed_on_the_third_symptom_not_the_second_and_expires_after_its_ttl(b) {
    let env = env(b);
    assert!(record(&env, 1).armed.is_none());
    env.advance_h(1.0);
    let second = record(&env, 2);
    assert_eq!(second.count, 2);
    assert!(second.armed.is_none());
    assert!(escalation::armed(&env.app, "vllm_oom").unwrap().is_none());
    env.advance_h(1.0);
    let third = record(&env, 3);
    let flag = third.armed.expect("armed on the third");
    assert_eq!(flag.reason, "3 vllm_oom in last 24h (threshold: 3)");
    assert_eq!(flag.symptom_count, 3);
    assert_eq!(flag.expires_at - flag.armed_at, 4 * 3600 * 1000);
    assert_eq!(env.app.metrics.escalation_flag.get(&["vllm_oom"]), 1.0);
    assert_eq!(env.app.metrics.symptoms_total.get(&["vllm_oom"]), 3.0);

    let status = escalation::status(&env.app).unwrap();
    assert_eq!(status.len(), 1);
    assert!(status[0].armed);
    assert_eq!(status[0].symptom_count, 3);

    env.advance_h(3.99);
    assert!(escalation::armed(&env.app, "vllm_oom").unwrap().is_some());
    env.advance_h(0.02);
    assert!(
        escalation::armed(&env.app, "vllm_oom").unwrap().is_none(),
        "expired after 4h"
    );
    assert!(!escalation::status(&env.app).unwrap()[0].armed);
    let events = env.audit_events();
    assert_eq!(
        events.iter().filter(|e| *e == "escalation_armed").count(),
        1
    );
});

on_both_stores!(#[test]
fn symptoms_outside_the_window_do_not_count(b) {
    let env = env(b);
    record(&env, 1);
    record(&env, 2);
    env.advance_h(24.5);
    let r = record(&env, 3);
    assert_eq!(r.count, 1);
    assert!(r.armed.is_none());
});

on_both_stores!(#[tokio::test]
async fn a_successful_escalated_run_clears_the_flag_and_the_mode_reverts(b) {
    let env = env(b);
    let orch = env.orchestrator();

    let id = env.submit("alert_gpu_oom", 1);
    orch.drain().await.unwrap();
    assert_eq!(env.status(id), IntentStatus::Done);
    assert_eq!(
        env.systemctl_log(),
        "",
        "predictive mode takes nothing down"
    );

    for n in 0..3 {
        record(&env, n);
    }
    assert!(escalation::armed(&env.app, "vllm_oom").unwrap().is_some());
    let id = env.submit("alert_gpu_oom", 2);
    orch.drain().await.unwrap();
    env.assert_status(id, IntentStatus::Done);
    assert_eq!(
        env.systemctl_log(),
        "stop judge.service\nstart judge.service\n"
    );
    assert!(
        escalation::armed(&env.app, "vllm_oom").unwrap().is_none(),
        "cleared by the successful escalated run"
    );
    assert_eq!(env.app.metrics.escalation_flag.get(&["vllm_oom"]), 0.0);
    assert_eq!(
        env.app
            .metrics
            .playbook_runs_total
            .get(&["vllm_oom", "done", "canary"]),
        1.0
    );

    // Back to predictive; the symptoms that armed the flag no longer count.
    let id = env.submit("alert_gpu_oom", 3);
    orch.drain().await.unwrap();
    assert_eq!(env.status(id), IntentStatus::Done);
    assert_eq!(
        std::fs::read_to_string(env.path("record.log")).unwrap(),
        "fit-check predictive\ntune canary\nfit-check predictive\n"
    );
    assert!(record(&env, 9).armed.is_none());
    let events = env.audit_events();
    for e in [
        "escalation_armed",
        "downtime_start",
        "restored",
        "escalation_cleared",
    ] {
        assert!(events.contains(&e.to_string()), "{e} in {events:?}");
    }
});

on_both_stores!(#[tokio::test]
async fn an_expired_flag_is_ignored(b) {
    let env = env(b);
    env.clock.set("2026-11-23T04:00:00Z".parse().unwrap()); // 23:00 the evening before
    for n in 0..3 {
        record(&env, n);
    }
    env.advance_h(4.5); // 03:30, in the window, the flag 30 min past its TTL
    let id = env.submit("alert_gpu_oom", 1);
    env.orchestrator().drain().await.unwrap();
    assert_eq!(env.status(id), IntentStatus::Done);
    assert_eq!(env.systemctl_log(), "", "ran in predictive mode");
});

/// Rows of the tables `prune` trims, counted in the store itself.
fn rows(env: &Env) -> [i64; 4] {
    ["symptoms", "runs", "budget_ledger", "audit"].map(|t| env.count_rows(t))
}

on_both_stores!(#[tokio::test]
async fn old_symptoms_runs_and_audit_rows_are_pruned_but_recent_ones_stay(b) {
    use vigil::store::prelude::*;
    let env = env(b);
    record(&env, 1);
    let old = env.submit("alert_gpu_oom", 1);
    env.orchestrator().drain().await.unwrap();
    env.assert_status(old, IntentStatus::Done);
    let [_, _, _, old_audit] = rows(&env);
    assert!(old_audit >= 3, "symptom, start and end of the run audited");
    // 31 days on (retention 30 d, the longest keep here): the same again.
    env.advance_h(31.0 * 24.0);
    record(&env, 2);
    let recent = env.submit("alert_gpu_oom", 2);
    env.orchestrator().drain().await.unwrap();
    env.assert_status(recent, IntentStatus::Done);
    let before = rows(&env);
    assert_eq!(before[..2], [2, 2], "two symptoms, two runs");

    let pruned = vigil::orchestrator::prune(&env.app).unwrap();
    let after = rows(&env);
    assert_eq!(after[..2], [1, 1], "the old symptom and the old run went");
    assert_eq!(
        after[3],
        before[3] - old_audit,
        "exactly the old audit rows went"
    );
    let gone: i64 = before.iter().zip(&after).map(|(b, a)| b - a).sum();
    assert_eq!(pruned as i64, gone, "prune counts what it deleted");
    let store = env.app.store().unwrap();
    let left = store.symptoms(None, i64::MIN, 100).unwrap();
    assert_eq!(left[0].meta["n"], 2);
    let runs = store.runs(None, i64::MIN, false).unwrap();
    assert_eq!(runs[0].intent_id, recent, "the recent run stays");
});

on_both_stores!(#[tokio::test]
async fn symptom_and_clear_escalation_steps(b) {
    let config = format!(
        r#"{BASE}
[playbooks.observe]
on = "alert_oom_seen"
steps = [{{ symptom = "vllm_oom" }}]

[playbooks.reset]
on = "trigger_reset"
steps = [{{ clear_escalation = "vllm_oom" }}, {{ log = "reset by {{reason}}" }}]
"#
    );
    let env = Env::on(b, &config, IN_WINDOW);
    let orch = env.orchestrator();
    for n in 0..3 {
        env.submit("alert_oom_seen", n);
    }
    orch.drain().await.unwrap();
    let flag = escalation::armed(&env.app, "vllm_oom")
        .unwrap()
        .expect("armed by the steps");
    assert_eq!(flag.symptom_count, 3);
    let symptoms =
        vigil::store::EscalationStore::symptoms(&*env.app.store().unwrap(), None, i64::MIN, 10)
            .unwrap();
    assert!(
        symptoms.iter().all(|s| s.meta.contains_key("intent")),
        "{symptoms:?}"
    );

    let id = env.submit("trigger_reset", 1);
    orch.drain().await.unwrap();
    assert_eq!(env.status(id), vigil::intent::IntentStatus::Done);
    assert!(escalation::armed(&env.app, "vllm_oom").unwrap().is_none());
});
