//! The canary runner through a real daemon (TestDaemon) with the real test service supervised
//! as production: the spare path judged against production on the first free port, the
//! quiesced path's gates (window, budget, cooldown) denying with their reasons, a candidate
//! that never gets healthy rolled back with production restored, predictive mode, the CLI,
//! the API listing and the metrics. Windows and cooldowns run on a ManualClock.

mod canary_support;
mod common;

use canary_support::*;
use common::{vigil, TestDaemon};
use serde_json::{json, Value};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use vigil::clock::ManualClock;
use vigil::store::{AuditStore, RunStore};

/// 04:00 UTC: inside the 03:00-07:00 window.
const IN_WINDOW: &str = "2026-11-30T04:00:00Z";

async fn daemon(p: Ports, unit: &str, at: &str) -> (TestDaemon, ManualClock, UnitGuard) {
    let clock = ManualClock::at(at);
    let d = TestDaemon::start_with(
        &config(p, unit, "15s"),
        Arc::new(clock.clone()),
        Default::default(),
    )
    .await;
    let guard = UnitGuard {
        data: d.app.data_dir.clone(),
        unit: unit.into(),
    };
    wait_healthy(p.production, 20).await;
    (d, clock, guard)
}

async fn run(d: &TestDaemon, canary: &str, body: Value) -> Value {
    let r = d.post(&format!("/api/canaries/{canary}/run"), &body).await;
    assert_eq!(r.status(), 200, "run {canary}");
    r.json().await.unwrap()
}

async fn stop(d: TestDaemon) {
    // A clean stop leaves units running for the next daemon: this test's must go.
    d.app.supervisor.get().unwrap().stop_all().await;
    d.stop().await;
}

fn events(d: &TestDaemon) -> Vec<(String, Value)> {
    d.app
        .store()
        .unwrap()
        .audit_tail(10_000)
        .unwrap()
        .into_iter()
        .map(|e| (e.event, e.details))
        .collect()
}

fn count(events: &[(String, Value)], event: &str) -> usize {
    events.iter().filter(|(e, _)| e == event).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spare_path_takes_the_first_free_port_and_judges_against_production() {
    let p = Ports::pick();
    let (d, _clock, _guard) = daemon(p, "prod_spare", IN_WINDOW).await;
    // The first port of the range is busy: the candidate gets the second.
    let held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, p.first)).unwrap();

    // An equal candidate, through the CLI, which goes through the running daemon's API.
    let cfg = d.path("vigil.toml");
    let text = format!(
        "[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"{}\"\n{}",
        common::TOKEN,
        config(p, "prod_spare", "15s").replace("{dir}", d.dir.path().to_str().unwrap())
    );
    std::fs::write(&cfg, text).unwrap();
    let data = d.app.data_dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        common::out(vigil(&data).args([
            "--config",
            cfg.to_str().unwrap(),
            "canary",
            "run",
            "spare",
            "--candidate",
            r#"{"delay_ms": 40}"#,
            "--json",
        ]))
    })
    .await
    .unwrap();
    assert_eq!(out.0, 0, "{out:?}");
    let equal: Value = serde_json::from_str(&out.1).unwrap();
    assert_eq!(equal["result"], "promoted", "{equal:#}");
    assert_eq!(equal["mode"], "canary");
    assert_eq!(equal["path"], "spare");
    assert_eq!(equal["port"], p.first + 1);
    assert_eq!(equal["downtime_s"], 0.0);
    let j = &equal["judgement"];
    assert_eq!(j["candidate"]["requests"], 40);
    assert_eq!(j["production"]["requests"], 40);
    assert_eq!(j["comparison"]["slower"], false);
    assert!(j["comparison"]["p_value"].as_f64().is_some());
    assert_eq!(
        std::fs::read_to_string(d.path("promoted")).unwrap().trim(),
        "40",
        "the promote command applied the candidate's settings"
    );
    // Production kept running throughout.
    assert!(healthy(p.production).await);
    // `vigil status` lists the canary with its last run.
    let (data, cfg2) = (d.app.data_dir.clone(), d.path("vigil.toml"));
    let status = tokio::task::spawn_blocking(move || {
        common::out(vigil(&data).args(["--config", cfg2.to_str().unwrap(), "status", "--json"]))
    })
    .await
    .unwrap();
    assert_eq!(status.0, 0, "{status:?}");
    let status: Value = serde_json::from_str(&status.1).unwrap();
    let spare = status["canaries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "spare")
        .unwrap_or_else(|| panic!("{status:#}"));
    assert_eq!(spare["last_run"]["result"], "promoted", "{spare:#}");

    // 50% slower: rejected by the comparison, with the numbers.
    let slow = run(&d, "spare", json!({"candidate": {"delay_ms": 60}})).await;
    assert_eq!(slow["result"], "rolled_back", "{slow:#}");
    let reason = slow["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("slower than production: median"),
        "{reason}"
    );
    assert!(reason.contains("Mann-Whitney U"), "{reason}");
    let c = &slow["judgement"]["comparison"];
    assert_eq!(c["slower"], true);
    assert!(c["p_value"].as_f64().unwrap() < 0.01, "{c}");
    assert!(c["slowdown"].as_f64().unwrap() > 0.3, "{c}");
    assert!(!listening(p.first + 1), "the candidate was stopped");

    // Every port busy: denied, in the seed's words.
    let b = TcpListener::bind((Ipv4Addr::UNSPECIFIED, p.first + 1)).unwrap();
    let c = TcpListener::bind((Ipv4Addr::UNSPECIFIED, p.first + 2)).unwrap();
    let busy = run(&d, "spare", json!({})).await;
    assert_eq!(busy["result"], "denied");
    assert_eq!(
        busy["reason"],
        format!("all canary ports busy ({}-{})", p.first, p.first + 2)
    );
    drop((held, b, c));

    let ev = events(&d);
    for e in [
        "canary_start",
        "spare_path_selected",
        "port_selected",
        "canary_healthy",
        "canary_judged",
        "canary_stopped",
        "promoted",
        "rolled_back",
    ] {
        assert!(count(&ev, e) >= 1, "audit has {e}: {ev:?}");
    }
    let port = ev.iter().find(|(e, _)| e == "port_selected").unwrap();
    assert_eq!(port.1["port"], p.first + 1);

    let list = d.get_json("/api/canaries").await;
    let spare = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "spare")
        .unwrap();
    assert_eq!(spare["last_run"]["result"], "denied");
    assert_eq!(spare["next_allowed_in_s"], 0.0);
    let metrics = d.get_text("/metrics").await;
    for line in [
        "vigil_canary_runs_total{canary=\"spare\",result=\"promoted\",mode=\"canary\"} 1",
        "vigil_canary_runs_total{canary=\"spare\",result=\"rolled_back\",mode=\"canary\"} 1",
        "vigil_canary_duration_seconds_count{canary=\"spare\"} 3",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    common::promtool_check_metrics(&metrics);
    stop(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quiesced_path_runs_only_in_the_window_within_budget_and_after_the_cooldown() {
    let p = Ports::pick();
    let (d, clock, _guard) = daemon(p, "prod_gates", "2026-11-30T02:00:00Z").await;

    let outside = run(&d, "judge", json!({})).await;
    assert_eq!(outside["result"], "denied");
    assert_eq!(
        outside["reason"],
        "Outside maintenance window maintenance (03:00-07:00 UTC): opens in 1.0h"
    );

    clock.set("2026-11-30T04:00:00Z".parse().unwrap());
    let over = run(&d, "big", json!({})).await;
    assert_eq!(over["result"], "denied");
    assert_eq!(
        over["reason"],
        "Budget \"gpu_downtime\" for 2026-11-30 cannot cover 70.0s: 0.0s used, 0.0s reserved of 60.0s"
    );

    // Predictive: says what it would do, starts nothing, no downtime.
    let predicted = run(&d, "judge", json!({"mode": "predictive"})).await;
    assert_eq!(predicted["result"], "predicted", "{predicted:#}");
    assert_eq!(predicted["downtime_s"], 0.0);
    let why = predicted["reason"].as_str().unwrap();
    assert!(
        why.starts_with("would stop production (unit prod_gates)"),
        "{why}"
    );
    assert!(why.ends_with("gates pass"), "{why}");
    assert!(healthy(p.production).await);

    let ran = run(&d, "judge", json!({"candidate": {"delay_ms": 5}})).await;
    assert_eq!(ran["result"], "promoted", "{ran:#}");
    assert_eq!(ran["path"], "quiesced");
    assert_eq!(ran["port"], p.first);
    let downtime = ran["downtime_s"].as_f64().unwrap();
    assert!(downtime > 0.0, "{ran:#}");
    assert!(ran["restore_s"].as_f64().is_some());
    assert!(healthy(p.production).await, "production restored");
    // The budget shows the downtime spent, to the millisecond.
    let usage = d
        .app
        .store()
        .unwrap()
        .budget_usage("gpu_downtime", "2026-11-30")
        .unwrap();
    assert_eq!(usage.reserved_ms, 0);
    assert_eq!(usage.used_ms, (downtime * 1000.0) as i64);
    let ev = events(&d);
    assert_eq!(
        count(&ev, "quiesced_path_selected"),
        4,
        "every quiesced run says so"
    );
    for e in [
        "production_stopped",
        "canary_healthy",
        "canary_judged",
        "canary_stopped",
        "production_restored",
        "promoted",
    ] {
        assert_eq!(count(&ev, e), 1, "audit has {e} once: {ev:?}");
    }

    // A second quiesced run within 6 h: the cooldown says no.
    clock.advance(Duration::from_secs(3600));
    let again = run(&d, "judge", json!({})).await;
    assert_eq!(again["result"], "denied");
    assert_eq!(again["reason"], "Cooldown active: 5.0h remaining");
    let list = d.get_json("/api/canaries").await;
    let judge = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "judge")
        .unwrap()
        .clone();
    assert_eq!(judge["last_run"]["result"], "denied");
    // The cooldown ends at 10:00, after the window closed: the next is allowed when it opens
    // again at 03:00, in 22 h.
    assert_eq!(judge["next_allowed_in_s"], 22.0 * 3600.0);
    let metrics = d.get_text("/metrics").await;
    assert!(
        metrics.contains("vigil_canary_cooldown_seconds{canary=\"judge\"} 79200"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "vigil_canary_downtime_seconds_total{{canary=\"judge\"}} {downtime}"
        )),
        "{metrics}"
    );
    stop(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_never_gets_healthy_is_rolled_back_and_production_restored() {
    let p = Ports::pick();
    let (d, _clock, _guard) = daemon(p, "prod_health", IN_WINDOW).await;
    let mut changes = d.app.changes.subscribe();
    let r = run(&d, "judge", json!({"candidate": {"flag": "--fail-health"}})).await;
    assert_eq!(r["result"], "rolled_back", "{r:#}");
    // The dashboard's stream hears of the run's end.
    let mut published = None;
    while let Ok(c) = changes.try_recv() {
        if c.kind == "canary" {
            published = Some(c.data);
        }
    }
    let published = published.expect("a canary change on the stream");
    assert_eq!(published["canary"], "judge");
    assert_eq!(published["result"], "rolled_back");
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("not healthy within 3.0s: http://127.0.0.1:"),
        "{reason}"
    );
    assert!(
        reason.ends_with("last said: HTTP 503 Service Unavailable"),
        "{reason}"
    );
    assert!(r["judgement"].is_null());
    assert!(healthy(p.production).await, "production restored");
    assert!(!listening(p.first), "the candidate was stopped");
    let ev = events(&d);
    assert_eq!(count(&ev, "production_restored"), 1, "{ev:?}");
    assert_eq!(count(&ev, "canary_stopped"), 1, "{ev:?}");
    assert_eq!(count(&ev, "rolled_back"), 1, "{ev:?}");
    assert!(!d.path("promoted").exists(), "nothing promoted");
    // No restore failure, no alert.
    assert!(d
        .intents()
        .iter()
        .all(|i| i.intent_type != "alert_restore_failed"));
    stop(d).await;
}
