//! `type = "host"`: the host's own vital signs, read from `/proc` and `statvfs` on an interval:
//! disk usage per mount, available memory, load per CPU. Each threshold fires on crossing and
//! re-arms when the reading is back on the good side, so a full disk is one event, not one per
//! interval.

use super::{BoxFuture, Source, SourceContext, SourceError, SourceKind};
use crate::config::Dur;
use crate::event::Data;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashSet;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// Mount points whose usage is checked.
    #[serde(default = "default_mounts")]
    pub mounts: Vec<PathBuf>,
    /// `disk_full` when a mount is more than this percent used.
    #[serde(default = "default_disk")]
    pub disk_above: f64,
    /// `memory_low` when available memory is below this percent of the total.
    #[serde(default = "default_memory")]
    pub memory_below: f64,
    /// `load_high` when the 1-minute load average per CPU is above this.
    #[serde(default = "default_load")]
    pub load_above: f64,
}

impl SourceKind for HostConfig {
    fn positive(&self) -> Vec<(&'static str, Dur)> {
        vec![("interval", self.interval)]
    }

    fn event_types(&self) -> Vec<String> {
        EVENTS.iter().map(|e| e.to_string()).collect()
    }

    fn event_fields(&self, event: &str) -> Option<Vec<String>> {
        let fields: &[&str] = match event {
            "disk_full" => &["mount", "used_pct", "threshold"],
            "memory_low" => &["available_pct", "available_mb", "threshold"],
            _ => &["load1", "per_cpu", "cpus", "threshold"],
        };
        Some(fields.iter().map(|f| f.to_string()).collect())
    }

    fn build(&self) -> Box<dyn Source> {
        Box::new(HostSource::new(self.clone()))
    }
}

fn default_interval() -> Dur {
    Dur::secs(30)
}
fn default_mounts() -> Vec<PathBuf> {
    vec![PathBuf::from("/")]
}
fn default_disk() -> f64 {
    90.0
}
fn default_memory() -> f64 {
    10.0
}
fn default_load() -> f64 {
    2.0
}

pub const EVENTS: [&str; 3] = ["disk_full", "memory_low", "load_high"];

/// One look at the host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// (mount, percent used)
    pub disks: Vec<(String, f64)>,
    pub memory_total_kb: u64,
    pub memory_available_kb: u64,
    pub load1: f64,
    pub cpus: usize,
}

pub fn read(mounts: &[PathBuf]) -> Result<Reading, SourceError> {
    let mut r = Reading::default();
    for m in mounts {
        r.disks.push((m.display().to_string(), disk_used_pct(m)?));
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| SourceError::new(format!("cannot read /proc/meminfo: {e}")))?;
    let field = |name: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    r.memory_total_kb = field("MemTotal:").unwrap_or(0);
    r.memory_available_kb = field("MemAvailable:").unwrap_or(r.memory_total_kb);
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .map_err(|e| SourceError::new(format!("cannot read /proc/loadavg: {e}")))?;
    r.load1 = loadavg
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    r.cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(r)
}

fn disk_used_pct(mount: &std::path::Path) -> Result<f64, SourceError> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(mount.as_os_str().as_bytes())
        .map_err(|_| SourceError::new(format!("mount path {} has a NUL byte", mount.display())))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `st` a writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(SourceError::new(format!(
            "cannot stat mount {}: {e}; fix `mounts` in the host source",
            mount.display()
        )));
    }
    let total = st.f_blocks as f64 * st.f_frsize as f64;
    let avail = st.f_bavail as f64 * st.f_frsize as f64;
    let free = st.f_bfree as f64 * st.f_frsize as f64;
    // As df computes it: used / (used + available to unprivileged users).
    let used = total - free;
    Ok(if used + avail > 0.0 {
        (used / (used + avail) * 100.0 * 10.0).round() / 10.0
    } else {
        0.0
    })
}

/// Which thresholds a reading crosses. `firing` holds what already fired and has not
/// recovered; only new crossings are returned.
pub fn check(
    c: &HostConfig,
    r: &Reading,
    firing: &mut HashSet<String>,
) -> Vec<(&'static str, Data)> {
    let mut out = Vec::new();
    let mut edge = |key: String, bad: bool, kind: &'static str, data: serde_json::Value| {
        if !bad {
            firing.remove(&key);
        } else if firing.insert(key) {
            out.push((kind, data.as_object().cloned().unwrap_or_default()));
        }
    };
    for (mount, pct) in &r.disks {
        edge(
            format!("disk:{mount}"),
            *pct > c.disk_above,
            "disk_full",
            json!({"mount": mount, "used_pct": pct, "threshold": c.disk_above}),
        );
    }
    if r.memory_total_kb > 0 {
        let pct = (r.memory_available_kb as f64 / r.memory_total_kb as f64 * 1000.0).round() / 10.0;
        edge(
            "memory".into(),
            pct < c.memory_below,
            "memory_low",
            json!({"available_pct": pct, "available_mb": r.memory_available_kb / 1024, "threshold": c.memory_below}),
        );
    }
    let per_cpu = (r.load1 / r.cpus.max(1) as f64 * 100.0).round() / 100.0;
    edge(
        "load".into(),
        per_cpu > c.load_above,
        "load_high",
        json!({"load1": r.load1, "per_cpu": per_cpu, "cpus": r.cpus, "threshold": c.load_above}),
    );
    out
}

pub struct HostSource {
    config: HostConfig,
    firing: HashSet<String>,
}

impl HostSource {
    pub fn new(config: HostConfig) -> Self {
        Self {
            config,
            firing: HashSet::new(),
        }
    }
}

impl Source for HostSource {
    fn run<'a>(&'a mut self, ctx: &'a SourceContext) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let mut every = tokio::time::interval(self.config.interval.0);
            loop {
                every.tick().await;
                let mounts = self.config.mounts.clone();
                let reading = tokio::task::spawn_blocking(move || read(&mounts))
                    .await
                    .map_err(|e| SourceError::new(e.to_string()))??;
                ctx.up();
                for (kind, data) in check(&self.config, &reading, &mut self.firing) {
                    if !ctx.emit(kind, data).await {
                        return Ok(());
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HostConfig {
        toml::from_str("").unwrap()
    }

    #[test]
    fn reads_this_host() {
        let r = read(&[PathBuf::from("/")]).unwrap();
        assert_eq!(r.disks.len(), 1);
        assert!((0.0..=100.0).contains(&r.disks[0].1), "{r:?}");
        assert!(
            r.memory_total_kb > 0 && r.memory_available_kb <= r.memory_total_kb,
            "{r:?}"
        );
        assert!(r.cpus >= 1);
        let e = read(&[PathBuf::from("/no/such/mount")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot stat mount /no/such/mount"), "{e}");
    }

    #[test]
    fn thresholds_fire_on_crossing_and_rearm() {
        let c = config();
        assert_eq!(
            (c.disk_above, c.memory_below, c.load_above),
            (90.0, 10.0, 2.0)
        );
        let mut firing = HashSet::new();
        let mut r = Reading {
            disks: vec![("/".into(), 50.0), ("/data".into(), 95.5)],
            memory_total_kb: 1000,
            memory_available_kb: 500,
            load1: 1.0,
            cpus: 2,
        };
        let got = check(&c, &r, &mut firing);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "disk_full");
        assert_eq!(got[0].1["mount"], "/data");
        assert_eq!(got[0].1["used_pct"], 95.5);
        assert!(
            check(&c, &r, &mut firing).is_empty(),
            "still full: no repeat"
        );
        r.disks[1].1 = 80.0;
        r.memory_available_kb = 50;
        r.load1 = 4.2;
        let kinds: Vec<_> = check(&c, &r, &mut firing)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(kinds, ["memory_low", "load_high"]);
        r.disks[1].1 = 91.0;
        assert_eq!(
            check(&c, &r, &mut firing)[0].0,
            "disk_full",
            "re-armed after recovery"
        );
    }
}
