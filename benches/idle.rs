//! What an idle daemon costs: CPU time and resident memory of `vigil run` over a quiet period
//! (30 s; `VIGIL_IDLE_SECS` to change it) with the quickstart config and with
//! `examples/self_healing.toml`, beside `sleep` over the same period as the baseline. The three
//! run at once, each measured from its own /proc entry, so they see the same machine.
//!
//! Run: `cargo bench --bench idle`. Aim (issue 10): under 0.2% of a core and 12 MB RSS. It
//! prints no ratio: the baseline's CPU is zero ticks, so the figures stand beside it instead.
//! `VIGIL_IDLE_COMPARE=/path/to/an/older/vigil` runs that binary with both configs too, in the
//! same period, for a before/after on the same machine state.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::sample;

/// A copy of `example` that listens on a free port, so the runs do not collide.
fn config(dir: &Path, example: &str) -> std::path::PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/{example}")).unwrap();
    let text = text.replace("127.0.0.1:9108", "127.0.0.1:0");
    let name = Path::new(example).file_name().unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn vigil(bin: &Path, dir: &Path, example: &str) -> Child {
    let data = dir.join(format!(
        "data-{}-{}",
        example.replace('/', "_"),
        bin.to_string_lossy().replace('/', "_")
    ));
    let log = dir.join("server.log");
    std::fs::write(&log, "").unwrap();
    Command::new(bin)
        .args(["run", "--config"])
        .arg(config(dir, example))
        .env("VIGIL_DATA_DIR", &data)
        .env("VIGIL_QUICKSTART_LOG", &log)
        .env("VLLM_LOG", &log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vigil starts")
}

fn main() {
    let secs: u64 = std::env::var("VIGIL_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut runs: Vec<(String, Child)> = vec![(
        "sleep (baseline)".to_string(),
        Command::new("sleep")
            .arg((secs + 10).to_string())
            .spawn()
            .unwrap(),
    )];
    let mut bins = vec![(PathBuf::from(env!("CARGO_BIN_EXE_vigil")), "")];
    if let Some(other) = std::env::var_os("VIGIL_IDLE_COMPARE") {
        bins.push((PathBuf::from(other), " (compare)"));
    }
    for (bin, label) in &bins {
        for (name, example) in [
            ("vigil quickstart", "examples/quickstart.toml"),
            ("vigil self_healing", "examples/self_healing.toml"),
        ] {
            runs.push((format!("{name}{label}"), vigil(bin, dir.path(), example)));
        }
    }
    // Start-up is not idle: measure from six seconds in, after `vigil run` has released the
    // pages start-up touched (five seconds after it starts, src/cli/memory.rs).
    std::thread::sleep(Duration::from_secs(6));
    let start: Vec<_> = runs.iter().map(|(_, c)| sample(c.id())).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let elapsed = t0.elapsed().as_secs_f64();
    println!("idle for {secs} s (CPU: % of one core over the period; RSS at the end; peak RSS)");
    println!(
        "{:<32} {:>8} {:>9} {:>10}",
        "process", "CPU %", "RSS MB", "peak MB"
    );
    for ((name, child), (t0, _, _)) in runs.iter_mut().zip(start) {
        let (t1, rss, hwm) = sample(child.id());
        let cpu = (t1 - t0) as f64 / hz / elapsed * 100.0;
        println!(
            "{name:<32} {cpu:>8.3} {:>9.1} {:>10.1}",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
        let _ = child.kill();
        let _ = child.wait();
    }
    println!(
        "CPU resolution: one clock tick = {:.3}% over {secs} s",
        100.0 / hz / elapsed
    );
}
