//! Gates: the maintenance window (edges, both DST nights, across midnight), the budget under
//! 100 concurrent attempts, cooldown and rate limit, and the lock across processes. Every
//! test of the store's gates runs on SQLite and on PostgreSQL (`on_both_stores!`).

mod common;

use common::env::*;
use common::store::Place;
use jiff::civil::date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use std::sync::{Arc, Barrier};
use vigil::audit::AuditEntry;
use vigil::intent::IntentStatus;
use vigil::orchestrator::config::WindowSpan;
use vigil::orchestrator::gates::{Denial, Gate};
use vigil::orchestrator::window;
use vigil::store::prelude::*;
use vigil::store::Scope;
use vigil::store::{AnyStore, BudgetRequest, RunEnd, RunRecord, RunRequest, Settled};

fn ny() -> TimeZone {
    TimeZone::get("America/New_York").unwrap()
}

/// The instant of a local wall-clock time in New York.
fn local(y: i16, m: i8, d: i8, h: i8, min: i8, s: i8) -> Timestamp {
    date(y, m, d)
        .at(h, min, s, 0)
        .to_zoned(ny())
        .unwrap()
        .timestamp()
}

fn span(text: &str) -> WindowSpan {
    WindowSpan::parse(text).unwrap()
}

fn edges(y: i16, m: i8, d: i8) {
    let w = span("03:00-07:00");
    let tz = ny();
    let open = local(y, m, d, 3, 0, 0);
    let close = local(y, m, d, 7, 0, 0);
    let second = SignedDuration::from_secs(1);
    // One second before 03:00 is 02:59:59 (or, on the spring-forward night, 01:59:59 EST).
    assert!(
        !window::contains(w, &tz, open - second),
        "{y}-{m}-{d} 02:59:59"
    );
    assert!(window::contains(w, &tz, open), "{y}-{m}-{d} 03:00");
    assert!(
        window::contains(w, &tz, close - second),
        "{y}-{m}-{d} 06:59:59"
    );
    assert!(!window::contains(w, &tz, close), "{y}-{m}-{d} 07:00");
    assert_eq!(
        window::window_day(w, &tz, open).to_string(),
        format!("{y}-{m:02}-{d:02}")
    );
}

#[test]
fn window_edges_on_an_ordinary_night() {
    edges(2026, 11, 23);
}

#[test]
fn window_edges_on_the_spring_forward_night() {
    // 2026-03-08: 02:00 EST jumps to 03:00 EDT, so 03:00 comes one second after 01:59:59.
    edges(2026, 3, 8);
    let tz = ny();
    let before = local(2026, 3, 8, 1, 59, 59);
    assert_eq!(
        local(2026, 3, 8, 3, 0, 0).duration_since(before),
        SignedDuration::from_secs(1)
    );
    assert!(!window::contains(span("03:00-07:00"), &tz, before));
}

#[test]
fn window_edges_on_the_fall_back_night() {
    // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:00-02:00 happens twice, outside the
    // window both times.
    edges(2026, 11, 1);
    let tz = ny();
    let first_130 = "2026-11-01T05:30:00Z".parse::<Timestamp>().unwrap(); // 01:30 EDT
    let second_130 = "2026-11-01T06:30:00Z".parse::<Timestamp>().unwrap(); // 01:30 EST
    assert!(!window::contains(span("03:00-07:00"), &tz, first_130));
    assert!(!window::contains(span("03:00-07:00"), &tz, second_130));
    assert!(window::contains(span("01:00-02:00"), &tz, first_130));
    assert!(window::contains(span("01:00-02:00"), &tz, second_130));
}

#[test]
fn window_across_midnight_is_one_window_day() {
    let w = span("22:00-02:00");
    let tz = ny();
    let second = SignedDuration::from_secs(1);
    let open = local(2026, 11, 23, 22, 0, 0);
    let close = local(2026, 11, 24, 2, 0, 0);
    assert!(!window::contains(w, &tz, open - second));
    assert!(window::contains(w, &tz, open));
    assert!(window::contains(w, &tz, local(2026, 11, 24, 0, 0, 0)));
    assert!(window::contains(w, &tz, close - second));
    assert!(!window::contains(w, &tz, close));
    // Before midnight and after it, the downtime is charged to the same night.
    assert_eq!(window::window_day(w, &tz, open).to_string(), "2026-11-23");
    assert_eq!(
        window::window_day(w, &tz, close - second).to_string(),
        "2026-11-23"
    );
    // Outside, "tonight" is the next window.
    assert_eq!(
        window::window_day(w, &tz, local(2026, 11, 24, 12, 0, 0)).to_string(),
        "2026-11-24"
    );
}

const WINDOWED: &str = r#"
[playbooks.tune]
on = "alert_*"
window = "maintenance"
steps = [{ log = "tuning for {reason}" }]
"#;

on_both_stores!(#[tokio::test]
async fn outside_the_window_the_intent_is_denied_with_the_reason(b) {
    let env = Env::on(b, &format!("{BASE}{WINDOWED}"), "2026-11-23T12:30:00Z"); // 07:30 EST
    let id = env.submit("alert_gpu_oom", 1);
    env.orchestrator().drain().await.unwrap();
    let i = env.intent(id);
    assert_eq!(i.status, IntentStatus::Denied);
    let note = i.note.unwrap();
    assert!(
        note.contains("window gate: Outside maintenance window maintenance (03:00-07:00 America/New_York): opens in 19.5h"),
        "{note}"
    );
    assert_eq!(env.app.metrics.gate_denials_total.get(&["window"]), 1.0);

    env.clock.set(local(2026, 11, 24, 3, 0, 0));
    let id = env.submit("alert_gpu_oom", 2);
    env.orchestrator().drain().await.unwrap();
    assert_eq!(env.status(id), IntentStatus::Done);
    let events = env.audit_events();
    assert!(events.contains(&"gate_denied".to_string()), "{events:?}");
    assert!(events.contains(&"playbook_start".to_string()), "{events:?}");
    assert!(events.contains(&"step_ok".to_string()), "{events:?}");
});

const LIMITED: &str = r#"
[playbooks.tune]
on = "alert_gpu_oom"
cooldown = "6h"
max_runs = { count = 3, within = "24h" }
steps = [{ log = "tuning" }]
"#;

on_both_stores!(#[tokio::test]
async fn cooldown_and_rate_limit(b) {
    let env = Env::on(b, &format!("{BASE}{LIMITED}"), IN_WINDOW);
    let orch = env.orchestrator();
    let run = |n: u32| {
        let id = env.submit("alert_gpu_oom", n);
        (id, orch.drain())
    };
    let (first, d) = run(1);
    d.await.unwrap();
    assert_eq!(env.status(first), IntentStatus::Done);

    env.advance_h(1.8);
    let (id, d) = run(2);
    d.await.unwrap();
    let i = env.intent(id);
    assert_eq!(i.status, IntentStatus::Denied);
    assert_eq!(
        i.note.as_deref(),
        Some("cooldown gate: Cooldown active: 4.2h remaining")
    );

    // Runs at 0h, 6h and 12h; at 18h the fourth within 24h is refused.
    for (n, wait) in [(3, 4.2), (4, 6.0)] {
        env.advance_h(wait);
        let (id, d) = run(n);
        d.await.unwrap();
        assert_eq!(env.status(id), IntentStatus::Done, "run {n}");
    }
    env.advance_h(6.0);
    let (id, d) = run(5);
    d.await.unwrap();
    let note = env.intent(id).note.unwrap();
    assert!(
        note.starts_with(
            "rate_limit gate: Rate limit: 3 runs in the last 24.0h (max 3); next allowed in 6.0h"
        ),
        "{note}"
    );
    env.advance_h(6.0);
    let (id, d) = run(6);
    d.await.unwrap();
    assert_eq!(env.status(id), IntentStatus::Done);
    assert_eq!(env.app.metrics.gate_denials_total.get(&["cooldown"]), 1.0);
    assert_eq!(env.app.metrics.gate_denials_total.get(&["rate_limit"]), 1.0);
});

fn budget_request(intent: i64, want_s: i64) -> RunRequest {
    RunRequest {
        intent_id: intent,
        playbook: "canary".into(),
        mode: "canary".into(),
        holder: format!("t:{intent}"),
        cooldown_ms: None,
        cooldown_scope: Scope::Host,
        max_runs: None,
        max_runs_scope: Scope::Host,
        lock: None,
        lock_scope: Scope::Host,
        lease_ms: 30_000,
        budget: Some(BudgetRequest {
            name: "gpu_downtime".into(),
            day: "2026-11-23".into(),
            limit_ms: 60_000,
            want_ms: want_s * 1000,
            scope: Scope::Host,
        }),
        lease: None,
    }
}

on_both_stores!(#[test]
fn a_hundred_racing_attempts_never_overspend_the_budget(b) {
    let dir = tempfile::tempdir().unwrap();
    let place = b.place(dir.path());
    let stores = hosts(&place, 100);
    let barrier = Arc::new(Barrier::new(100));
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let (store, barrier) = (stores[i as usize % stores.len()].clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store
                    .begin_run(&budget_request(i, 15), 1_000, true)
                    .unwrap()
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let granted: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let denied: Vec<Denial> = results
        .iter()
        .filter_map(|r| r.as_ref().err().cloned().map(Denial::from))
        .collect();
    assert_eq!(granted.len(), 4, "60 s fits four 15 s reservations");
    assert_eq!(denied.len(), 96);
    assert!(denied.iter().all(|d| d.gate == Gate::Budget));
    assert!(
        denied[0]
            .reason
            .contains("cannot cover 15.0s: 0.0s used, 60.0s reserved of 60.0s"),
        "{}",
        denied[0].reason
    );
    let store = place.open();
    let u = store.budget_usage("gpu_downtime", "2026-11-23").unwrap();
    assert_eq!((u.used_ms, u.reserved_ms), (0, 60_000));

    // Settling charges what was actually down and frees the rest of the reservation.
    for r in &granted {
        assert!(settle(&store, r, 10_000, 2_000));
        assert!(!settle(&store, r, 10_000, 2_000), "settles once");
    }
    let u = store.budget_usage("gpu_downtime", "2026-11-23").unwrap();
    assert_eq!((u.used_ms, u.reserved_ms), (40_000, 0));
    assert!(store
        .begin_run(&budget_request(200, 15), 3_000, true)
        .unwrap()
        .is_ok());
    assert!(store
        .begin_run(&budget_request(201, 15), 3_000, true)
        .unwrap()
        .is_err());
    // Another night has its own budget.
    let mut other = budget_request(202, 15);
    other.budget.as_mut().unwrap().day = "2026-11-24".into();
    assert!(store.begin_run(&other, 3_000, true).unwrap().is_ok());
});

/// Stores for `threads` racing threads, each opened apart as another process (host) would:
/// one per thread on SQLite, eight on PostgreSQL (each a pool of connections; a hundred would
/// take every connection the test server allows).
fn hosts(place: &Place, threads: usize) -> Vec<Arc<AnyStore>> {
    let n = match place {
        Place::Sqlite(_) => threads,
        Place::Postgres(_) => 8,
    };
    (0..n).map(|_| Arc::new(place.open())).collect()
}

/// Settles `run` as done with `downtime_ms`; false when it had already ended.
fn settle(store: &AnyStore, run: &RunRecord, downtime_ms: i64, now_ms: i64) -> bool {
    common::store::settle(store, run, downtime_ms, now_ms) == Settled::Ended
}

on_both_stores!(#[test]
fn a_dry_run_reserves_nothing(b) {
    let dir = tempfile::tempdir().unwrap();
    let store = b.open(dir.path());
    for i in 0..10 {
        assert!(store
            .begin_run(&budget_request(i, 15), 0, false)
            .unwrap()
            .is_ok());
    }
    let u = store.budget_usage("gpu_downtime", "2026-11-23").unwrap();
    assert_eq!((u.used_ms, u.reserved_ms), (0, 0));
    assert!(store.runs(None, i64::MIN, false).unwrap().is_empty());
});

/// Whether `holder` got lock `name` (a store error fails the test).
fn acquired(store: &AnyStore, name: &str, holder: &str, lease_ms: i64, now_ms: i64) -> bool {
    store
        .acquire_lock(name, Scope::Host, holder, lease_ms, now_ms)
        .unwrap()
        .is_ok()
}

on_both_stores!(#[test]
fn a_lock_has_one_holder_until_its_lease_expires(b) {
    let dir = tempfile::tempdir().unwrap();
    let place = b.place(dir.path());
    let stores = hosts(&place, 50);
    let barrier = Arc::new(Barrier::new(50));
    let got: usize = (0..50)
        .map(|i| {
            let (store, barrier) = (stores[i % stores.len()].clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                acquired(&store, "gpu0", &format!("h{i}"), 30_000, 0)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap() as usize)
        .sum();
    assert_eq!(got, 1);
    let store = place.open();
    let holder = store.locks().unwrap()[0].holder.clone();
    assert!(!acquired(&store, "gpu0", "late", 30_000, 29_999));
    // The holder died and stopped renewing: after the lease the lock is free.
    assert!(acquired(&store, "gpu0", "late", 30_000, 30_001));
    assert!(
        !store.release_lock("gpu0", &holder).unwrap(),
        "no longer the holder"
    );
    assert!(store.release_lock("gpu0", "late").unwrap());
});

/// Not a test: the child process `two_processes_never_hold_the_lock_at_once` starts three of
/// (this binary with `--ignored --exact lock_child`). Ignored, so a plain run neither counts
/// it nor runs it; without its environment it has nothing to do.
#[test]
#[ignore = "helper process of two_processes_never_hold_the_lock_at_once"]
fn lock_child() {
    let Ok(db) = std::env::var("VIGIL_LOCK_CHILD_DB") else {
        return;
    };
    let me = std::env::var("VIGIL_LOCK_CHILD_NAME").unwrap();
    let trace = std::env::var("VIGIL_LOCK_CHILD_TRACE").unwrap();
    let store = Place::from_arg(&db).open();
    let append = |line: String| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&trace)
            .unwrap();
        f.write_all(line.as_bytes()).unwrap();
    };
    let mut held = 0;
    while held < 20 {
        let now = Timestamp::now().as_millisecond();
        if acquired(&store, "gpu0", &me, 60_000, now) {
            append(format!("enter {me}\n"));
            std::thread::sleep(std::time::Duration::from_millis(2));
            append(format!("exit {me}\n"));
            assert!(store.release_lock("gpu0", &me).unwrap());
            held += 1;
        }
        std::thread::yield_now();
    }
}

on_both_stores!(#[test]
fn two_processes_never_hold_the_lock_at_once(b) {
    let dir = tempfile::tempdir().unwrap();
    let db = b.place(dir.path()).to_arg();
    let trace = dir.path().join("trace");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            std::process::Command::new(&exe)
                .args(["--ignored", "--exact", "lock_child", "--test-threads=1"])
                .env("VIGIL_LOCK_CHILD_DB", &db)
                .env("VIGIL_LOCK_CHILD_NAME", name)
                .env("VIGIL_LOCK_CHILD_TRACE", &trace)
                .stdout(std::process::Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let text = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3 * 20 * 2);
    for pair in lines.chunks(2) {
        let who = pair[0].strip_prefix("enter ").expect("enter first");
        assert_eq!(pair[1], format!("exit {who}"), "{text}");
    }
});

on_both_stores!(#[test]
fn the_heartbeat_renews_the_locks_its_runs_hold_and_only_those(b) {
    let dir = tempfile::tempdir().unwrap();
    let store = b.open(dir.path());
    assert!(acquired(&store, "gpu0", "host:1:0/7", 30_000, 0));
    assert!(acquired(&store, "gpu1", "host:1:01/8", 30_000, 0));
    assert_eq!(store.renew_leases("host:1:0", 30_000, 20_000).unwrap(), 1);
    let locks = store.locks().unwrap();
    assert_eq!(locks[0].expires_at, 50_000, "renewed");
    assert_eq!(
        locks[1].expires_at, 30_000,
        "another orchestrator's lock is not"
    );
    assert!(!acquired(&store, "gpu0", "other/1", 30_000, 40_000));
    assert!(acquired(&store, "gpu1", "other/1", 30_000, 40_000));
});

on_both_stores!(#[test]
fn a_run_and_its_intent_end_together_or_not_at_all(b) {
    let dir = tempfile::tempdir().unwrap();
    let place = b.place(dir.path());
    let store = place.open();
    let intent = vigil::intent::NewIntent {
        intent_type: "canary".into(),
        priority: 5,
        reason: "test".into(),
        data: Default::default(),
        dedup_key: None,
        origin: "test".into(),
    };
    let id = store.put_intent(&intent, 1_000, 0).unwrap().id();
    let mut req = budget_request(id, 15);
    req.lock = Some("gpu0".into());
    let run = store.begin_run(&req, 1_000, true).unwrap().unwrap();
    let audit = |event: &str| AuditEntry {
        ts: 2_000,
        event: event.into(),
        intent: Some(id),
        playbook: Some("canary".into()),
        details: serde_json::json!({"run": run.id}),
        host: String::new(),
    };
    let end = RunEnd {
        run_id: run.id,
        downtime_ms: 10_000,
        intent_id: id,
        status: IntentStatus::Done,
        note: "ran",
        now_ms: 2_000,
        fence: None,
    };

    // The audit insert fails: nothing of the end is written. (SQLite: the table is gone;
    // PostgreSQL, whose prepared statements follow a renamed table: a check refuses rows.)
    let sql = |q: &str| match &place {
        Place::Sqlite(path) => rusqlite::Connection::open(path)
            .unwrap()
            .execute_batch(q)
            .unwrap(),
        Place::Postgres(url) => drop(common::store::pg_query(url, q)),
    };
    let (break_audit, mend_audit) = match &place {
        Place::Sqlite(_) => (
            "ALTER TABLE audit RENAME TO audit_away",
            "ALTER TABLE audit_away RENAME TO audit",
        ),
        Place::Postgres(_) => (
            "ALTER TABLE audit ADD CONSTRAINT refuse CHECK (false) NOT VALID",
            "ALTER TABLE audit DROP CONSTRAINT refuse",
        ),
    };
    sql(break_audit);
    assert!(store.settle_run(&end, &audit("playbook_end")).is_err());
    let open = store.runs(None, i64::MIN, true).unwrap();
    assert_eq!(open.len(), 1, "the run is still open");
    assert_eq!(store.locks().unwrap().len(), 1, "the lock is still held");
    let u = store.budget_usage("gpu_downtime", "2026-11-23").unwrap();
    assert_eq!((u.used_ms, u.reserved_ms), (0, 15_000));
    assert_eq!(
        store.intent(id).unwrap().unwrap().status,
        IntentStatus::Pending
    );

    sql(mend_audit);
    assert_eq!(
        store.settle_run(&end, &audit("playbook_end")).unwrap(),
        Settled::Ended
    );
    assert!(store.runs(None, i64::MIN, true).unwrap().is_empty());
    assert!(store.locks().unwrap().is_empty());
    let u = store.budget_usage("gpu_downtime", "2026-11-23").unwrap();
    assert_eq!((u.used_ms, u.reserved_ms), (10_000, 0));
    let i = store.intent(id).unwrap().unwrap();
    assert_eq!(
        (i.status, i.note.as_deref()),
        (IntentStatus::Done, Some("ran"))
    );
    let tail = store.audit_tail(1).unwrap();
    assert_eq!(tail[0].event, "playbook_end");

    // Settled once: the first end wins. A second end (recovery racing the holder) changes
    // nothing: not the budget, not the intent's status, not the audit trail (the orchestrator
    // audits it as `run_end_ignored`, see orchestrator_recovery.rs).
    let again = RunEnd {
        status: IntentStatus::Failed,
        note: "again",
        ..end
    };
    assert_eq!(
        store.settle_run(&again, &audit("run_recovered")).unwrap(),
        Settled::AlreadyEnded
    );
    let u = store.budget_usage("gpu_downtime", "2026-11-23").unwrap();
    assert_eq!((u.used_ms, u.reserved_ms), (10_000, 0));
    let i = store.intent(id).unwrap().unwrap();
    assert_eq!(
        (i.status, i.note.as_deref()),
        (IntentStatus::Done, Some("ran"))
    );
    assert_eq!(store.audit_tail(1).unwrap()[0].event, "playbook_end");
});

// `02:00-03:00` is exactly the spring-forward gap of 2026-03-08 in New York. It used to say
// "opens in 0.0h" at 01:59:30 EST, "opens in 23.0h" at 03:00:30 EDT, and never open that
// night; it opens at the transition, as cron runs jobs in the gap, for its length.
on_both_stores!(#[tokio::test]
async fn a_window_inside_the_spring_forward_gap_opens_that_night(b) {
    let config = format!(
        "{BASE}\n[windows.nightly]\nat = \"02:00-03:00\"\n[playbooks.tune]\non = \"alert_*\"\nwindow = \"nightly\"\nsteps = [{{ log = \"tuning\" }}]\n"
    );
    let env = Env::on(b, &config, "2026-03-08T06:59:30Z"); // 01:59:30 EST
    let note = |id| env.intent(id).note.unwrap_or_default();
    let id = env.submit("alert_gpu_oom", 1);
    env.orchestrator().drain().await.unwrap();
    assert!(
        note(id).contains(
            "Outside maintenance window nightly (02:00-03:00 America/New_York): opens in 30.0s"
        ),
        "{}",
        note(id)
    );
    env.clock.set("2026-03-08T07:00:30Z".parse().unwrap()); // 03:00:30 EDT
    let id = env.submit("alert_gpu_oom", 2);
    env.orchestrator().drain().await.unwrap();
    assert_eq!(env.status(id), IntentStatus::Done, "{}", note(id));
    env.clock.set("2026-03-08T08:00:30Z".parse().unwrap()); // 04:00:30 EDT: an hour later
    let id = env.submit("alert_gpu_oom", 3);
    env.orchestrator().drain().await.unwrap();
    assert!(
        note(id).contains("opens in 22.0h"),
        "the next night's 02:00 EDT: {}",
        note(id)
    );
});
