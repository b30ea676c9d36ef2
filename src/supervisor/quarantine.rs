//! The diagnostics bundle written when a unit's restarts run out:
//! `DATA_DIR/quarantine/{unit}_{timestamp}/` with `unit.log` (the last 100 lines of output),
//! `error.json` (exit status, last error line, restart history), `system_state.json` (CPU,
//! memory, disk, load) and `unit.toml` (the unit's config as run).

use super::config::UnitConfig;
use super::state::ExitStatus;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Output lines kept in a bundle's `unit.log`.
pub const BUNDLE_LINES: usize = 100;

/// What the bundle records about the failure.
#[derive(Debug, Clone)]
pub struct Failure<'a> {
    pub unit: &'a str,
    pub config: &'a UnitConfig,
    pub exit: &'a ExitStatus,
    /// The last output lines, oldest first (at most `BUNDLE_LINES` are written).
    pub lines: &'a [String],
    /// Restart times (ms) inside the window.
    pub restarts: &'a [i64],
    pub now_ms: i64,
    /// The failure's fingerprint ([`super::learned::fingerprint`]) and the normalized lines
    /// it hashes.
    pub fingerprint: &'a str,
    pub failure: &'a str,
}

impl Failure<'_> {
    /// The last non-empty output line: the unit's last word, usually its error.
    pub fn last_error(&self) -> Option<&str> {
        self.lines
            .iter()
            .rev()
            .map(|l| l.trim())
            .find(|l| !l.is_empty())
    }
}

/// Writes the bundle under `quarantine_dir` and returns its directory. Blocking.
/// A time as it names bundle and snapshot directories: `20260101T000000.000Z`.
pub fn stamp(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y%m%dT%H%M%S%.3fZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

pub fn write_bundle(quarantine_dir: &Path, f: &Failure<'_>) -> std::io::Result<PathBuf> {
    let stamp = stamp(f.now_ms);
    let mut dir = quarantine_dir.join(format!("{}_{stamp}", f.unit));
    // Two exhaustions within one millisecond (tests, replicas) each get their own bundle.
    let mut n = 1;
    while dir.exists() {
        n += 1;
        dir = quarantine_dir.join(format!("{}_{stamp}_{n}", f.unit));
    }
    std::fs::create_dir_all(&dir)?;
    let start = f.lines.len().saturating_sub(BUNDLE_LINES);
    let mut log = f.lines[start..].join("\n");
    if !log.is_empty() {
        log.push('\n');
    }
    std::fs::write(dir.join("unit.log"), log)?;
    let error = json!({
        "unit": f.unit,
        "exit_code": f.exit.code,
        "signal": f.exit.signal,
        "exit": f.exit.describe(),
        "last_error": f.last_error(),
        "restarts": f.restarts.len(),
        "max_restarts": f.config.max_restarts,
        "restart_window": f.config.restart_window.to_string(),
        "restart_history": f.restarts.iter().map(|t| crate::clock::rfc3339_ms(*t)).collect::<Vec<_>>(),
        "at": crate::clock::rfc3339_ms(f.now_ms),
        "fingerprint": f.fingerprint,
        "failure": f.failure,
    });
    write_json(&dir.join("error.json"), &error)?;
    write_json(
        &dir.join("system_state.json"),
        &system_state(quarantine_dir),
    )?;
    let toml = toml::to_string(f.config).unwrap_or_else(|e| format!("# not serializable: {e}\n"));
    let mut table = format!("[units.{}]\n{toml}", f.unit);
    for m in &f.config.matches.0 {
        table.push_str(&format!(
            "\n[[units.{}.match]]\nregex = {}\nevent = {}\n",
            f.unit,
            toml_str(m.regex.0.as_str()),
            toml_str(&m.event)
        ));
    }
    std::fs::write(dir.join("unit.toml"), table)?;
    Ok(dir)
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn write_json(path: &Path, v: &serde_json::Value) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(v).expect("JSON values serialize");
    std::fs::write(path, text + "\n")
}

/// CPU busy percent over a short sample, memory, disk of the data directory, load.
fn system_state(disk: &Path) -> serde_json::Value {
    let cpu = cpu_percent(Duration::from_millis(100));
    let probe = disk
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    match crate::sources::host::read(&[probe.to_path_buf()]) {
        Ok(r) => {
            let mem_used = r.memory_total_kb.saturating_sub(r.memory_available_kb);
            json!({
                "cpu_percent": cpu,
                "cpus": r.cpus,
                "load1": r.load1,
                "memory_total_kb": r.memory_total_kb,
                "memory_available_kb": r.memory_available_kb,
                "memory_percent": if r.memory_total_kb > 0 { (mem_used as f64 / r.memory_total_kb as f64 * 1000.0).round() / 10.0 } else { 0.0 },
                "disk": r.disks.iter().map(|(m, p)| json!({"mount": m, "percent_used": p})).collect::<Vec<_>>(),
            })
        }
        Err(e) => json!({ "cpu_percent": cpu, "error": e.to_string() }),
    }
}

fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let idle = v.get(3)? + v.get(4).unwrap_or(&0);
    Some((v.iter().sum(), idle))
}

fn cpu_percent(sample: Duration) -> Option<f64> {
    let (t0, i0) = cpu_times()?;
    std::thread::sleep(sample);
    let (t1, i1) = cpu_times()?;
    let total = t1.saturating_sub(t0);
    (total > 0).then(|| {
        let busy = total - i1.saturating_sub(i0).min(total);
        (busy as f64 / total as f64 * 1000.0).round() / 10.0
    })
}
