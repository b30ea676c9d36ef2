//! What supervising costs when nothing happens: CPU time and resident memory of `vigil run`
//! with 50 supervised `sleep` units (no API, no sources) over a quiet period (30 s;
//! `VIGIL_IDLE_SECS` to change it), beside `sleep` as the baseline. Crashes are noticed through
//! the kernel (SIGCHLD and pidfds), never by polling, so an idle supervisor should cost nothing
//! but memory.
//!
//! Run: `cargo bench --bench units_idle`. Aim (issue 12): under 0.5% of a core and 20 MB RSS.
//! A clean stop of vigil leaves its units running for the next daemon; the bench kills them
//! (found by their `VIGIL_UNIT_ID` marker) when it is done.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const UNITS: usize = 50;

use support::sample;

/// Pids whose environment marks them as processes of a unit named `prefix...`.
fn marked(prefix: &str) -> Vec<i32> {
    let want = format!("VIGIL_UNIT_ID={prefix}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|v| v.starts_with(want.as_bytes()))
            })
        })
        .collect()
}

fn main() {
    let secs: u64 = std::env::var("VIGIL_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().unwrap();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let prefix = format!("idle{}u", std::process::id());
    let mut config = String::from("[api]\nenabled = false\n");
    for i in 0..UNITS {
        config.push_str(&format!(
            "\n[units.{prefix}{i}]\ncommand = [\"/bin/sleep\", \"100000\"]\n"
        ));
    }
    let path = dir.path().join("vigil.toml");
    std::fs::write(&path, config).unwrap();
    let mut baseline = Command::new("sleep")
        .arg((secs + 30).to_string())
        .spawn()
        .unwrap();
    let mut vigil = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--config"])
        .arg(&path)
        .env("VIGIL_DATA_DIR", dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vigil starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while marked(&prefix).len() < UNITS {
        assert!(Instant::now() < deadline, "the units did not all start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Start-up is not idle: measure from six seconds in (vigil releases start-up's pages after
    // five).
    std::thread::sleep(Duration::from_secs(6));
    let runs = [
        ("sleep (baseline)", baseline.id()),
        ("vigil, 50 units", vigil.id()),
    ];
    let start: Vec<_> = runs.iter().map(|(_, pid)| sample(*pid)).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let elapsed = t0.elapsed().as_secs_f64();
    println!("idle for {secs} s with {UNITS} supervised sleep units (CPU: % of one core over the period; RSS at the end; peak RSS)");
    println!(
        "{:<22} {:>8} {:>9} {:>10}",
        "process", "CPU %", "RSS MB", "peak MB"
    );
    for ((name, pid), (t0, _, _)) in runs.iter().zip(start) {
        let (t1, rss, hwm) = sample(*pid);
        let cpu = (t1 - t0) as f64 / hz / elapsed * 100.0;
        println!(
            "{name:<22} {cpu:>8.3} {:>9.1} {:>10.1}",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    println!(
        "CPU resolution: one clock tick = {:.3}% over {secs} s",
        100.0 / hz / elapsed
    );
    let _ = baseline.kill();
    let _ = baseline.wait();
    unsafe { libc::kill(vigil.id() as i32, libc::SIGTERM) };
    let _ = vigil.wait();
    for pid in marked(&prefix) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}
