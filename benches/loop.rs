//! The whole loop: a line appended to a watched log until the process of a playbook's `run`
//! step is running (inotify, file source, rule engine, intent stored, orchestrator claim,
//! gates, step spawn), beside the baseline of spawning the same process directly. The
//! process writes one line into a FIFO; both measurements stop when the line is read.
//!
//! Run: `cargo bench --bench loop`. Prints p50 and p99 of each and their ratio, subject /
//! baseline as in every bench (loop p50 / spawn p50: above 1 means slower than the baseline). Aim (issue 11): p50 under 3 ms, p99 under 10 ms; monit 5.33 with `set daemon 1`
//! measured 245 ms median here.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil::app::App;
use vigil::clock::SystemClock;
use vigil::config::Config;

const SAMPLES: usize = 500;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(line.as_bytes()).unwrap();
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Reads the FIFO on a thread until a writer sends `expect` (opening blocks until a writer
/// opens it) and returns the instant it arrived; `None` when `cancel` wrote "cancel".
fn arrival(fifo: PathBuf, expect: String) -> std::thread::JoinHandle<Option<Instant>> {
    std::thread::spawn(move || loop {
        let mut text = String::new();
        std::fs::File::open(&fifo)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        if text.lines().any(|l| l == expect) {
            return Some(Instant::now());
        }
        if text.lines().any(|l| l == "cancel") {
            return None;
        }
    })
}

fn cancel(fifo: &Path) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(fifo)
        .unwrap()
        .write_all(b"cancel\n")
        .unwrap();
}

/// The step's process: a shell writing one line into the FIFO.
fn step_argv(fifo: &Path, what: &str) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("echo {what} > {}", fifo.display()),
    ]
}

async fn loop_latencies(dir: &Path) -> Vec<f64> {
    let log = dir.join("server.log");
    let fifo = dir.join("loop.fifo");
    mkfifo(&fifo);
    std::fs::write(&log, "").unwrap();
    let text = format!(
        r#"
[api]
enabled = false
[sources.vllm_log]
type = "file"
path = "{log}"
[[sources.vllm_log.match]]
regex = 'CUDA out of memory\. Tried to allocate (?P<alloc_gib>[0-9.]+) GiB'
event = "gpu_oom"
[rules.gpu_oom]
on = "gpu_oom"
intent = "alert_gpu_oom"
priority = 9
reason = "GPU OOM: tried to allocate {{alloc_gib}} GiB"
[playbooks.fit]
on = "alert_gpu_oom"
steps = [{{ run = ["/bin/sh", "-c", "echo {{data.alloc_gib}} > {fifo}"] }}]
"#,
        log = log.display(),
        fifo = fifo.display()
    );
    let config = Config::parse("bench.toml", &text).unwrap();
    let app = Arc::new(App::new(config, dir.join("data"), Arc::new(SystemClock)));
    let (stop, rx) = tokio::sync::watch::channel(false);
    let daemon = tokio::spawn(vigil::daemon::run(app.clone(), Default::default(), rx));
    // Wait until the file source is tailing: a line must come through to the step.
    let warmup = Instant::now();
    for n in 0.. {
        let size = format!("0.{n}");
        let got = arrival(fifo.clone(), size.clone());
        append(
            &log,
            &format!("CUDA out of memory. Tried to allocate {size} GiB\n"),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        if !got.is_finished() {
            cancel(&fifo);
        }
        if got.join().unwrap().is_some() {
            break;
        }
        assert!(
            warmup.elapsed() < Duration::from_secs(20),
            "the loop never ran the step"
        );
    }
    let mut out = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        // Distinct sizes: distinct events and intents, so no dedup hides a sample.
        let size = format!("{}.{}", i + 1, i % 10);
        let got = arrival(fifo.clone(), size.clone());
        let line = format!("torch: CUDA out of memory. Tried to allocate {size} GiB (GPU 0)\n");
        let t0 = Instant::now();
        append(&log, &line);
        let t1 = tokio::task::spawn_blocking(move || got.join().unwrap())
            .await
            .unwrap()
            .expect("the step ran");
        out.push((t1 - t0).as_secs_f64() * 1000.0);
    }
    let _ = stop.send(true);
    daemon.await.unwrap().unwrap();
    out
}

fn spawn_latencies(dir: &Path) -> Vec<f64> {
    let fifo = dir.join("baseline.fifo");
    mkfifo(&fifo);
    let mut out = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let got = arrival(fifo.clone(), i.to_string());
        let argv = step_argv(&fifo, &i.to_string());
        let t0 = Instant::now();
        let mut child = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .spawn()
            .unwrap();
        let t1 = got.join().unwrap().expect("the process ran");
        out.push((t1 - t0).as_secs_f64() * 1000.0);
        child.wait().unwrap();
    }
    out
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut lat = rt.block_on(loop_latencies(dir.path()));
    let mut base = spawn_latencies(dir.path());
    lat.sort_by(f64::total_cmp);
    base.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    let (b50, b99) = (percentile(&base, 0.5), percentile(&base, 0.99));
    println!(
        "loop line_to_step_running_ms p50={p50:.3} p99={p99:.3} | baseline spawn_ms p50={b50:.3} p99={b99:.3} | loop/baseline p50={:.1} (samples={SAMPLES})",
        p50 / b50
    );
}
