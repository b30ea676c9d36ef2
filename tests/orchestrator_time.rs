//! Time that misbehaves: the clock was a year ahead during one run, then corrected. A stamp in
//! the future counts as now: a cooldown never has more than its length left, a rate-limit
//! window restarts, and an invariant's `for` timer restarts instead of never firing.

mod common;

use common::env::*;
use std::time::Duration;
use vigil::clock::Clock;
use vigil::intent::IntentStatus;
use vigil::store::prelude::*;

const YEAR_H: f64 = 365.0 * 24.0;

/// Runs `intent_type` once with the clock a year ahead, then sets the clock back to `IN_WINDOW`
/// plus a minute.
async fn run_a_year_ahead(env: &Env, intent_type: &str) {
    env.advance_h(YEAR_H);
    let id = env.submit(intent_type, 0);
    env.orchestrator().drain().await.unwrap();
    env.assert_status(id, IntentStatus::Done);
    env.clock.set(IN_WINDOW.parse().unwrap());
    env.clock.advance(Duration::from_secs(60));
}

#[tokio::test]
async fn a_cooldown_stamped_in_the_future_has_at_most_its_length_left() {
    let config = format!(
        "{BASE}\n[playbooks.tune]\non = \"alert_gpu_oom\"\ncooldown = \"6h\"\nsteps = [{{ log = \"tuning\" }}]\n"
    );
    let env = Env::new(&config, IN_WINDOW);
    run_a_year_ahead(&env, "alert_gpu_oom").await;

    let id = env.submit("alert_gpu_oom", 1);
    env.orchestrator().drain().await.unwrap();
    let i = env.intent(id);
    assert_eq!(i.status, IntentStatus::Denied);
    // Not "Cooldown active: 8761.0h remaining".
    assert_eq!(
        i.note.as_deref(),
        Some("cooldown gate: Cooldown active: 6.0h remaining")
    );
    // The corrected stamp stays corrected: the cooldown counts down from there.
    env.advance_h(2.0);
    let id = env.submit("alert_gpu_oom", 2);
    env.orchestrator().drain().await.unwrap();
    assert_eq!(
        env.intent(id).note.as_deref(),
        Some("cooldown gate: Cooldown active: 4.0h remaining")
    );
    env.advance_h(4.0);
    let id = env.submit("alert_gpu_oom", 3);
    env.orchestrator().drain().await.unwrap();
    env.assert_status(id, IntentStatus::Done);
    let store = env.app.store().unwrap();
    let runs = store.runs(Some("tune"), i64::MIN, false).unwrap();
    assert!(
        runs.iter().all(|r| r.started_at <= env.clock.now_ms()),
        "{runs:?}"
    );
}

#[tokio::test]
async fn a_rate_limit_window_with_a_future_run_restarts() {
    let config = format!(
        "{BASE}\n[playbooks.tune]\non = \"alert_gpu_oom\"\nmax_runs = {{ count = 1, within = \"24h\" }}\nsteps = [{{ log = \"tuning\" }}]\n"
    );
    let env = Env::new(&config, IN_WINDOW);
    run_a_year_ahead(&env, "alert_gpu_oom").await;

    let id = env.submit("alert_gpu_oom", 1);
    env.orchestrator().drain().await.unwrap();
    let note = env.intent(id).note.unwrap();
    assert_eq!(
        note,
        "rate_limit gate: Rate limit: 1 runs in the last 24.0h (max 1); next allowed in 24.0h"
    );
    env.advance_h(24.0);
    let id = env.submit("alert_gpu_oom", 2);
    env.orchestrator().drain().await.unwrap();
    env.assert_status(id, IntentStatus::Done);
}

#[tokio::test]
async fn a_dry_run_sees_the_correction_and_keeps_nothing() {
    let config = format!(
        "{BASE}\n[playbooks.tune]\non = \"alert_gpu_oom\"\ncooldown = \"6h\"\nsteps = [{{ log = \"tuning\" }}]\n"
    );
    let env = Env::new(&config, IN_WINDOW);
    run_a_year_ahead(&env, "alert_gpu_oom").await;
    let id = env.submit("alert_gpu_oom", 1);
    let intent = env.intent(id);
    let plan = vigil::orchestrator::plan(&env.app, &intent, "dry").unwrap();
    assert!(
        plan.outcome().ends_with("Cooldown active: 6.0h remaining"),
        "{}",
        plan.outcome()
    );
    let store = env.app.store().unwrap();
    let runs = store.runs(Some("tune"), i64::MIN, false).unwrap();
    assert!(
        runs[0].started_at > env.clock.now_ms(),
        "a dry run writes nothing"
    );
}

#[test]
fn a_for_timer_first_seen_in_the_future_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let store = vigil::store::SqliteStore::open_dir(dir.path()).unwrap();
    let now: i64 = 1_768_471_200_000; // 2026-01-15T10:00:00Z
    let year = 365 * 24 * 3_600_000;
    let keys = ["job j2".to_string()];
    // Seen while the clock was a year ahead.
    assert_eq!(
        store
            .invariant_sightings("S-01", &keys, now + year)
            .unwrap(),
        [now + year]
    );
    // The clock is corrected: the sighting counts as now, and `for = "2s"` runs from here.
    assert_eq!(
        store.invariant_sightings("S-01", &keys, now).unwrap(),
        [now]
    );
    assert_eq!(
        store
            .invariant_sightings("S-01", &keys, now + 2_000)
            .unwrap(),
        [now],
        "2 s later the violation has lasted its `for`"
    );
}
