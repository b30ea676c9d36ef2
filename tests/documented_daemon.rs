//! What the README promises about the running daemon's timers and `[intents]` keys, driven by
//! a `ManualClock`: the retention pruning, the dedup window and the stats line every 10 minutes.

mod common;

use common::TestDaemon;
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use vigil::clock::ManualClock;
use vigil::intent::IntentStatus;
use vigil::store::prelude::*;

const T0: &str = "2026-11-23T08:00:00Z";

async fn daemon(config: &str) -> (TestDaemon, ManualClock) {
    let clock = ManualClock::at(T0);
    let d = TestDaemon::start_with(config, Arc::new(clock.clone()), Default::default()).await;
    (d, clock)
}

async fn submit(d: &TestDaemon, n: u32) -> (u16, i64) {
    let r = d
        .post(
            "/api/intents",
            &json!({"intent_type": "alert_x", "priority": 5, "reason": "r", "data": {"n": n}}),
        )
        .await;
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    (status, body["id"].as_i64().expect("an id"))
}

fn finish(d: &TestDaemon, id: i64, at_ms: i64) {
    d.app
        .store()
        .unwrap()
        .set_intent_status(id, IntentStatus::Done, Some("ok"), at_ms)
        .unwrap();
}

fn exists(d: &TestDaemon, id: i64) -> bool {
    d.app.store().unwrap().intent(id).unwrap().is_some()
}

#[tokio::test]
async fn intents_retention_prunes_finished_intents_on_the_clock() {
    let (d, clock) = daemon("[intents]\nretention = \"2h\"\n").await;
    let t0 = vigil::clock::Clock::now_ms(&clock);
    let (_, old) = submit(&d, 1).await;
    let (_, recent) = submit(&d, 2).await;
    let (_, pending) = submit(&d, 3).await;
    finish(&d, old, t0);
    clock.advance(Duration::from_secs(3600));
    finish(&d, recent, t0 + 3_600_000);
    // Now 2h01m after the start: `old` finished 2h01m ago, `recent` 1h01m ago, and `pending`
    // never finished. Housekeeping wakes on the clock, not after a real minute.
    clock.advance(Duration::from_secs(3600 + 60));
    d.wait_until("the old finished intent pruned", || !exists(&d, old))
        .await;
    // The same round judged the others: within retention, or not finished.
    assert!(exists(&d, recent), "finished 1h01m ago, retention 2h");
    assert!(exists(&d, pending), "pending intents are never pruned");
    d.stop().await;
}

#[tokio::test]
async fn intents_dedup_window_is_the_configured_one() {
    let (d, clock) = daemon("[intents]\ndedup_window = \"10m\"\n").await;
    let (status, first) = submit(&d, 1).await;
    assert_eq!(status, 201);
    clock.advance(Duration::from_secs(9 * 60));
    assert_eq!(submit(&d, 1).await, (200, first), "a duplicate within 10m");
    // The default window (1h) would still call it a duplicate.
    clock.advance(Duration::from_secs(61));
    let (status, second) = submit(&d, 1).await;
    assert_eq!(status, 201, "a new intent once 10m have passed");
    assert_ne!(second, first);
    d.stop().await;
}

/// Everything the daemon logs in this test binary, as text.
fn log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Writer(sink.clone()))
            .init();
        buf
    })
    .clone()
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The stats lines of the daemon that saw three events (the other tests' daemons log into the
/// same subscriber, and see none).
fn stats_lines(log: &Mutex<Vec<u8>>) -> Vec<String> {
    String::from_utf8_lossy(&log.lock().unwrap())
        .lines()
        .filter_map(|l| l.split_once("stats: ").map(|(_, s)| s.to_string()))
        .filter(|s| s.contains("events=3,"))
        .collect()
}

#[tokio::test]
async fn a_stats_line_every_ten_minutes_of_the_clock() {
    let log = log();
    let (d, clock) = daemon("").await;
    d.post_event("probe_ok", json!({"n": 1})).await;
    d.post_event("probe_ok", json!({"n": 2})).await;
    d.post_event("probe_ok", json!({"n": 3})).await;
    submit(&d, 1).await;
    d.wait_until("the events counted", || {
        d.app.metrics.events_total.get(&["api", "probe_ok"]) == 3.0
    })
    .await;
    clock.advance(Duration::from_secs(10 * 60));
    d.wait_until("the stats line", || !stats_lines(&log).is_empty())
        .await;
    assert_eq!(
        stats_lines(&log),
        ["uptime=10.0m, events=3, intents=1"],
        "uptime on the clock, the counts so far"
    );
    // Another minute: housekeeping runs, but the next stats line is ten minutes away.
    clock.advance(Duration::from_secs(60));
    clock.advance(Duration::from_secs(9 * 60));
    d.wait_until("the second stats line", || stats_lines(&log).len() == 2)
        .await;
    assert_eq!(stats_lines(&log)[1], "uptime=20.0m, events=3, intents=1");
    d.stop().await;
}
