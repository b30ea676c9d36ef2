//! The API under clients that misbehave: idle crowds, slow headers, big bodies, and the token
//! rules of RFC 9110 and of a daemon given no token (it makes one).

mod common;

use common::{TestDaemon, TOKEN};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use vigil::intent::{inbox, NewIntent};

const LIMITS: &str = "max_connections = 8\nheader_timeout = \"300ms\"\nmax_body_size = 1000\n";

/// Connections the server has accepted on `port`: established sockets on that local port that
/// have a descriptor (in the kernel's backlog they have none yet: inode 0).
fn accepted(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f[1].rsplit(':').next().unwrap();
            u16::from_str_radix(local_port, 16) == Ok(port) && f[3] == "01" && f[9] != "0"
        })
        .count()
}

fn intent_body() -> serde_json::Value {
    serde_json::json!({"intent_type": "alert_api", "priority": 5, "reason": "from api"})
}

/// The test daemon, with the limits in its `[api]` table.
async fn daemon() -> TestDaemon {
    TestDaemon::start_with_api(LIMITS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_crowd_cannot_use_up_the_daemon() {
    let d = daemon().await;
    let addr = *d.app.api_addr.get().unwrap();
    // 40 clients connect and say nothing: 1,100 of them used to exhaust the descriptors.
    let idle: Vec<_> = (0..40)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    d.wait_until("the server accepted up to its limit", || {
        accepted(addr.port()) == 8
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(accepted(addr.port()), 8, "at most max_connections at once");
    // Intake goes on: through the inbox at once, and through the API once idle ones time out.
    inbox::write(
        &d.app.inbox_dir(),
        &NewIntent::from_body(intent_body().as_object().unwrap(), "test").unwrap(),
        1,
    )
    .unwrap();
    d.wait_until("inbox intake goes on", || d.intents().len() == 1)
        .await;
    let r = reqwest::Client::new()
        .post(d.api("/api/intents"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"intent_type": "alert_other", "priority": 5}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    drop(idle);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    let d = daemon().await;
    let addr = *d.app.api_addr.get().unwrap();
    let started = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"POST /api/intents HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let mut buf = Vec::new();
        // The server answers 408 or just closes; either way the read ends.
        s.read_to_end(&mut buf).map(|_| buf)
    })
    .await
    .unwrap();
    assert!(
        closed.is_ok(),
        "closed by the server, not by our timeout: {closed:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(9));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413_and_the_bearer_scheme_is_case_insensitive() {
    let d = daemon().await;
    let big =
        serde_json::json!({"intent_type": "alert_big", "priority": 5, "reason": "x".repeat(2000)});
    let r = d.post("/api/intents", &big).await;
    assert_eq!(r.status(), 413);
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = reqwest::Client::new()
            .post(d.api("/api/intents"))
            .header("Authorization", format!("{scheme} {TOKEN}"))
            .json(&intent_body())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{scheme}: {}", r.status());
    }
    d.stop().await;
}

/// A daemon given no token generates one into DATA_DIR/api.token (0600) on its first start:
/// state-changing calls without it are refused, with it accepted; reads stay open on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_token_one_is_generated_and_required() {
    use std::os::unix::fs::PermissionsExt;
    let d = TestDaemon::start_without_token("").await;
    let file = d.path("data/api.token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", file.display());
    let token = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_eq!(token.len(), 64, "32 random bytes as hex");
    for (path, body) in [
        ("/api/intents", intent_body()),
        ("/api/events", serde_json::json!({"type": "x"})),
    ] {
        for given in [None, Some("anything")] {
            let r = d.post_as(given, path, Some(&body)).await;
            assert_eq!(r.status(), 401, "{path} with {given:?}");
        }
    }
    assert!(d.intents().is_empty());
    let r = d
        .post_as(Some(&token), "/api/intents", Some(&intent_body()))
        .await;
    assert_eq!(r.status(), 201);
    let r = d
        .post_as(
            Some(&token),
            "/api/events",
            Some(&serde_json::json!({"type": "x"})),
        )
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(d.intents().len(), 1);
    // Reads stay open on loopback.
    assert_eq!(d.get_json("/healthz").await["status"], "ok");
    assert!(d.get_json("/api/intents").await.is_array());
    d.stop().await;
}
