//! The canary runner's overhead, beside the service's own start time: a canary's duration
//! should be the service's start plus milliseconds.
//!
//! - `port search`: `ports::find_free` over a 5-port range whose first port is held.
//! - `judge`: thresholds and the comparison (Mann-Whitney U, z-test) over 50 + 50 samples.
//! - whole spare-path runs of the real test service (`tests/data/canary_service.py`, told to
//!   take `VIGIL_CANARY_START_MS`, default 500, before it listens, like a model server loading
//!   weights; one probe request): the service writes when its interpreter started and when it
//!   listened, so each run splits into *before* (port search, spawn, the interpreter's own
//!   start), the *service's start* (interpreter up to listening) and *after* (health detection
//!   at the default 20 ms poll, the probe's one request, judging, stopping the candidate,
//!   the store and the audit trail).
//!
//! Run: `cargo bench --bench canary` (`VIGIL_CANARY_RUNS`, default 10).

use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use vigil::app::App;
use vigil::canary::config::{JudgeConfig, PortRange};
use vigil::canary::probe::Sample;
use vigil::canary::{Outcome, PathChoice, Request};
use vigil::clock::SystemClock;
use vigil::config::Config;

const SERVICE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/canary_service.py");

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn free_base() -> u16 {
    loop {
        let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let p = l.local_addr().unwrap().port();
        drop(l);
        if p < 60000 && (0..5).all(|i| TcpListener::bind((Ipv4Addr::UNSPECIFIED, p + i)).is_ok()) {
            return p;
        }
    }
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn main() {
    // Port search.
    let base = free_base();
    let held = TcpListener::bind((Ipv4Addr::UNSPECIFIED, base)).unwrap();
    let range = PortRange {
        first: base,
        last: base + 4,
    };
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        assert_eq!(vigil::canary::ports::find_free(range), Ok(base + 1));
    }
    let port_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    drop(held);

    // Judging 50 + 50 samples.
    let samples = |ms: f64| -> Vec<Sample> {
        (0..50)
            .map(|i| Sample {
                latency_ms: ms + (i % 10) as f64,
                ok: i % 25 != 0,
            })
            .collect()
    };
    let (cand, prod) = (samples(60.0), samples(40.0));
    let cfg = JudgeConfig {
        max_error_rate: Some(0.05),
        max_p95_ms: Some(800.0),
        compare: Some(vigil::canary::config::Compare::Production),
        ..Default::default()
    };
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(vigil::canary::judge::judge(&cfg, &cand, Some(&prod)));
    }
    let judge_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;

    // Whole runs.
    let runs = env("VIGIL_CANARY_RUNS", 10);
    let start_ms = env("VIGIL_CANARY_START_MS", 500);
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let base = free_base();
    let text = format!(
        r#"
[canaries.bench]
production = {{ systemd = "bench.service" }}
command = ["python3", "{SERVICE}", "--port", "{{port}}", "--start-delay-ms", "{start_ms}", "--ready-file", "{ready}"]
ports = "{base}-{}"
path = "spare"
health = {{ http = "http://127.0.0.1:{{port}}/health", timeout = "30s" }}
probe = {{ http = "http://127.0.0.1:{{port}}/v1/completions", requests = 1, concurrency = 1 }}
judge = {{ max_error_rate = 0.0 }}
"#,
        base + 4,
        ready = ready.display()
    );
    let config = Config::parse("bench.toml", &text).unwrap();
    let app = Arc::new(App::new(
        config,
        dir.path().join("data"),
        Arc::new(SystemClock),
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut before, mut service, mut after, mut total) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let _ = std::fs::remove_file(&ready);
        let t0 = now_s();
        let report = rt
            .block_on(vigil::canary::run(
                app.clone(),
                "bench",
                Request {
                    path: Some(PathChoice::Spare),
                    ..Request::default()
                },
            ))
            .unwrap();
        let t1 = now_s();
        assert_eq!(report.result, Outcome::Promoted, "{}", report.reason);
        let stamps = std::fs::read_to_string(&ready).unwrap();
        let (top, listening) = stamps.split_once(' ').unwrap();
        let (top, listening): (f64, f64) = (top.parse().unwrap(), listening.parse().unwrap());
        before.push((top - t0) * 1000.0);
        service.push((listening - top) * 1000.0);
        after.push((t1 - listening) * 1000.0);
        total.push((t1 - t0) * 1000.0);
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("canary runner overhead ({runs} spare-path runs, the service told to take {start_ms} ms to listen)");
    println!("  port search (5-port range, first held)   {port_us:>9.1} us");
    println!("  judge (50 + 50 samples, U test, z-test)  {judge_us:>9.1} us");
    println!("  before the service runs (median)         {:>9.1} ms  port search, spawn, the interpreter's start", median(before));
    println!(
        "  the service's own start (median)         {:>9.1} ms",
        median(service)
    );
    println!("  after it listens (median)                {:>9.1} ms  health detection, 1 probe request, judge, stop, store, audit", median(after));
    println!(
        "  whole run (median)                       {:>9.1} ms",
        median(total)
    );
}
