//! `/metrics` stays bounded when label values come from outside, and intake keeps up.

mod common;

use common::TestDaemon;
use std::sync::Arc;

const EVENTS: usize = 50_000;
const MAX_SERIES: usize = 200;
/// Posts in flight at once: enough to keep the daemon busy, few enough for two cores.
const CLIENTS: usize = 8;

/// 50,000 distinct event types through `POST /api/events`: every post is accepted, every event is
/// counted, and `vigil_events_total` keeps at most `max_series` series plus `other`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_api_event_types_leave_metrics_bounded_and_intake_steady() {
    let d = Arc::new(TestDaemon::start(&format!("[metrics]\nmax_series = {MAX_SERIES}\n")).await);
    let client = reqwest::Client::new();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (d, client) = (d.clone(), client.clone());
            tokio::spawn(async move {
                let mut refused = Vec::new();
                for i in (c..EVENTS).step_by(CLIENTS) {
                    let r = client
                        .post(d.api("/api/events"))
                        .bearer_auth(common::TOKEN)
                        .json(&serde_json::json!({"type": format!("flood_{i}"), "data": {}}))
                        .send()
                        .await
                        .unwrap();
                    if r.status() != 202 {
                        refused.push(r.status().as_u16());
                    }
                }
                refused
            })
        })
        .collect();
    let mut refused = Vec::new();
    for t in tasks {
        refused.extend(t.await.unwrap());
    }
    assert!(
        refused.is_empty(),
        "{} of {EVENTS} posts refused, statuses {:?}",
        refused.len(),
        &refused[..refused.len().min(10)]
    );

    let m = &d.app.metrics;
    d.wait_until("every event counted", || {
        m.events_total.total() == EVENTS as f64
    })
    .await;
    assert!(
        m.events_total.series() <= MAX_SERIES + 1,
        "{} series",
        m.events_total.series()
    );
    // Every event past the limit went to `other`, and the drop counter says how many.
    let kept = m.events_total.series() as f64 - 1.0;
    assert_eq!(
        m.events_total.get(&["other", "other"]),
        EVENTS as f64 - kept
    );
    assert_eq!(m.events_total.dropped() as f64, EVENTS as f64 - kept);

    let text = d.get_text("/metrics").await;
    let series = text
        .lines()
        .filter(|l| l.starts_with("vigil_events_total{"))
        .count();
    assert!(series <= MAX_SERIES + 1, "{series} series exported");
    assert!(
        text.contains("vigil_events_total{source=\"other\",type=\"other\"} "),
        "{text}"
    );
    let dropped = format!(
        "vigil_metric_series_dropped_total{{family=\"vigil_events_total\"}} {}\n",
        m.events_total.dropped()
    );
    assert!(text.contains(&dropped), "{text}");
    // The whole exposition stays small: well under a series per event.
    assert!(
        text.lines().count() < 2 * MAX_SERIES + 200,
        "{} lines",
        text.lines().count()
    );
    common::promtool_check_metrics(&text);

    let d = Arc::try_unwrap(d).ok().expect("the clients are done");
    let summary = d.stop().await;
    assert_eq!(summary.events, EVENTS as u64);
}

/// A config with `max_series = 0` is refused with its place, not silently unbounded.
#[test]
fn max_series_must_be_positive() {
    let err = vigil::config::Config::parse("t.toml", "[metrics]\nmax_series = 0\n")
        .expect_err("refused")
        .to_string();
    assert!(err.contains("t.toml:2"), "{err}");
    assert!(err.contains("max_series"), "{err}");
}
