//! The concerns other subsystems added to the store, on both backends (`on_both_stores!`): file
//! source checkpoints, canary runs with their budget and cooldown, and the alert outbox's
//! "being sent" mark. SQLite and PostgreSQL answer alike, or a fleet would behave differently
//! from one host.

mod common;

use vigil::store::prelude::*;
use vigil::store::{
    BudgetRequest, CanaryEnd, Checkpoint, FilePosition, NewCanaryRun, PendingAlert, Refusal, Scope,
};

fn pos(ino: u64, offset: u64) -> FilePosition {
    FilePosition {
        dev: 2049,
        ino,
        head_sha256: [ino as u8; 32],
        head_len: 1024,
        offset,
    }
}

on_both_stores!(#[test] fn checkpoints_round_trip_per_source_and_path(b) {
    let dir = tempfile::tempdir().unwrap();
    let s = b.open(dir.path());
    assert_eq!(s.checkpoint("log", "/var/log/a").unwrap(), None);
    let c = Checkpoint { file: pos(u64::MAX - 1, 10), rotated: Some(pos(7, 99)), saved_ms: 5 };
    s.save_checkpoint("log", "/var/log/a", &c).unwrap();
    assert_eq!(s.checkpoint("log", "/var/log/a").unwrap(), Some(c));
    assert_eq!(s.checkpoint("log", "/var/log/b").unwrap(), None);
    assert_eq!(s.checkpoint("other", "/var/log/a").unwrap(), None);
    let later = Checkpoint { file: pos(u64::MAX - 1, 20), rotated: None, saved_ms: 6 };
    s.save_checkpoint("log", "/var/log/a", &later).unwrap();
    assert_eq!(s.checkpoint("log", "/var/log/a").unwrap(), Some(later));
});

on_both_stores!(#[test] fn a_quiesced_canary_reserves_its_budget_settles_it_and_starts_its_cooldown(b) {
    let dir = tempfile::tempdir().unwrap();
    let s = b.open(dir.path());
    let budget = BudgetRequest { name: "gpu".into(), day: "2026-11-30".into(), limit_ms: 60_000, want_ms: 40_000, scope: Scope::Host };
    let run = NewCanaryRun {
        canary: "judge".into(),
        mode: "canary".into(),
        path: Some("quiesced".into()),
        port: Some(9011),
        budget: Some(budget.clone()),
        cooldown_ms: Some(3_600_000),
    };
    // A check without commit reserves nothing.
    assert_eq!(s.begin_canary(&run, 1_000, false).unwrap(), Ok(0));
    let id = s.begin_canary(&run, 1_000, true).unwrap().unwrap();
    assert!(id > 0);
    s.canary_restore_pending(id, 2_000).unwrap();
    let pending = s.pending_restores().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].id, pending[0].down_since, pending[0].port), (id, Some(2_000), Some(9011)));
    // 40 s reserved of 60: another 40 s does not fit.
    let other = NewCanaryRun { canary: "other".into(), cooldown_ms: None, ..run.clone() };
    match s.begin_canary(&other, 1_500, true).unwrap() {
        Err(Refusal::Budget { usage, .. }) => assert_eq!(usage.reserved_ms, 40_000),
        r => panic!("{r:?}"),
    }
    let end = CanaryEnd {
        result: "promoted".into(),
        reason: "judged equal".into(),
        duration_ms: 9_000,
        downtime_ms: 7_000,
        report: serde_json::json!({"p_value": 0.4}),
        now_ms: 10_000,
    };
    assert!(s.end_canary(id, &end).unwrap());
    assert!(!s.end_canary(id, &end).unwrap(), "the first end wins");
    assert!(s.pending_restores().unwrap().is_empty());
    let rec = s.canary_run(id).unwrap().unwrap();
    assert_eq!((rec.result.as_deref(), rec.downtime_ms, rec.restore_pending), (Some("promoted"), 7_000, false));
    assert_eq!(rec.report.unwrap()["p_value"], 0.4);
    // Settled: 7 s used, nothing reserved; 40 s fit again for another canary.
    assert!(s.begin_canary(&other, 11_000, false).unwrap().is_ok());
    // The cooldown counts from the run's start.
    assert_eq!(s.last_quiesced("judge").unwrap(), Some(1_000));
    match s.begin_canary(&run, 11_000, false).unwrap() {
        Err(Refusal::Cooldown { remaining_ms }) => assert_eq!(remaining_ms, 3_600_000 - 10_000),
        r => panic!("{r:?}"),
    }
    assert_eq!(s.canary_runs(Some("judge"), 10).unwrap().len(), 1);
    assert_eq!(s.canary_runs(None, 10).unwrap().len(), 1);
});

on_both_stores!(#[test] fn a_resolved_alert_cancels_an_unsent_violated_one_but_follows_one_being_sent(b) {
    let dir = tempfile::tempdir().unwrap();
    let s = b.open(dir.path());
    let alert = |invariant: &str, resolved: bool, at: i64| PendingAlert {
        invariant: invariant.into(),
        resolved,
        payload: format!("{{\"resolved\": {resolved}}}"),
        created_ms: at,
        next_attempt_ms: at,
    };
    // Never taken: the resolved one cancels it, nothing is left to send.
    assert!(s.queue_alert(&alert("a", false, 1)).unwrap());
    assert!(!s.queue_alert(&alert("a", true, 2)).unwrap());
    assert!(s.due_alerts(10).unwrap().is_empty());
    // Taken by a delivery round: the resolved one replaces it and goes out next.
    assert!(s.queue_alert(&alert("b", false, 3)).unwrap());
    let due = s.due_alerts(10).unwrap();
    assert_eq!(due.len(), 1);
    assert!(s.queue_alert(&alert("b", true, 4)).unwrap());
    s.alert_done("b", 3).unwrap();
    let due = s.due_alerts(10).unwrap();
    assert_eq!((due.len(), due[0].resolved, due[0].created_ms), (1, true, 4));
    // A failed round puts it back as unsent: a later resolved cancels it again.
    assert!(s.queue_alert(&alert("c", false, 5)).unwrap());
    s.due_alerts(10).unwrap();
    s.alert_later("c", 5, "{}", 20).unwrap();
    assert!(!s.queue_alert(&alert("c", true, 6)).unwrap());
});

/// Two hosts on one PostgreSQL store supervising a unit of the same name: each keeps its own
/// record (pid, quarantine), so one host never adopts, or stays quarantined by, the other's.
#[test]
fn hosts_sharing_a_store_keep_their_own_units() {
    use vigil::store::{UnitRecord, UnitStore};
    let url = common::store::fresh_postgres_url();
    let a = common::store::open_postgres(&url).with_host("a");
    let b = common::store::open_postgres(&url).with_host("b");
    let rec = |state: &str, pid: i32| UnitRecord {
        name: "judge".into(),
        state: state.into(),
        tier: 1,
        pid: Some(pid),
        start_ticks: Some(7),
        marker: None,
        restarts: vec![1, 2],
        total_restarts: 2,
        last_exit: None,
        last_error: None,
        bundle: None,
        since_ms: 5,
    };
    a.put_unit(&rec("running", 100)).unwrap();
    b.put_unit(&rec("quarantined", 200)).unwrap();
    assert_eq!(a.unit("judge").unwrap(), Some(rec("running", 100)));
    assert_eq!(b.unit("judge").unwrap(), Some(rec("quarantined", 200)));
    assert_eq!(a.units().unwrap(), vec![rec("running", 100)]);
    a.put_unit(&rec("stopped", 101)).unwrap();
    assert_eq!(b.units().unwrap(), vec![rec("quarantined", 200)]);
}
