//! The metrics source against a real HTTP server whose metrics text changes.

mod common;

use common::RunningSource;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vigil::config::Dur;
use vigil::sources::metrics::{MetricsConfig, MetricsSource, Threshold};

#[derive(Clone)]
struct Target {
    text: Arc<Mutex<String>>,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
    url: String,
}

impl Target {
    async fn start(text: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = Target {
            text: Arc::new(Mutex::new(text.to_string())),
            status: Arc::new(AtomicU16::new(200)),
            hits: Arc::new(AtomicUsize::new(0)),
            url: format!("http://{}/metrics", listener.local_addr().unwrap()),
        };
        let s = t.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let s = s.clone();
                async move {
                    s.hits.fetch_add(1, Ordering::SeqCst);
                    let status =
                        axum::http::StatusCode::from_u16(s.status.load(Ordering::SeqCst)).unwrap();
                    (status, s.text.lock().unwrap().clone())
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        t
    }

    fn set(&self, text: &str) {
        *self.text.lock().unwrap() = text.to_string();
    }

    /// Waits until the source has processed `n` more scrapes, so a "no event" check after it
    /// covers them. A scrape is known processed once the next one reaches the server: the
    /// source scrapes, sends its events and only then waits for its next tick. So this waits
    /// for `n + 1` more requests (the one in flight now, if any, is not counted as processed).
    async fn scraped(&self, n: usize) {
        let goal = self.hits.load(Ordering::SeqCst) + n + 1;
        common::wait_until("scrapes", &mut || self.hits.load(Ordering::SeqCst) >= goal).await;
    }
}

fn start(config: MetricsConfig) -> RunningSource {
    RunningSource::start_registered("gpu", "metrics", Box::new(MetricsSource::new(config)))
}

fn config(url: &str, threshold: Vec<Threshold>) -> MetricsConfig {
    MetricsConfig {
        url: url.to_string(),
        interval: Dur(Duration::from_millis(50)),
        timeout: Dur(Duration::from_secs(2)),
        threshold,
    }
}

fn gpu_hot() -> Threshold {
    Threshold {
        metric: "gpu_mem_used_ratio".into(),
        labels: BTreeMap::from([("gpu".into(), "0".into())]),
        above: Some(0.5),
        below: None,
        event: "gpu_hot".into(),
    }
}

fn gpu_text(g0: f64, g1: f64) -> String {
    format!(
        "# HELP gpu_mem_used_ratio Used.\n# TYPE gpu_mem_used_ratio gauge\n\
         gpu_mem_used_ratio{{gpu=\"0\",host=\"a\"}} {g0}\n\
         gpu_mem_used_ratio{{gpu=\"1\",host=\"a\"}} {g1}\n\
         this line is {{ broken\n"
    )
}

#[tokio::test]
async fn threshold_fires_on_crossing_and_rearms() {
    let target = Target::start(&gpu_text(0.1, 0.1)).await;
    let mut run = start(config(&target.url, vec![gpu_hot()]));
    target.scraped(2).await;
    run.no_event();
    assert_eq!(run.metrics.source_up.get(&["gpu"]), 1.0);

    // Both GPUs go high; only gpu 0 is selected by the labels.
    target.set(&gpu_text(0.9, 0.9));
    let ev = run.next().await;
    assert_eq!(ev.kind, "gpu_hot");
    assert_eq!(ev.data["metric"], "gpu_mem_used_ratio");
    assert_eq!(ev.data["value"], 0.9);
    assert_eq!(ev.data["above"], 0.5);
    assert_eq!(ev.data["gpu"], "0");
    assert_eq!(ev.data["host"], "a");
    // Staying above does not fire again.
    target.scraped(3).await;
    run.no_event();

    // Back below re-arms; the next crossing fires with the new value.
    target.set(&gpu_text(0.2, 0.9));
    target.scraped(2).await;
    run.no_event();
    target.set(&gpu_text(0.95, 0.9));
    let ev = run.next().await;
    assert_eq!(ev.data["value"], 0.95);
    target.scraped(2).await;
    run.no_event();
}

#[tokio::test]
async fn below_thresholds_and_nan() {
    let target = Target::start("disk_free_bytes{mount=\"/\"} NaN\n").await;
    let low = Threshold {
        metric: "disk_free_bytes".into(),
        labels: BTreeMap::new(),
        above: None,
        below: Some(1000.0),
        event: "disk_low".into(),
    };
    let mut run = start(config(&target.url, vec![low]));
    target.scraped(2).await;
    run.no_event();
    target.set(
        "disk_free_bytes{mount=\"/\"} 12 1700000000000\ndisk_free_bytes{mount=\"/data\"} 5e9\n",
    );
    let ev = run.next().await;
    assert_eq!(ev.kind, "disk_low");
    assert_eq!(ev.data["mount"], "/");
    assert_eq!(ev.data["value"], 12.0);
    assert_eq!(ev.data["below"], 1000.0);
    target.scraped(2).await;
    run.no_event();
}

#[tokio::test]
async fn target_down_marks_the_source_down_with_the_reason() {
    let target = Target::start(&gpu_text(0.9, 0.1)).await;
    let mut run = start(config(&target.url, vec![gpu_hot()]));
    assert_eq!(run.next().await.kind, "gpu_hot");
    common::wait_until("up", &mut || run.metrics.source_up.get(&["gpu"]) == 1.0).await;

    target.status.store(500, Ordering::SeqCst);
    common::wait_until("down", &mut || run.metrics.source_up.get(&["gpu"]) == 0.0).await;
    let state = run.health.snapshot().pop().unwrap();
    let reason = state.reason.unwrap();
    assert!(reason.contains("HTTP 500"), "{reason}");
    assert!(reason.contains(&target.url), "{reason}");

    // Recovery: up again, and the series still above its threshold does not fire twice.
    target.status.store(200, Ordering::SeqCst);
    common::wait_until("up again", &mut || {
        run.metrics.source_up.get(&["gpu"]) == 1.0
    })
    .await;
    target.scraped(2).await;
    run.no_event();
}

#[tokio::test]
async fn connection_refused_is_a_source_error() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let run = start(config(&format!("http://{addr}/metrics"), vec![gpu_hot()]));
    common::wait_until("a reason", &mut || {
        run.health
            .snapshot()
            .pop()
            .and_then(|s| s.reason)
            .is_some_and(|r| r != "starting")
    })
    .await;
    let reason = run.health.snapshot().pop().unwrap().reason.unwrap();
    assert!(reason.contains("refused"), "{reason}");
    assert!(reason.contains("check the target is running"), "{reason}");
    assert_eq!(run.metrics.source_up.get(&["gpu"]), 0.0);
}
