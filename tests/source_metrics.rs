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

/// A target that answers with the headers it is given and records what it was asked with.
#[derive(Clone)]
struct RawTarget {
    url: String,
    accept: Arc<Mutex<Vec<String>>>,
    accept_encoding: Arc<Mutex<Vec<String>>>,
}

impl RawTarget {
    /// Serves `body` with `content_type`; gzipped (by the real `gzip` program) when the
    /// request accepts gzip, as servers do.
    async fn start(content_type: &'static str, body: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = RawTarget {
            url: format!("http://{}/metrics", listener.local_addr().unwrap()),
            accept: Arc::default(),
            accept_encoding: Arc::default(),
        };
        let plain = body.as_bytes().to_vec();
        let gz = {
            use std::io::Write;
            let mut child = std::process::Command::new("gzip")
                .arg("-c")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("gzip is installed");
            child.stdin.take().unwrap().write_all(&plain).unwrap();
            child.wait_with_output().unwrap().stdout
        };
        let s = t.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let s = s.clone();
                let (plain, gz) = (plain.clone(), gz.clone());
                async move {
                    let get = |h| {
                        headers
                            .get(h)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    let encoding = get(axum::http::header::ACCEPT_ENCODING);
                    s.accept
                        .lock()
                        .unwrap()
                        .push(get(axum::http::header::ACCEPT));
                    s.accept_encoding.lock().unwrap().push(encoding.clone());
                    let mut resp = axum::http::Response::builder()
                        .header(axum::http::header::CONTENT_TYPE, content_type);
                    let body = if encoding.contains("gzip") {
                        resp = resp.header(axum::http::header::CONTENT_ENCODING, "gzip");
                        gz
                    } else {
                        plain
                    };
                    resp.body(axum::body::Body::from(body)).unwrap()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        t
    }
}

const OPENMETRICS: &str = "# TYPE gpu_mem_used_ratio gauge\n\
# UNIT gpu_mem_used_ratio ratio\n\
# HELP gpu_mem_used_ratio Used.\n\
gpu_mem_used_ratio{gpu=\"0\",host=\"a\"} 0.9 1700000000.250\n\
# TYPE lat histogram\n\
lat_bucket{le=\"0.1\"} 8 # {trace_id=\"abc#1\"} 0.05 1700000000.123\n\
lat_bucket{le=\"+Inf\"} 10 1700000000 # {trace_id=\"def\"} 7\n\
lat_count 10\n\
lat_sum 1.5\n\
# EOF\n";

fn lat_high() -> Threshold {
    Threshold {
        metric: "lat_bucket".into(),
        labels: BTreeMap::from([("le".into(), "+Inf".into())]),
        above: Some(9.0),
        below: None,
        event: "lat_high".into(),
    }
}

#[tokio::test]
async fn openmetrics_pages_are_read_with_exemplars_and_second_timestamps() {
    let target = RawTarget::start(
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        OPENMETRICS,
    )
    .await;
    let mut run = start(config(&target.url, vec![gpu_hot(), lat_high()]));
    let ev = run.next().await;
    assert_eq!(ev.kind, "gpu_hot");
    assert_eq!(ev.data["value"], 0.9);
    let ev = run.next().await;
    assert_eq!(ev.kind, "lat_high");
    assert_eq!(ev.data["value"], 10.0);
    assert_eq!(ev.data["le"], "+Inf");
    // Every sample was read: the source is up and not degraded.
    assert_eq!(run.metrics.source_up.get(&["gpu"]), 1.0);
    assert_eq!(run.metrics.source_degraded.get(&["gpu"]), 0.0);
    assert_eq!(run.metrics.scrape_samples_invalid_total.get(&["gpu"]), 0.0);
    assert_eq!(run.state().unwrap().reason, None);
    // It asked the way Prometheus asks.
    assert_eq!(
        target.accept.lock().unwrap()[0],
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    );
    assert_eq!(
        vigil::sources::metrics::ACCEPT,
        target.accept.lock().unwrap()[0]
    );
}

#[tokio::test]
async fn gzipped_pages_are_read() {
    let target = RawTarget::start(
        "text/plain; version=0.0.4; charset=utf-8",
        &gpu_text(0.9, 0.1).replace("this line is { broken\n", ""),
    )
    .await;
    let mut run = start(config(&target.url, vec![gpu_hot()]));
    let ev = run.next().await;
    assert_eq!(ev.kind, "gpu_hot");
    assert_eq!(ev.data["value"], 0.9);
    assert!(
        target.accept_encoding.lock().unwrap()[0].contains("gzip"),
        "{:?}",
        target.accept_encoding
    );
    assert_eq!(run.metrics.source_degraded.get(&["gpu"]), 0.0);
}

#[tokio::test]
async fn unparsable_samples_mark_the_source_degraded_and_are_counted() {
    let target =
        Target::start("gpu_mem_used_ratio{gpu=\"0\"} 0.9\nbroken{a=\"x} 2\nnovalue\n").await;
    let mut run = start(config(&target.url, vec![gpu_hot()]));
    assert_eq!(run.next().await.kind, "gpu_hot");
    run.wait_state("degraded", |s| s.up && s.reason.is_some())
        .await;
    let reason = run.state().unwrap().reason.unwrap();
    assert_eq!(
        reason,
        "2 of 3 samples in the last scrape could not be parsed as Prometheus text (first at line 2: unterminated value for label a); thresholds on them are not checked"
    );
    assert_eq!(run.metrics.source_up.get(&["gpu"]), 1.0);
    assert_eq!(run.metrics.source_degraded.get(&["gpu"]), 1.0);
    assert!(run.metrics.scrape_samples_invalid_total.get(&["gpu"]) >= 2.0);
    let text = run.metrics.render();
    assert!(
        text.contains("vigil_scrape_samples_invalid_total{source=\"gpu\"}"),
        "{text}"
    );

    // A clean page clears it.
    target.set("gpu_mem_used_ratio{gpu=\"0\"} 0.9\n");
    run.wait_state("no longer degraded", |s| s.up && s.reason.is_none())
        .await;
    assert_eq!(run.metrics.source_degraded.get(&["gpu"]), 0.0);
}
