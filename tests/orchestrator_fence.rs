//! Fencing and lock contention, in-process on the injected clock: a holder whose lease ran
//! out mid-step neither runs another step nor settles; intents that find their playbook's
//! lock held wait for it (audited once) instead of being denied, and expire past their
//! `intent_ttl`. (Two real daemons and SIGSTOP: orchestrator_cli.rs.) Every test runs on
//! SQLite and on PostgreSQL.

mod common;

use common::env::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil::clock::Clock;
use vigil::intent::IntentStatus;
use vigil::store::prelude::*;
use vigil::store::Scope;

fn count(events: &[String], name: &str) -> usize {
    events.iter().filter(|e| e.as_str() == name).count()
}

on_both_stores!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_lease_expired_mid_step_runs_nothing_more_and_cannot_settle(b) {
    // Step 1 waits for a file; step 2 would append to the log.
    let config = format!(
        r#"{BASE}
[playbooks.gpu]
on = "trigger_*"
lock = "gpu0"
steps = [
  {{ run = ["sh", "-c", "echo 1 >> {{dir}}/steps; touch {{dir}}/in-step; while [ ! -f {{dir}}/go ]; do sleep 0.02; done"], timeout = "1m" }},
  {{ run = ["sh", "-c", "echo 2 >> {{dir}}/steps"] }},
]
"#
    );
    let env = Env::on(b, &config, IN_WINDOW);
    let id = env.submit("trigger_x", 1);
    let holder = Arc::new(env.orchestrator());
    let task = {
        let holder = holder.clone();
        tokio::spawn(async move { holder.step().await })
    };
    let in_step = env.path("in-step");
    common::wait_within("step 1 to run", 10, || in_step.exists()).await;

    // No heartbeat renews the lease here: the injected clock moves past it mid-step.
    env.clock.advance(Duration::from_secs(31));
    std::fs::write(env.path("go"), "").unwrap();
    assert!(task.await.unwrap().unwrap());

    let steps = std::fs::read_to_string(env.path("steps")).unwrap();
    assert_eq!(steps, "1\n", "step 2 did not run");
    let i = env.intent(id);
    assert_eq!(i.status, IntentStatus::Running, "not settled: {:?}", i.note);
    let store = env.app.store().unwrap();
    let runs = store.runs(None, i64::MIN, false).unwrap();
    assert_eq!(
        runs[0].ended_at, None,
        "the run was not ended by the holder"
    );
    assert_eq!(store.locks().unwrap().len(), 1, "nor its lock released");
    let events = env.audit_events();
    assert_eq!(count(&events, "lease_lost"), 1, "{events:?}");
    assert_eq!(count(&events, "playbook_end"), 0, "{events:?}");
    let lost = store
        .audit_tail(100)
        .unwrap()
        .into_iter()
        .find(|e| e.event == "lease_lost")
        .unwrap();
    assert_eq!(lost.details["holder"], holder.holder());

    // Whoever recovers it ends it, once.
    assert_eq!(env.orchestrator().recover().await.unwrap(), 1);
    env.assert_status(id, IntentStatus::Failed);
    assert!(store.locks().unwrap().is_empty());
});

on_both_stores!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_loses_its_lease_mid_step_kills_the_step(b) {
    // BASE's [orchestrator] table with a 2 s lease.
    let base = BASE.replace(
        "systemctl = [\"{dir}/systemctl\"]\n",
        "systemctl = [\"{dir}/systemctl\"]\nlease = \"2s\"\n",
    );
    let config = format!(
        r#"{base}
[playbooks.gpu]
on = "trigger_*"
steps = [{{ run = ["sh", "-c", "echo $$ > {{dir}}/step.pid; exec sleep 60"], timeout = "2m" }}]
"#
    );
    let env = Env::on(b, &config, IN_WINDOW);
    let id = env.submit("trigger_x", 1);
    let holder = Arc::new(env.orchestrator());
    let started = Instant::now();
    let task = {
        let holder = holder.clone();
        tokio::spawn(async move { holder.step().await })
    };
    let pid_file = env.path("step.pid");
    common::wait_within("the step to start", 10, || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    env.clock.advance(Duration::from_secs(3));
    // The watcher looks a few times per lease (2 s): the step is killed long before its
    // 60 s sleep or 2 min timeout.
    assert!(task.await.unwrap().unwrap());
    assert!(started.elapsed() < Duration::from_secs(30));
    // SIGKILL went to its group as the step was dropped; the kernel takes a moment.
    common::wait_within("the step's process to be killed", 5, || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
            s.rsplit(')').next().unwrap().trim_start().starts_with('Z')
        })
    })
    .await;
    assert_eq!(env.status(id), IntentStatus::Running);
    assert_eq!(count(&env.audit_events(), "lease_lost"), 1);
});

fn locked_playbook() -> String {
    format!(
        r#"{BASE}
[playbooks.gpu]
on = "trigger_*"
lock = "gpu0"
steps = [{{ run = ["sh", "-c", "echo {{data.n}} >> {{dir}}/ran"] }}]
"#
    )
}

on_both_stores!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_for_one_locked_playbook_waits_for_the_lock_and_all_run(b) {
    let env = Env::on(b, &locked_playbook(), IN_WINDOW);
    let n = 50;
    let ids: Vec<i64> = (0..n).map(|i| env.submit("trigger_burst", i)).collect();
    // Four workers of one orchestrator and four of another share the store, as the daemon's
    // workers and a second daemon would.
    let orchs = [Arc::new(env.orchestrator()), Arc::new(env.orchestrator())];
    let store = env.app.store().unwrap();
    let all_done = {
        let store = store.clone();
        move || {
            store
                .intent_counts()
                .unwrap()
                .iter()
                .all(|(s, _)| s.is_finished())
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    for o in orchs.iter().flat_map(|o| std::iter::repeat_n(o.clone(), 4)) {
        let done = all_done.clone();
        tasks.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !done() {
                assert!(Instant::now() < deadline, "the burst did not finish");
                if !o.step().await.unwrap() {
                    // Nothing claimable: every pending one waits for the lock.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    for id in &ids {
        env.assert_status(*id, IntentStatus::Done);
    }
    let ran = std::fs::read_to_string(env.path("ran")).unwrap();
    assert_eq!(ran.lines().count(), n as usize, "each ran once");
    let events = env.audit_events();
    assert_eq!(count(&events, "gate_denied"), 0);
    assert_eq!(count(&events, "playbook_end"), n as usize);
    // Audited once per intent that waited, never once per retry.
    let deferred: Vec<i64> = vigil::audit::tail(&env.app, 100_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.event == "intent_deferred")
        .map(|e| e.intent.unwrap())
        .collect();
    let mut unique = deferred.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(deferred.len(), unique.len(), "{deferred:?}");
    assert_eq!(env.app.metrics.gate_denials_total.total(), 0.0);
});

on_both_stores!(#[tokio::test]
async fn intents_waiting_for_a_lock_expire_past_their_ttl_with_a_note(b) {
    let env = Env::on(b, &locked_playbook(), IN_WINDOW);
    let store = env.app.store().unwrap();
    let now = env.clock.now_ms();
    // Someone else holds gpu0 for ten hours (a long job on another vigil).
    assert!(store
        .acquire_lock("gpu0", Scope::Host, "elsewhere:1:0/99", 10 * 3_600_000, now)
        .unwrap()
        .is_ok());
    let ids: Vec<i64> = (0..3).map(|i| env.submit("trigger_x", i)).collect();
    let orch = env.orchestrator();
    assert_eq!(
        orch.drain().await.unwrap(),
        3,
        "each claimed once, then waits"
    );
    for id in &ids {
        let i = env.intent(*id);
        assert_eq!(i.status, IntentStatus::Pending);
        let note = i.note.unwrap();
        assert!(
            note.starts_with(
                "deferred: waiting for lock \"gpu0\": Lock \"gpu0\" held by elsewhere:1:0/99 for 10.0h more"
            ),
            "{note}"
        );
    }
    // While the lock is held they are not taken again: no spinning.
    assert_eq!(orch.drain().await.unwrap(), 0);
    env.advance_h(0.5);
    assert_eq!(orch.drain().await.unwrap(), 0);
    assert_eq!(count(&env.audit_events(), "intent_deferred"), 3);

    env.advance_h(0.6); // past the 1h intent_ttl
    assert_eq!(orch.drain().await.unwrap(), 3);
    for id in &ids {
        let i = env.intent(*id);
        assert_eq!(i.status, IntentStatus::Expired);
        let note = i.note.unwrap();
        assert!(note.contains("intent_ttl 1h"), "{note}");
        assert!(
            note.contains("deferred: waiting for lock \"gpu0\""),
            "{note}"
        );
    }
    assert!(!env.path("ran").exists());
});

on_both_stores!(#[tokio::test]
async fn a_deferred_intent_runs_once_the_lock_is_released(b) {
    let env = Env::on(b, &locked_playbook(), IN_WINDOW);
    let store = env.app.store().unwrap();
    assert!(store
        .acquire_lock("gpu0", Scope::Host, "elsewhere:1:0/99", 60_000, env.clock.now_ms())
        .unwrap()
        .is_ok());
    let id = env.submit("trigger_x", 7);
    let orch = env.orchestrator();
    orch.drain().await.unwrap();
    env.assert_status(id, IntentStatus::Pending);
    assert!(store.release_lock("gpu0", "elsewhere:1:0/99").unwrap());
    assert_eq!(orch.drain().await.unwrap(), 1);
    env.assert_status(id, IntentStatus::Done);
    assert_eq!(std::fs::read_to_string(env.path("ran")).unwrap(), "7\n");

    // And one whose holder stopped renewing: the lock is free once its lease ran out.
    assert!(store
        .acquire_lock("gpu0", Scope::Host, "elsewhere:1:0/100", 60_000, env.clock.now_ms())
        .unwrap()
        .is_ok());
    let id = env.submit("trigger_x", 8);
    orch.drain().await.unwrap();
    env.assert_status(id, IntentStatus::Pending);
    env.clock.advance(Duration::from_secs(61));
    assert_eq!(orch.drain().await.unwrap(), 1);
    env.assert_status(id, IntentStatus::Done);
});

on_both_stores!(#[test]
fn a_lock_is_fenced_by_its_epoch_not_only_its_holder_name(b) {
    use vigil::store::{Fence, LeaseFence, LockFence, RunEnd, RunRequest, Settled};
    let dir = tempfile::tempdir().unwrap();
    let store = b.open(dir.path());
    let intent = vigil::intent::NewIntent {
        intent_type: "trigger_x".into(),
        priority: 5,
        reason: "r".into(),
        data: Default::default(),
        dedup_key: None,
        origin: "test".into(),
    };
    let id = store.put_intent(&intent, 0, 0).unwrap().id();
    let claim = store
        .claim_intent("h:1:0", 30_000, 3_600_000, 0)
        .unwrap()
        .unwrap();
    let lease = LeaseFence {
        intent: id,
        holder: "h:1:0".into(),
        epoch: claim.epoch,
    };
    let req = RunRequest {
        intent_id: id,
        playbook: "gpu".into(),
        mode: "default".into(),
        holder: format!("h:1:0/{id}"),
        cooldown_ms: None,
        cooldown_scope: Scope::Host,
        max_runs: None,
        max_runs_scope: Scope::Host,
        lock: Some("gpu0".into()),
        lock_scope: Scope::Host,
        lease_ms: 30_000,
        budget: None,
        lease: Some(lease.clone()),
    };
    let run = store.begin_run(&req, 0, true).unwrap().unwrap();
    let fence = Fence {
        lease: lease.clone(),
        lock: Some(LockFence {
            name: "gpu0".into(),
            holder: run.holder.clone(),
            epoch: run.lock_epoch,
        }),
    };
    assert!(store.check_fence(&fence, 10_000).unwrap());

    // The lease ran out (the holder was stopped); the lock was taken again under the same
    // holder name: a different acquisition.
    assert!(store
        .acquire_lock("gpu0", Scope::Host, &run.holder, 30_000, 31_000)
        .unwrap()
        .is_ok());
    assert!(!store.check_fence(&fence, 31_000).unwrap());
    assert!(!store.run_progress(run.id, 1, None, &fence, 31_000).unwrap());
    assert_eq!(
        store.run(run.id).unwrap().unwrap().step,
        0,
        "nothing written"
    );
    let audit = vigil::audit::AuditEntry {
        ts: 31_000,
        event: "playbook_end".into(),
        intent: Some(id),
        playbook: Some("gpu".into()),
        details: serde_json::json!({}),
    };
    let mut end = RunEnd {
        run_id: run.id,
        downtime_ms: 0,
        intent_id: id,
        status: IntentStatus::Done,
        note: "ran",
        now_ms: 31_000,
        fence: Some(&fence),
    };
    assert_eq!(store.settle_run(&end, &audit).unwrap(), Settled::LeaseLost);
    assert_eq!(
        store.intent(id).unwrap().unwrap().status,
        IntentStatus::Running
    );

    // Ended without a fence (as a recovery would, under its own lease): the run's own
    // acquisition is gone already, the newer one stays.
    end.fence = None;
    assert_eq!(store.settle_run(&end, &audit).unwrap(), Settled::Ended);
    let locks = store.locks().unwrap();
    assert_eq!(locks.len(), 1, "the newer acquisition is not released");
    assert!(locks[0].epoch > run.lock_epoch);
    // And a begin_run under a lease that was taken over records nothing.
    let id2 = store
        .put_intent(
            &vigil::intent::NewIntent {
                reason: "second".into(),
                dedup_key: Some("2".into()),
                ..intent
            },
            40_000,
            0,
        )
        .unwrap()
        .id();
    let c2 = store
        .claim_intent("h:1:0", 30_000, 3_600_000, 40_000)
        .unwrap()
        .unwrap();
    assert_eq!(c2.id, id2);
    let epoch = store
        .take_over_intent(id2, Some("h:1:0"), "other:2:0", 30_000, 41_000)
        .unwrap()
        .unwrap();
    assert!(epoch > c2.epoch);
    let stale = RunRequest {
        intent_id: id2,
        lock: None,
        lease: Some(LeaseFence {
            intent: id2,
            holder: "h:1:0".into(),
            epoch: c2.epoch,
        }),
        ..req
    };
    assert_eq!(
        store.begin_run(&stale, 41_000, true).unwrap().unwrap_err(),
        vigil::store::Refusal::LeaseLost
    );
    assert_eq!(store.runs(None, i64::MIN, false).unwrap().len(), 1);
});
