//! Latency from a line appended to a watched log to the intent stored (the whole pipeline:
//! inotify, file source, rule engine, SQLite commit), against a baseline measured in the same
//! run: the bare inotify notification for an append to another file.
//!
//! Run: `cargo bench --bench pipeline`. Prints
//! `pipeline line_to_intent_ms p50=... p99=... | baseline inotify_ms p50=... p99=... | ratio_p50=...`,
//! where `ratio_p50` is subject / baseline, as in every bench: pipeline p50 / inotify p50, so
//! above 1 means slower than the baseline.

use notify::{RecursiveMode, Watcher};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil::app::App;
use vigil::clock::SystemClock;
use vigil::config::Config;

const SAMPLES: usize = 2000;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn append(path: &std::path::Path, line: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(line.as_bytes()).unwrap();
}

async fn pipeline_latencies(dir: &std::path::Path) -> Vec<f64> {
    let log = dir.join("server.log");
    std::fs::write(&log, "").unwrap();
    let text = format!(
        r#"
[api]
enabled = false
[sources.vllm_log]
type = "file"
path = "{}"
[[sources.vllm_log.match]]
regex = 'CUDA out of memory\. Tried to allocate (?P<alloc_gib>[0-9.]+) GiB'
event = "gpu_oom"
[rules.gpu_oom]
on = "gpu_oom"
intent = "alert_gpu_oom"
priority = 9
reason = "GPU OOM: tried to allocate {{alloc_gib}} GiB"
"#,
        log.display()
    );
    let config = Config::parse("bench.toml", &text).unwrap();
    let app = Arc::new(App::new(config, dir.join("data"), Arc::new(SystemClock)));
    let (stop, rx) = tokio::sync::watch::channel(false);
    let daemon = tokio::spawn(vigil::daemon::run(app.clone(), Default::default(), rx));
    let mut stored = app.stored.subscribe();
    // Wait until the file source is tailing: the first line must come through.
    let warmup = Instant::now();
    loop {
        append(&log, "CUDA out of memory. Tried to allocate 0.1 GiB\n");
        if tokio::time::timeout(Duration::from_millis(200), stored.recv())
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            warmup.elapsed() < Duration::from_secs(10),
            "pipeline never produced an intent"
        );
    }
    let mut out = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        // Distinct sizes: distinct events and intents, so no dedup hides a sample.
        let line = format!(
            "torch: CUDA out of memory. Tried to allocate {}.{} GiB (GPU 0)\n",
            i + 1,
            i % 10
        );
        let t0 = Instant::now();
        append(&log, &line);
        stored.recv().await.unwrap();
        out.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = stop.send(true);
    daemon.await.unwrap().unwrap();
    out
}

fn inotify_latencies(dir: &std::path::Path) -> Vec<f64> {
    let file = dir.join("baseline.log");
    std::fs::write(&file, "").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut w = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        if e.is_ok_and(|e| e.kind.is_modify()) {
            let _ = tx.send(Instant::now());
        }
    })
    .unwrap();
    w.watch(&file, RecursiveMode::NonRecursive).unwrap();
    let mut out = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        while rx.try_recv().is_ok() {}
        let t0 = Instant::now();
        append(&file, &format!("line {i}\n"));
        let t1 = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("inotify event");
        out.push((t1 - t0).as_secs_f64() * 1000.0);
    }
    out
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut lat = rt.block_on(pipeline_latencies(dir.path()));
    let mut base = inotify_latencies(dir.path());
    lat.sort_by(f64::total_cmp);
    base.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    let (b50, b99) = (percentile(&base, 0.5), percentile(&base, 0.99));
    println!(
        "pipeline line_to_intent_ms p50={p50:.3} p99={p99:.3} | baseline inotify_ms p50={b50:.3} p99={b99:.3} | ratio_p50={:.1} (samples={SAMPLES})",
        p50 / b50
    );
}
