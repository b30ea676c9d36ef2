//! The probe source against a real TCP listener, a real HTTP server and real commands.

mod common;

use common::RunningSource;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vigil::config::Dur;
use vigil::sources::probe::{ProbeConfig, ProbeSource};

fn config() -> ProbeConfig {
    ProbeConfig {
        http: None,
        tcp: None,
        command: None,
        interval: Dur(Duration::from_millis(50)),
        timeout: Dur(Duration::from_millis(500)),
    }
}

/// Runs the probe on its own: an error (not a failed check) fails the test.
fn start(config: ProbeConfig) -> RunningSource {
    RunningSource::start_unsupervised("probe", Box::new(ProbeSource::new(config)))
}

/// The next `probe_ok`, passing over failures still in flight.
async fn next_ok(run: &mut RunningSource) -> vigil::event::Event {
    loop {
        let ev = run.next().await;
        if ev.kind == "probe_ok" {
            return ev;
        }
    }
}

#[tokio::test]
async fn tcp_target_stopped_and_restarted() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut run = start(ProbeConfig {
        tcp: Some(addr.to_string()),
        ..config()
    });
    // One successful check reached the listener; it emitted nothing.
    let _ = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .unwrap()
        .unwrap();
    drop(listener);

    let ev = run.next().await;
    assert_eq!(ev.kind, "probe_failed", "{ev:?}");
    assert_eq!(ev.data["probe"], addr.to_string());
    assert_eq!(ev.data["consecutive"], 1);
    assert!(
        ev.data["error"].as_str().unwrap().contains("refused"),
        "{ev:?}"
    );
    let ev = run.next().await;
    assert_eq!(ev.data["consecutive"], 2);
    // The source is up although its target is down.
    assert_eq!(run.metrics.source_up.get(&["probe"]), 1.0);

    let listener = std::net::TcpListener::bind(addr).unwrap();
    let ev = next_ok(&mut run).await;
    assert!(ev.data["after_failures"].as_u64().unwrap() >= 2, "{ev:?}");
    assert!(ev.data.get("error").is_none());
    drop(listener);
    // The count starts over after a recovery.
    let ev = run.next().await;
    assert_eq!(ev.kind, "probe_failed");
    assert_eq!(ev.data["consecutive"], 1);
    run.stop().await;
}

#[tokio::test]
async fn http_status_decides_health() {
    let status = Arc::new(AtomicU16::new(200));
    let hits = Arc::new(AtomicUsize::new(0));
    let app = {
        let (status, hits) = (status.clone(), hits.clone());
        axum::Router::new().route(
            "/health",
            axum::routing::get(move || {
                let (status, hits) = (status.clone(), hits.clone());
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    axum::http::StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap()
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut run = start(ProbeConfig {
        http: Some(url.clone()),
        ..config()
    });
    common::wait_until("two probe checks", &mut || hits.load(Ordering::SeqCst) >= 2).await;
    status.store(503, Ordering::SeqCst);
    let ev = run.next().await;
    assert_eq!(
        ev.kind, "probe_failed",
        "steady success emits nothing: {ev:?}"
    );
    assert_eq!(ev.data["probe"], url);
    assert_eq!(ev.data["error"], "HTTP 503 Service Unavailable");
    status.store(204, Ordering::SeqCst);
    let ev = next_ok(&mut run).await;
    assert!(ev.data["after_failures"].as_u64().unwrap() >= 1);
    run.stop().await;
}

#[tokio::test]
async fn http_target_down_is_a_failure_not_an_error() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut run = start(ProbeConfig {
        http: Some(format!("http://{addr}/")),
        ..config()
    });
    let ev = run.next().await;
    assert_eq!(ev.kind, "probe_failed");
    assert!(
        ev.data["error"].as_str().unwrap().contains("refused"),
        "{ev:?}"
    );
    run.stop().await;
}

#[tokio::test]
async fn commands_true_false_and_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("healthy");
    // `test -e flag` is `false` until the file exists, then `true`.
    let mut run = start(ProbeConfig {
        command: Some(vec!["test".into(), "-e".into(), flag.display().to_string()]),
        ..config()
    });
    let ev = run.next().await;
    assert_eq!(ev.kind, "probe_failed");
    assert_eq!(ev.data["error"], "exit status 1");
    assert_eq!(ev.data["consecutive"], 1);
    std::fs::write(&flag, "").unwrap();
    let ev = next_ok(&mut run).await;
    assert!(ev.data["probe"].as_str().unwrap().starts_with("test -e "));
    run.stop().await;

    let mut run = start(ProbeConfig {
        command: Some(vec!["sleep".into(), "5".into()]),
        timeout: Dur(Duration::from_millis(200)),
        ..config()
    });
    let ev = run.next().await;
    assert_eq!(ev.kind, "probe_failed");
    assert!(
        ev.data["error"].as_str().unwrap().starts_with("timed out"),
        "{ev:?}"
    );
    run.stop().await;

    let mut run = start(ProbeConfig {
        command: Some(vec!["/nonexistent/check".into()]),
        ..config()
    });
    let ev = run.next().await;
    assert_eq!(
        ev.data["error"],
        "command `/nonexistent/check` not found: install it or give its full path"
    );
    run.stop().await;
}
