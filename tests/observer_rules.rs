//! The seven rules of seed 002 as shipped in examples/observer.toml: each fires at its
//! threshold and not below it. Log-derived events come from the example's own source regexes.

mod common;

use common::rules::{Observer, T0};
use serde_json::{json, Value};
use std::path::Path;
use vigil::config::Config;
use vigil::rules::Proposal;

const MIN: i64 = 60_000;

fn config() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/observer.toml");
    Config::load(&path).unwrap_or_else(|e| panic!("examples/observer.toml: {e}"))
}

fn assert_one(p: &[Proposal], intent: &str, priority: u8) -> String {
    assert_eq!(p.len(), 1, "expected one proposal, got {p:#?}");
    assert_eq!(p[0].intent_type, intent);
    assert_eq!(p[0].priority, priority);
    p[0].reason.clone()
}

#[test]
fn the_example_is_valid_and_its_sources_emit_every_rule_event() {
    let c = config();
    assert_eq!(c.rules.len(), 7);
    let warnings: Vec<String> = c
        .warnings("2026-01-01T00:00:00Z".parse().unwrap())
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}

#[test]
fn promotion_cluster_needs_three_within_ten_minutes() {
    let rule = "promotion_cluster";
    let promo = |o: &mut Observer, ts: i64, n: u32| {
        o.feed_event(
            rule,
            "promotions",
            "promotion_new",
            ts,
            json!({ "path": format!("/p/cand-{n}.json") }),
        )
    };
    let mut o = Observer::start(config());
    assert!(promo(&mut o, T0, 1).is_empty());
    assert!(
        promo(&mut o, T0 + 4 * MIN, 2).is_empty(),
        "two are not a cluster"
    );
    let reason = assert_one(
        &promo(&mut o, T0 + 10 * MIN, 3),
        "trigger_phase_promotion_cluster",
        7,
    );
    assert_eq!(
        reason,
        "Promotion cluster detected: 3 promotions in 10 minutes"
    );
    // Cooldown 1h: another cluster right after is quiet.
    for n in 4..=6 {
        assert!(promo(&mut o, T0 + 11 * MIN + i64::from(n), n).is_empty());
    }

    let mut spread = Observer::start(config());
    assert!(promo(&mut spread, T0, 1).is_empty());
    assert!(promo(&mut spread, T0 + 5 * MIN, 2).is_empty());
    assert!(
        promo(&mut spread, T0 + 11 * MIN, 3).is_empty(),
        "3 over 11 minutes"
    );
    // The window slides: the 4th is within 10m of the 2nd and 3rd.
    assert_eq!(promo(&mut spread, T0 + 12 * MIN, 4).len(), 1);
}

#[test]
fn phase_failure_fires_on_failed_or_timed_out_runs_only() {
    let rule = "phase_failure";
    let mut o = Observer::start(config());
    assert!(o
        .feed_line(rule, "phase_log", T0, "PHASE run-1 passed in 900s")
        .is_empty());
    assert!(o
        .feed_line(rule, "phase_log", T0 + 1, "PHASE run-1 started")
        .is_empty());
    let p = o.feed_line(
        rule,
        "phase_log",
        T0 + 2,
        "PHASE run-2 failed in 913s: 3 tests failed",
    );
    let reason = assert_one(&p, "suggest_phase_diagnostic", 6);
    assert_eq!(
        reason,
        "PHASE run-2 failed after 913s: check the failing tests"
    );
    let p = o.feed_line(
        rule,
        "phase_log",
        T0 + 31 * MIN,
        "PHASE run-3 timed out in 10800s",
    );
    assert_one(&p, "suggest_phase_diagnostic", 6);
}

#[test]
fn heartbeat_stall_fires_once_after_five_silent_minutes() {
    let rule = "heartbeat_stall";
    let mut o = Observer::start(config());
    assert!(o.tick(rule, T0 + 5 * MIN - 1000).is_empty(), "4m59s");
    let reason = assert_one(&o.tick(rule, T0 + 5 * MIN), "alert_heartbeat_stall", 8);
    assert_eq!(
        reason,
        "no D-REAM heartbeat for 5m: dream.service may be hung"
    );
    assert!(o.tick(rule, T0 + 6 * MIN).is_empty(), "once per stall");
    // Heartbeats resume, then stop again: a new stall after the cooldown fires again.
    let hb = json!({ "path": "/signals/heartbeat/dream" });
    assert!(o
        .feed_event(
            rule,
            "heartbeats",
            "dream_heartbeat",
            T0 + 20 * MIN,
            hb.clone()
        )
        .is_empty());
    assert!(o
        .feed_event(rule, "heartbeats", "dream_heartbeat", T0 + 21 * MIN, hb)
        .is_empty());
    assert!(o.tick(rule, T0 + 26 * MIN - 1).is_empty());
    assert_eq!(o.tick(rule, T0 + 26 * MIN).len(), 1);
}

#[test]
fn lock_contention_fires_above_ten() {
    let rule = "lock_contention";
    let mut o = Observer::start(config());
    let lock = |o: &mut Observer, ts: i64, v: Value| {
        o.feed_event(
            rule,
            "orchestrator",
            "lock_contention_high",
            ts,
            json!({ "metric": "kloros_lock_contention_total", "value": v }),
        )
    };
    assert!(lock(&mut o, T0, json!(10)).is_empty());
    assert!(lock(&mut o, T0 + 1, json!("10.0")).is_empty());
    let reason = assert_one(
        &lock(&mut o, T0 + 2, json!(11)),
        "suggest_lock_optimization",
        5,
    );
    assert_eq!(
        reason,
        "lock contention at 11 (above 10): consider a slower orchestrator tick"
    );
}

#[test]
fn gpu_oom_fires_on_the_oom_line() {
    let rule = "gpu_oom";
    let mut o = Observer::start(config());
    assert!(o
        .feed_line(
            rule,
            "dream_log",
            T0,
            "CUDA error: device-side assert triggered"
        )
        .is_empty());
    let line = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.50 GiB (GPU 0)";
    let reason = assert_one(
        &o.feed_line(rule, "dream_log", T0 + 1, line),
        "alert_gpu_oom",
        9,
    );
    assert_eq!(
        reason,
        "GPU OOM: tried to allocate 2.50 GiB; lower batch size or memory fraction"
    );
    // The same line again within 60 s is the same fact.
    assert!(o.feed_line(rule, "dream_log", T0 + 2, line).is_empty());
    assert_eq!(o.engine.stats().duplicates_dropped, 1);
}

#[test]
fn phase_too_long_fires_over_two_hours() {
    let rule = "phase_too_long";
    let mut o = Observer::start(config());
    assert!(o
        .feed_line(rule, "phase_log", T0, "PHASE run-1 passed in 7200s")
        .is_empty());
    let p = o.feed_line(rule, "phase_log", T0 + 1, "PHASE run-2 passed in 7201s");
    let reason = assert_one(&p, "suggest_phase_optimization", 6);
    assert_eq!(
        reason,
        "PHASE run-2 took 7201s (over 2h): review test selection or hanging tests"
    );
}

#[test]
fn dream_error_fires_on_a_failed_experiment() {
    let rule = "dream_error";
    let mut o = Observer::start(config());
    assert!(o
        .feed_line(rule, "units", T0, "experiment exp-7 finished: fitness 0.91")
        .is_empty());
    let p = o.feed_line(
        rule,
        "units",
        T0 + 1,
        "experiment exp-8 failed: loss diverged",
    );
    let reason = assert_one(&p, "suggest_dream_diagnostic", 5);
    assert_eq!(
        reason,
        "D-REAM experiment exp-8 failed: loss diverged; check its logs and config"
    );
    assert_eq!(p[0].data["experiment"], json!("exp-8"));
    assert_eq!(p[0].data["source"], json!("units"));
}
