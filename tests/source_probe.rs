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

/// A raw HTTP server on 127.0.0.1: reads each request's head, writes `answer`, then keeps the
/// connection open without another byte. Counts the requests.
async fn raw_server(answer: &'static [u8]) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let _ = conn.write_all(answer).await;
                // Hang: hold the connection until the client gives up.
                let _ = conn.read(&mut buf).await;
            });
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn a_body_that_never_finishes_fails_within_the_timeout() {
    let (addr, hits) =
        raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n20 bytes of the body").await;
    let mut run = start(ProbeConfig {
        http: Some(format!("http://{addr}/health")),
        timeout: Dur(Duration::from_secs(1)),
        ..config()
    });
    let started = std::time::Instant::now();
    let ev = run.next().await;
    assert_eq!(ev.kind, "probe_failed", "{ev:?}");
    assert_eq!(ev.data["error"], "no complete answer within 1s");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(hits.load(Ordering::SeqCst) >= 1);
    run.stop().await;
}

#[tokio::test]
async fn a_long_body_is_read_only_up_to_a_bound() {
    // 1 MiB promised, 128 KiB sent, then nothing: the probe has what it needs at 64 KiB.
    static ANSWER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let answer = ANSWER.get_or_init(|| {
        let mut a = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".to_vec();
        a.extend(std::iter::repeat_n(b'x', 128 << 10));
        a
    });
    let (addr, hits) = raw_server(answer).await;
    let mut run = start(ProbeConfig {
        http: Some(format!("http://{addr}/health")),
        timeout: Dur(Duration::from_secs(1)),
        ..config()
    });
    common::wait_until("three checks", &mut || hits.load(Ordering::SeqCst) >= 3).await;
    run.no_event();
    run.stop().await;
}

/// `HTTP_PROXY` pointing at a proxy that answers 502 to everything: a probe of 127.0.0.1 or
/// localhost goes straight to the service. (This sets the variable for the whole test
/// binary; every other probe here is of loopback too, so none of them is affected.)
#[tokio::test]
async fn loopback_is_never_proxied() {
    let (proxy, proxied) =
        raw_server(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
    for var in ["HTTP_PROXY", "http_proxy", "ALL_PROXY"] {
        std::env::set_var(var, format!("http://{proxy}"));
    }
    let (service, served) =
        raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
    let port = service.rsplit(':').next().unwrap();
    for url in [
        format!("http://{service}/health"),
        format!("http://localhost:{port}/health"),
    ] {
        let before = served.load(Ordering::SeqCst);
        let mut run = start(ProbeConfig {
            http: Some(url),
            ..config()
        });
        common::wait_until("three checks", &mut || {
            served.load(Ordering::SeqCst) >= before + 3
        })
        .await;
        run.no_event();
        run.stop().await;
    }
    assert_eq!(proxied.load(Ordering::SeqCst), 0);
}

/// A source that panics on its first run and works on the next.
struct PanicsOnce(Arc<AtomicUsize>);

impl vigil::sources::Source for PanicsOnce {
    fn run<'a>(
        &'a mut self,
        ctx: &'a vigil::sources::SourceContext,
    ) -> vigil::sources::BoxFuture<'a, Result<(), vigil::sources::SourceError>> {
        Box::pin(async move {
            if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
                panic!("first run breaks");
            }
            ctx.up();
            ctx.stopping().await;
            Ok(())
        })
    }
}

#[tokio::test]
async fn a_source_that_panics_is_reported_and_restarted() {
    let runs = Arc::new(AtomicUsize::new(0));
    let run = RunningSource::start_registered("flaky", "probe", Box::new(PanicsOnce(runs.clone())));
    run.wait_state("down with the panic", |s| {
        !s.up
            && s.reason
                .as_deref()
                .is_some_and(|r| r.contains("first run breaks"))
    })
    .await;
    assert_eq!(
        run.state().unwrap().reason.unwrap(),
        "source crashed (a bug in vigil, please report it): first run breaks"
    );
    run.wait_state("up after the restart", |s| s.up).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    run.stop().await;
}

/// The case: a probe built with a zero interval (which `vigil check` now refuses)
/// panicked inside tokio and stayed "up" forever; the supervisor now says it is down.
#[tokio::test]
async fn a_zero_interval_probe_is_down_with_the_reason() {
    let run = RunningSource::start_registered(
        "probe",
        "probe",
        Box::new(ProbeSource::new(ProbeConfig {
            tcp: Some("127.0.0.1:1".into()),
            interval: Dur(Duration::ZERO),
            ..config()
        })),
    );
    run.wait_state("down", |s| {
        !s.up && s.reason.as_deref().is_some_and(|r| r.contains("crashed"))
    })
    .await;
    let reason = run.state().unwrap().reason.unwrap();
    assert!(reason.contains("must be non-zero"), "{reason}");
    assert_eq!(run.metrics.source_up.get(&["probe"]), 0.0);
    run.stop().await;
}
