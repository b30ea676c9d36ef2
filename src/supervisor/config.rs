//! `[units.NAME]`: what to run, how to restart it, how to stop it, and what to do when its
//! restarts run out. Units are one plain section (not a family of `type`s), taken out of the
//! document before the rest is parsed so their errors carry `file:line:col`.

use crate::config::load::{self, Diagnostic, Source};
use crate::config::Dur;
use crate::sources::lines::Matches;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use toml::de::{DeTable, DeValue};

/// One supervised unit as configured.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UnitConfig {
    /// argv: the program and its arguments, never a shell string.
    pub command: Vec<String>,
    /// Added to vigil's own environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    /// 1 critical .. 5; picks the strategy when restarts run out.
    #[serde(default = "default_tier")]
    pub tier: u8,
    #[serde(default)]
    pub restart: RestartMode,
    #[serde(default)]
    pub backoff: Backoff,
    /// Restarts allowed within `restart_window`; the failure after the last one exhausts.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    #[serde(default = "default_window")]
    pub restart_window: Dur,
    /// Readiness probe: a started unit is `starting` until it passes (then `running`, event
    /// `unit_ready`; units that come `after` it wait for that). `interval` between attempts
    /// (default 500ms), `timeout` for the whole wait (default 300s): a unit not ready by then
    /// is stopped and its start counts as a failure.
    pub ready: Option<Probe>,
    /// Liveness probe: every `interval` (default 10s), an answer within `timeout` (default
    /// 2s); `failures` (default 3) in a row emit `unit_unhealthy` and restart the live process,
    /// counted like a failure. `unit_recovered` when it passes again.
    pub health: Option<Probe>,
    #[serde(default)]
    pub stop: StopConfig,
    /// Directory golden snapshots are taken of.
    pub state_dir: Option<PathBuf>,
    /// `snapshot = { golden_after = "10m" }`: a snapshot of `state_dir` becomes golden once the
    /// unit has been healthy that long (at or after the snapshot).
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    /// A unit to fail over to when this one is exhausted.
    pub replica: Option<String>,
    /// Units that must be running before this one starts.
    #[serde(default)]
    pub after: Vec<String>,
    /// Adopt a unit a previous daemon left running (pid and start time match) instead of
    /// stopping it and starting anew.
    #[serde(default = "yes")]
    pub adopt: bool,
    /// The unit's output log: rotated at `max_size` bytes, `keep` old files.
    #[serde(default)]
    pub log: LogConfig,
    /// `[[units.NAME.match]]`: output lines that become events, exactly as for a `file` source.
    /// Without entries output lines are logged, not turned into events.
    #[serde(default, rename = "match", skip_serializing)]
    pub matches: Matches,
}

fn default_tier() -> u8 {
    3
}
fn default_max_restarts() -> u32 {
    3
}
fn default_window() -> Dur {
    Dur::secs(600)
}
fn yes() -> bool {
    true
}

/// When a unit that exited is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    Always,
    #[default]
    OnFailure,
    Never,
}

/// Delay before a restart: `initial`, doubled per quick failure up to `max`; a unit that ran
/// at least `reset` restarts at once and starts over from `initial`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    pub initial: Dur,
    pub max: Dur,
    pub reset: Dur,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Dur::secs(1),
            max: Dur::secs(60),
            reset: Dur::secs(30),
        }
    }
}

/// An HTTP probe: `{ http = "http://...", interval, timeout, failures }`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub http: Option<String>,
    pub tcp: Option<String>,
    pub interval: Option<Dur>,
    pub timeout: Option<Dur>,
    pub failures: Option<u32>,
}

/// When snapshots of `state_dir` become golden.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Healthy time a snapshot needs to become golden.
    pub golden_after: Dur,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            golden_after: Dur::secs(600),
        }
    }
}

/// `stop = { signal = "SIGTERM", timeout = "20s" }`: the signal goes to every process of the
/// unit; whatever is left after `timeout` gets SIGKILL.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StopConfig {
    pub signal: Signal,
    pub timeout: Dur,
}

impl Default for StopConfig {
    fn default() -> Self {
        Self {
            signal: Signal(libc::SIGTERM),
            timeout: Dur::secs(10),
        }
    }
}

/// A signal by name (`SIGTERM`, `TERM`) or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(pub i32);

const SIGNALS: &[(&str, i32)] = &[
    ("SIGTERM", libc::SIGTERM),
    ("SIGINT", libc::SIGINT),
    ("SIGHUP", libc::SIGHUP),
    ("SIGQUIT", libc::SIGQUIT),
    ("SIGKILL", libc::SIGKILL),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGUSR2", libc::SIGUSR2),
];

impl Signal {
    pub fn name(self) -> String {
        SIGNALS
            .iter()
            .find(|(_, n)| *n == self.0)
            .map(|(s, _)| s.to_string())
            .unwrap_or_else(|| self.0.to_string())
    }
}

impl Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let upper = s.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        if let Some((_, n)) = SIGNALS.iter().find(|(name, _)| *name == full) {
            return Ok(Signal(*n));
        }
        s.parse::<i32>().map(Signal).map_err(|_| {
            serde::de::Error::custom(format!(
                "unknown signal {s:?}; use one of {}",
                SIGNALS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }
}

/// Rotation of a unit's output log.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Bytes before the file is rotated.
    pub max_size: u64,
    /// Rotated files kept (`unit.log.1` .. `unit.log.N`).
    pub keep: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_size: 10 << 20,
            keep: 3,
        }
    }
}

impl UnitConfig {
    /// Checks what serde cannot: a non-empty command, a tier in 1..=5, a backoff that grows.
    fn check(&self) -> Result<(), String> {
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err("`command` is empty; give the program and its arguments, like [\"/usr/bin/python3\", \"-m\", \"http.server\"]".into());
        }
        if !(1..=5).contains(&self.tier) {
            return Err(format!(
                "tier {} is out of range; use 1 (critical) .. 5",
                self.tier
            ));
        }
        if self.backoff.initial > self.backoff.max {
            return Err(format!(
                "backoff initial ({}) is longer than max ({}); make max at least initial",
                self.backoff.initial, self.backoff.max
            ));
        }
        if self.restart_window.0.is_zero() {
            return Err("restart_window is 0; give a window like \"10m\"".into());
        }
        for (key, probe) in [("ready", &self.ready), ("health", &self.health)] {
            let Some(p) = probe else { continue };
            if p.http.is_some() == p.tcp.is_some() {
                return Err(format!(
                    "{key} needs exactly one of `http = \"http://...\"` or `tcp = \"host:port\"`"
                ));
            }
            if p.interval.is_some_and(|d| d.0.is_zero()) || p.timeout.is_some_and(|d| d.0.is_zero())
            {
                return Err(format!("{key}: interval and timeout must be longer than 0"));
            }
        }
        Ok(())
    }

    /// Events this unit's output emits, for rule validation.
    pub fn event_types(&self) -> Vec<String> {
        self.matches.0.iter().map(|m| m.event.clone()).collect()
    }

    /// The stop timeout as a std duration.
    pub fn stop_timeout(&self) -> Duration {
        self.stop.timeout.0
    }
}

/// Events the supervisor itself emits.
pub const EVENTS: [&str; 10] = [
    "unit_started",
    "unit_ready",
    "unit_exited",
    "unit_unhealthy",
    "unit_recovered",
    "unit_restarted",
    "unit_exhausted",
    "unit_quarantined",
    "unit_restored",
    "unit_playbook",
];

/// Takes `[units.NAME]` out of `root`, parses and checks each, then cross references (`after`
/// and `replica` name other units).
pub fn take(
    src: &Source,
    root: &mut DeTable<'_>,
    errors: &mut Vec<Diagnostic>,
) -> BTreeMap<String, UnitConfig> {
    let mut out = BTreeMap::new();
    let Some(section) = load::take_key(root, "units") else {
        return out;
    };
    let start = section.span().start;
    let DeValue::Table(entries) = section.into_inner() else {
        errors.push(src.at(
            start,
            "`units` must be a table of units, like [units.web] with command = [...]",
        ));
        return out;
    };
    let mut places = BTreeMap::new();
    for (key, value) in entries {
        let name = key.get_ref().to_string();
        let at = value.span().start;
        if !matches!(value.get_ref(), DeValue::Table(_)) {
            errors.push(src.at(
                at,
                format!("units.{name} must be a table: [units.{name}] with command = [...]"),
            ));
            continue;
        }
        if !valid_name(&name) {
            errors.push(src.at(at, format!("unit name {name:?} may hold only letters, digits, '_' and '-'; it names files and store rows")));
            continue;
        }
        match load::deserialize::<UnitConfig>(src, value) {
            Ok(u) => match u.check() {
                Ok(()) => {
                    places.insert(name.clone(), at);
                    out.insert(name, u);
                }
                Err(msg) => errors.push(src.at(at, format!("[units.{name}]: {msg}"))),
            },
            Err(d) => errors.push(d),
        }
    }
    let names: Vec<&str> = out.keys().map(String::as_str).collect();
    for (name, u) in &out {
        let at = places[name];
        let refs = u
            .after
            .iter()
            .map(|a| ("after", a))
            .chain(u.replica.iter().map(|r| ("replica", r)));
        for (key, other) in refs {
            if other == name {
                errors.push(src.at(at, format!("[units.{name}] {key} names the unit itself")));
            } else if !out.contains_key(other) {
                let hint = load::closest(other, &names)
                    .map(|k| format!("did you mean {k:?}? "))
                    .unwrap_or_default();
                errors.push(src.at(at, format!("[units.{name}] {key} names unit {other:?}, which is not configured; {hint}units are {}", names.join(", "))));
            }
        }
    }
    out
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};
    use std::time::Duration;

    /// The issue's example, as written (with `redis` and `judge_standby` defined).
    const JUDGE: &str = r#"
[units.judge]
command = ["/usr/bin/python3", "-m", "vllm.entrypoints.openai.api_server", "--port", "8000"]
env = { CUDA_VISIBLE_DEVICES = "0" }
cwd = "/srv/judge"
tier = 1                           # 1 critical .. 5
restart = "on-failure"             # always | on-failure | never
backoff = { initial = "1s", max = "60s", reset = "30s" }
max_restarts = 3                   # within ...
restart_window = "10m"
ready = { http = "http://127.0.0.1:8000/health", timeout = "300s" }   # starting -> running
health = { http = "http://127.0.0.1:8000/health", interval = "10s", timeout = "2s", failures = 3 }
stop = { signal = "SIGTERM", timeout = "20s" }
state_dir = "/srv/judge/state"     # golden snapshots are taken of this
replica = "judge_standby"          # optional: a unit to fail over to
after = ["redis"]                  # start order: waits until those are ready

[units.judge_standby]
command = ["/bin/true"]

[units.redis]
command = ["/usr/bin/redis-server"]
"#;

    fn errors(text: &str) -> String {
        match Config::parse("vigil.toml", text) {
            Err(ConfigError::Invalid(ds)) => ds
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => e.to_string(),
            Ok(_) => panic!("expected errors"),
        }
    }

    #[test]
    fn the_issues_example_parses_as_written() {
        let c = Config::parse("vigil.toml", JUDGE).unwrap_or_else(|e| panic!("{e}"));
        let u = &c.units["judge"];
        assert_eq!(u.command[0], "/usr/bin/python3");
        assert_eq!(u.env["CUDA_VISIBLE_DEVICES"], "0");
        assert_eq!(u.tier, 1);
        assert_eq!(u.restart, super::RestartMode::OnFailure);
        assert_eq!(u.backoff.max.0, Duration::from_secs(60));
        assert_eq!(u.max_restarts, 3);
        assert_eq!(u.restart_window.0, Duration::from_secs(600));
        assert_eq!(u.stop.signal.0, libc::SIGTERM);
        assert_eq!(u.stop_timeout(), Duration::from_secs(20));
        assert_eq!(u.health.as_ref().unwrap().failures, Some(3));
        assert_eq!(u.replica.as_deref(), Some("judge_standby"));
        assert_eq!(u.after, vec!["redis".to_string()]);
        assert!(u.adopt);
    }

    #[test]
    fn mistakes_are_reported_at_their_place() {
        let e = errors("[units.web]\ncommand = [\"/bin/true\"]\nmax_restart = 3\n");
        assert!(e.starts_with("vigil.toml:3:1:"), "{e}");
        assert!(e.contains("max_restart"), "{e}");
        let e = errors("[units.web]\ncommand = []\n");
        assert!(e.starts_with("vigil.toml:1:"), "{e}");
        assert!(e.contains("`command` is empty"), "{e}");
        let e = errors("[units.web]\ncommand = [\"/bin/true\"]\nafter = [\"rediss\"]\n\n[units.redis]\ncommand = [\"/bin/true\"]\n");
        assert!(e.contains("did you mean \"redis\"?"), "{e}");
        let e = errors("[units.web]\ncommand = [\"/bin/true\"]\nstop = { signal = \"SIGFOO\" }\n");
        assert!(e.contains("unknown signal"), "{e}");
        let e = errors("[units.web]\ncommand = [\"/bin/true\"]\ntier = 9\n");
        assert!(e.contains("tier 9 is out of range"), "{e}");
    }
}
