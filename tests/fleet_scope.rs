//! Scopes, on both stores: hosts `a` and `b` sharing one store each have their own host-scoped
//! budget, lock, cooldown, rate limit and escalation flag, and share the fleet-scoped ones. A
//! fleet lock whose holder stopped renewing it stays held (that host may still be acting)
//! until the holder's run is settled; a host lock's lapsed lease frees it, as on one host.

mod common;

use vigil::escalation::SymptomPolicy;
use vigil::store::prelude::*;
use vigil::store::{
    AnyStore, BudgetRequest, BudgetUsage, Refusal, RunRecord, RunRequest, Scope, Settled,
};

const DAY: &str = "2026-11-30";

fn two_hosts(b: common::store::Backend, dir: &std::path::Path) -> (AnyStore, AnyStore) {
    let place = b.place(dir);
    (place.open_as("a"), place.open_as("b"))
}

/// A run of `playbook` by `host` wanting what `with` sets (nothing by default).
fn request(host: &str, intent: i64, with: impl FnOnce(&mut RunRequest)) -> RunRequest {
    let mut r = RunRequest {
        intent_id: intent,
        playbook: "restart".into(),
        mode: "canary".into(),
        holder: format!("{host}:1:0/{intent}"),
        cooldown_ms: None,
        cooldown_scope: Scope::Host,
        max_runs: None,
        max_runs_scope: Scope::Host,
        lock: None,
        lock_scope: Scope::Host,
        lease_ms: 30_000,
        budget: None,
        lease: None,
    };
    with(&mut r);
    r
}

fn budget(want_s: i64, scope: Scope) -> Option<BudgetRequest> {
    Some(BudgetRequest {
        name: "gpu_downtime".into(),
        day: DAY.into(),
        limit_ms: 60_000,
        want_ms: want_s * 1000,
        scope,
    })
}

fn refused_budget(r: Result<RunRecord, Refusal>) -> BudgetUsage {
    match r {
        Err(Refusal::Budget { usage, .. }) => usage,
        other => panic!("expected a budget refusal, got {other:?}"),
    }
}

on_both_stores!(#[test] fn a_host_budget_is_each_hosts_and_a_fleet_budget_is_everyones(b) {
    let dir = tempfile::tempdir().unwrap();
    let (a, bh) = two_hosts(b, dir.path());
    // Host scope: 40 s on a leaves b's 60 s whole, and a's own 20 s.
    let host_a = a.begin_run(&request("a", 1, |r| r.budget = budget(40, Scope::Host)), 0, true).unwrap().unwrap();
    assert_eq!(host_a.budget_scope, "a");
    bh.begin_run(&request("b", 2, |r| r.budget = budget(40, Scope::Host)), 0, true).unwrap().unwrap();
    let usage = refused_budget(a.begin_run(&request("a", 3, |r| r.budget = budget(40, Scope::Host)), 0, true).unwrap());
    assert_eq!(usage, BudgetUsage { used_ms: 0, reserved_ms: 40_000 });
    common::store::settle(&a, &host_a, 0, 1);
    common::store::settle(&bh, &bh.runs(None, i64::MIN, true).unwrap()[0], 0, 1);

    // Fleet scope, another day: b sees a's reservation and its 40 s do not fit.
    let fleet = |want_s| {
        let mut b = budget(want_s, Scope::Fleet);
        b.as_mut().unwrap().day = "2026-12-01".into();
        b
    };
    let fa = a.begin_run(&request("a", 4, |r| r.budget = fleet(40)), 0, true).unwrap().unwrap();
    assert_eq!(fa.budget_scope, "*");
    let usage = refused_budget(bh.begin_run(&request("b", 5, |r| r.budget = fleet(40)), 0, true).unwrap());
    assert_eq!(usage, BudgetUsage { used_ms: 0, reserved_ms: 40_000 });
    let fb = bh.begin_run(&request("b", 6, |r| r.budget = fleet(20)), 0, true).unwrap().unwrap();
    // a's run settles with 12 s of real downtime: 12 used, b's 20 still reserved, and 28 free.
    assert_eq!(common::store::settle(&a, &fa, 12_000, 1), Settled::Ended);
    assert_eq!(bh.budget_usage("gpu_downtime", "2026-12-01").unwrap(), BudgetUsage { used_ms: 12_000, reserved_ms: 20_000 });
    let usage = refused_budget(a.begin_run(&request("a", 7, |r| r.budget = fleet(29)), 1, true).unwrap());
    assert_eq!(usage, BudgetUsage { used_ms: 12_000, reserved_ms: 20_000 });
    a.begin_run(&request("a", 8, |r| r.budget = fleet(28)), 1, true).unwrap().unwrap();
    common::store::settle(&bh, &fb, 0, 2);
});

on_both_stores!(#[test] fn a_fleet_lock_is_one_for_all_hosts_and_is_not_taken_over_when_it_lapses(b) {
    let dir = tempfile::tempdir().unwrap();
    let (a, bh) = two_hosts(b, dir.path());
    fn lock(name: &'static str, scope: Scope) -> impl FnOnce(&mut RunRequest) {
        move |r| { r.lock = Some(name.into()); r.lock_scope = scope }
    }
    // Host locks of one name: each host has its own.
    a.begin_run(&request("a", 1, lock("gpu", Scope::Host)), 0, true).unwrap().unwrap();
    bh.begin_run(&request("b", 2, lock("gpu", Scope::Host)), 0, true).unwrap().unwrap();
    // The fleet lock: b waits for a.
    let held = a.begin_run(&request("a", 3, lock("rolling", Scope::Fleet)), 0, true).unwrap().unwrap();
    match bh.begin_run(&request("b", 4, lock("rolling", Scope::Fleet)), 0, true).unwrap() {
        Err(Refusal::Lock { holder, remaining_ms, .. }) => {
            assert_eq!(holder, "a:1:0/3");
            assert_eq!(remaining_ms, 30_000);
        }
        other => panic!("expected the fleet lock held, got {other:?}"),
    }
    let mut scopes: Vec<(String, String)> = a.locks().unwrap().into_iter().map(|l| (l.name, l.scope)).collect();
    scopes.sort();
    let want: Vec<(String, String)> = [("gpu", "a"), ("gpu", "b"), ("rolling", "*")]
        .iter().map(|(n, s)| (n.to_string(), s.to_string())).collect();
    assert_eq!(scopes, want);

    // Host a goes silent: its leases lapse at 30 s. Its host lock is free again for another
    // of a's own runs, but b does not take the fleet lock: a may still be acting.
    a.begin_run(&request("a", 5, lock("gpu", Scope::Host)), 40_000, true).unwrap().unwrap();
    match bh.begin_run(&request("b", 6, lock("rolling", Scope::Fleet)), 40_000, true).unwrap() {
        Err(Refusal::Lock { holder, remaining_ms, acquired_at, .. }) => {
            assert_eq!((holder.as_str(), remaining_ms, acquired_at), ("a:1:0/3", -10_000, 0));
        }
        other => panic!("a lapsed fleet lock must stay held, got {other:?}"),
    }
    // a returns and settles its run: the lock is b's to take.
    assert_eq!(common::store::settle(&a, &held, 0, 41_000), Settled::Ended);
    bh.begin_run(&request("b", 6, lock("rolling", Scope::Fleet)), 41_000, true).unwrap().unwrap();
});

on_both_stores!(#[test] fn cooldowns_and_rate_limits_count_the_hosts_or_the_fleets_runs(b) {
    let dir = tempfile::tempdir().unwrap();
    let (a, bh) = two_hosts(b, dir.path());
    let cooldown = |scope| move |r: &mut RunRequest| { r.cooldown_ms = Some(3_600_000); r.cooldown_scope = scope };
    a.begin_run(&request("a", 1, cooldown(Scope::Host)), 0, true).unwrap().unwrap();
    // Host scope: b's cooldown has not started; a's has.
    bh.begin_run(&request("b", 2, cooldown(Scope::Host)), 1_000, true).unwrap().unwrap();
    assert!(matches!(
        a.begin_run(&request("a", 3, cooldown(Scope::Host)), 1_000, true).unwrap(),
        Err(Refusal::Cooldown { remaining_ms: 3_599_000 })
    ));
    // Fleet scope: b's run 1 s ago holds every host's.
    assert!(matches!(
        a.begin_run(&request("a", 3, cooldown(Scope::Fleet)), 2_000, true).unwrap(),
        Err(Refusal::Cooldown { remaining_ms: 3_599_000 })
    ));

    let limit = |scope| move |r: &mut RunRequest| { r.playbook = "drain".into(); r.max_runs = Some((2, 3_600_000)); r.max_runs_scope = scope };
    a.begin_run(&request("a", 10, limit(Scope::Host)), 0, true).unwrap().unwrap();
    a.begin_run(&request("a", 11, limit(Scope::Host)), 0, true).unwrap().unwrap();
    bh.begin_run(&request("b", 12, limit(Scope::Host)), 0, true).unwrap().unwrap();
    assert!(matches!(
        a.begin_run(&request("a", 13, limit(Scope::Host)), 0, true).unwrap(),
        Err(Refusal::RateLimit { runs: 2, max: 2, .. })
    ));
    assert!(matches!(
        bh.begin_run(&request("b", 14, limit(Scope::Fleet)), 0, true).unwrap(),
        Err(Refusal::RateLimit { runs: 3, max: 2, .. })
    ));
});

on_both_stores!(#[test] fn escalation_counts_a_hosts_symptoms_or_the_fleets(b) {
    let dir = tempfile::tempdir().unwrap();
    let (a, bh) = two_hosts(b, dir.path());
    let policy = |scope| SymptomPolicy { window_ms: 24 * 3_600_000, threshold: 3, ttl_ms: 4 * 3_600_000, scope };
    let meta = Default::default();
    // Host scope: two on a and two on b arm nothing; a's third arms a's flag only.
    for t in 0..2 {
        assert!(a.record_symptom("vllm_oom", &meta, t, policy(Scope::Host)).unwrap().armed.is_none());
        assert!(bh.record_symptom("vllm_oom", &meta, t, policy(Scope::Host)).unwrap().armed.is_none());
    }
    let third = a.record_symptom("vllm_oom", &meta, 10, policy(Scope::Host)).unwrap();
    assert_eq!((third.count, third.armed.is_some()), (3, true));
    assert!(a.flags().unwrap().iter().any(|f| f.kind == "vllm_oom" && f.is_armed(11)));
    assert!(bh.flags().unwrap().is_empty(), "{:?}", bh.flags().unwrap());

    // Fleet scope: two on a and one on b arm one flag every host sees; b clears it for all.
    for t in 0..2 {
        a.record_symptom("xid_error", &meta, t, policy(Scope::Fleet)).unwrap();
    }
    let armed = bh.record_symptom("xid_error", &meta, 5, policy(Scope::Fleet)).unwrap();
    assert_eq!((armed.count, armed.armed.is_some()), (3, true));
    let armed_on = |s: &AnyStore, now| s.flags().unwrap().iter().any(|f| f.kind == "xid_error" && f.is_armed(now));
    assert!(armed_on(&a, 6) && armed_on(&bh, 6));
    assert!(bh.clear_flag("xid_error", Scope::Fleet, 7).unwrap().is_some());
    assert!(!armed_on(&a, 8));
    // Symptoms before the clear no longer count, on any host.
    assert_eq!(a.record_symptom("xid_error", &meta, 9, policy(Scope::Fleet)).unwrap().count, 1);
});
