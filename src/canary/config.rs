//! `[canaries.NAME]`: how to start a candidate instance of a service, check it, judge it and
//! put production back. Taken out of the document before the rest is parsed (like
//! `[units.NAME]`) so every error carries `file:line:col`, then checked against the windows,
//! budgets and units it names.

use crate::config::load::{self, Diagnostic, Source};
use crate::config::Dur;
use crate::orchestrator::config::OrchestratorConfig;
use crate::supervisor::UnitConfig;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use toml::de::{DeTable, DeValue};

/// One canary as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// The production instance the candidate is judged against and, on the quiesced path,
    /// stopped for and restored.
    pub production: Production,
    /// The candidate's argv; `{port}` and `{candidate.KEY}` fill in within one element.
    pub command: Vec<String>,
    /// Added to the candidate's environment (vigil's own is passed on); templates fill in.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    /// The bounded range the candidate's port is searched in.
    pub ports: PortRange,
    #[serde(default)]
    pub path: PathChoice,
    /// With `path = "auto"`: a command whose exit status 0 says a spare resource exists.
    pub spare_when: Option<SpareWhen>,
    pub health: HealthCheck,
    pub probe: ProbeConfig,
    #[serde(default)]
    pub judge: JudgeConfig,
    /// Production must answer healthy within this long of being started again (default
    /// `[orchestrator] restore_sla`).
    pub restore_sla: Option<Dur>,
    /// Quiesced path only: the maintenance window it must run in ...
    pub window: Option<String>,
    /// ... the downtime budget its downtime is charged to ...
    pub budget: Option<String>,
    /// ... and the time since the last quiesced run of this canary.
    pub cooldown: Option<Dur>,
    /// Downtime reserved from the budget before production is stopped (default 15 s); the
    /// candidate is stopped when production has been down this long.
    pub expected_downtime: Option<Dur>,
    /// Default candidate settings; a run's `candidate` is laid over them.
    #[serde(default)]
    pub candidate: serde_json::Map<String, serde_json::Value>,
    /// Run on promotion: applies the candidate's settings (`{candidate.KEY}` fill in).
    pub promote: Option<Promote>,
    /// How long a candidate gets to exit after SIGTERM before SIGKILL.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: Dur,
}

fn default_stop_timeout() -> Dur {
    Dur::secs(5)
}

/// `production = { systemd = "judge.service" }` or `{ unit = "judge" }`, with the `port` it
/// serves on (for `compare = "production"` and the health check after a restore).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Production {
    /// A systemd unit, stopped and started through `[orchestrator] systemctl`.
    pub systemd: Option<String>,
    /// A `[units.NAME]` the daemon supervises.
    pub unit: Option<String>,
    /// The port production serves on: `{port}` in `health` and `probe` for production.
    pub port: Option<u16>,
}

impl Production {
    /// `systemd judge.service` or `unit judge`, for messages.
    pub fn describe(&self) -> String {
        match (&self.systemd, &self.unit) {
            (Some(s), _) => format!("systemd {s}"),
            (_, Some(u)) => format!("unit {u}"),
            _ => "production".into(),
        }
    }
}

/// `"9011-9015"` (inclusive) or one port `"9011"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn parse(text: &str) -> Result<Self, String> {
        let hint =
            || format!("invalid port range {text:?}: write \"9011-9015\" or one port \"9011\"");
        let (a, b) = text.split_once('-').unwrap_or((text, text));
        let port = |s: &str| s.trim().parse::<u16>().map_err(|_| hint());
        let (first, last) = (port(a)?, port(b)?);
        if first == 0 || first > last {
            return Err(hint());
        }
        Ok(PortRange { first, last })
    }

    pub fn iter(self) -> impl Iterator<Item = u16> {
        self.first..=self.last
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PortRange::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Where the candidate runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathChoice {
    /// Beside production: no downtime, no cooldown.
    Spare,
    /// Production stopped for it: window, budget and cooldown apply.
    Quiesced,
    /// Spare when `spare_when` says a spare resource exists, else quiesced.
    #[default]
    Auto,
}

impl PathChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            PathChoice::Spare => "spare",
            PathChoice::Quiesced => "quiesced",
            PathChoice::Auto => "auto",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpareWhen {
    /// argv; exit 0 means a spare resource exists.
    pub run: Vec<String>,
    #[serde(default = "default_spare_timeout")]
    pub timeout: Dur,
}

fn default_spare_timeout() -> Dur {
    Dur::secs(10)
}

/// `health = { http = "http://127.0.0.1:{port}/health", timeout = "120s" }`: polled until it
/// answers 2xx or the timeout passes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub http: String,
    #[serde(default = "default_health_timeout")]
    pub timeout: Dur,
    /// Between two polls; small, so a canary's duration is the service's start time plus
    /// milliseconds.
    #[serde(default = "default_health_interval")]
    pub interval: Dur,
}

fn default_health_timeout() -> Dur {
    Dur::secs(120)
}

fn default_health_interval() -> Dur {
    Dur(Duration::from_millis(20))
}

/// `probe = { http = "...", body = "...", requests = 50, concurrency = 4 }`: the workload the
/// candidate (and, with `compare = "production"`, production) is judged on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    pub http: String,
    /// Sent with POST (as `content_type`); without a body the probe GETs.
    pub body: Option<String>,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    #[serde(default = "default_requests")]
    pub requests: u32,
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// One request's whole exchange; past it the request counts as an error.
    #[serde(default = "default_probe_timeout")]
    pub timeout: Dur,
}

fn default_content_type() -> String {
    "application/json".into()
}
fn default_requests() -> u32 {
    50
}
fn default_concurrency() -> u32 {
    4
}
fn default_probe_timeout() -> Dur {
    Dur::secs(30)
}

/// `judge = { max_error_rate = 0.01, max_p95_ms = 800, compare = "production" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JudgeConfig {
    /// Errors (transport errors, timeouts, non-2xx) per request above this fail the candidate.
    pub max_error_rate: Option<f64>,
    /// A 95th-percentile latency above this many milliseconds fails the candidate.
    pub max_p95_ms: Option<f64>,
    /// `"production"`: the same workload goes to production, interleaved, and the candidate
    /// fails when it is worse with statistical significance.
    pub compare: Option<Compare>,
    /// Significance level of the comparison's one-sided tests.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Slower medians than production's by at most this fraction pass even when significant
    /// (a difference too small to matter).
    #[serde(default = "default_max_slowdown")]
    pub max_slowdown: f64,
}

fn default_alpha() -> f64 {
    0.01
}
fn default_max_slowdown() -> f64 {
    0.1
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self {
            max_error_rate: None,
            max_p95_ms: None,
            compare: None,
            alpha: default_alpha(),
            max_slowdown: default_max_slowdown(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    Production,
}

/// `promote = { run = ["/usr/local/bin/apply", "{candidate.gpu_memory_utilization}"] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    pub run: Vec<String>,
    #[serde(default = "default_promote_timeout")]
    pub timeout: Dur,
}

fn default_promote_timeout() -> Dur {
    Dur::secs(60)
}

impl CanaryConfig {
    /// The restore SLA, its own or the orchestrator's.
    pub fn restore_sla(&self, orchestrator: &OrchestratorConfig) -> Duration {
        self.restore_sla
            .map_or(orchestrator.settings.restore_sla.0, |d| d.0)
    }

    /// Downtime reserved before production is stopped.
    pub fn expected_downtime(&self) -> Duration {
        self.expected_downtime
            .map_or(Duration::from_secs(15), |d| d.0)
    }

    /// Whether a run may take the quiesced path.
    pub fn may_quiesce(&self) -> bool {
        self.path != PathChoice::Spare
    }

    /// Rules serde cannot express, in words.
    fn check(&self) -> Result<(), String> {
        let p = &self.production;
        if p.systemd.is_some() == p.unit.is_some() {
            return Err("`production` names one of `systemd = \"NAME.service\"` or `unit = \"NAME\"` (a [units.NAME] vigil supervises)".into());
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err("`command` is empty; give the candidate's program and arguments, with {port} where its port goes".into());
        }
        if !self.command.iter().any(|a| a.contains("{port}"))
            && !self.env.values().any(|v| v.contains("{port}"))
        {
            return Err("neither `command` nor `env` uses {port}: the candidate must be told the free port it gets".into());
        }
        if self.path == PathChoice::Auto && self.spare_when.is_none() {
            return Err("path = \"auto\" needs `spare_when = { run = [\"/usr/local/bin/spare-gpu\"] }` (exit 0 = a spare resource exists), or set path = \"spare\" or \"quiesced\"".into());
        }
        if let Some(s) = &self.spare_when {
            if s.run.is_empty() {
                return Err("`spare_when.run` is empty; give a command".into());
            }
        }
        if self.may_quiesce() && self.budget.is_none() {
            return Err("the quiesced path stops production, so it needs a downtime budget: add `budget = \"NAME\"` and [budgets.NAME] seconds = 60 (or set path = \"spare\")".into());
        }
        if self.probe.requests == 0 || self.probe.concurrency == 0 {
            return Err("probe `requests` and `concurrency` must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.judge.alpha) || self.judge.alpha == 0.0 {
            return Err("judge `alpha` is a significance level between 0 and 1, like 0.01".into());
        }
        if self.health.timeout.is_zero() || self.health.interval.is_zero() {
            return Err("health `timeout` and `interval` must be more than zero".into());
        }
        if self.ports.last - self.ports.first > 1000 {
            return Err(format!(
                "port range {} spans more than 1000 ports; a bounded search is a short one",
                self.ports
            ));
        }
        // Templates: the candidate's command knows {port} and {candidate.KEY}; health and
        // probe {port}; promote {candidate.KEY}.
        let fields = |text: &str, allowed: &[&str], key: &str| -> Result<(), String> {
            for f in crate::template::Template::parse(text).fields() {
                let ok = allowed.iter().any(|a| {
                    f == *a || (a.ends_with('.') && f.starts_with(a) && f.len() > a.len())
                });
                if !ok {
                    return Err(format!(
                        "`{key}` uses {{{f}}}; it may use only {}",
                        allowed
                            .iter()
                            .map(|a| if a.ends_with('.') {
                                format!("{{{a}KEY}}")
                            } else {
                                format!("{{{a}}}")
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            Ok(())
        };
        let cmd = ["port", "candidate."];
        for a in &self.command {
            fields(a, &cmd, "command")?;
        }
        for v in self.env.values() {
            fields(v, &cmd, "env")?;
        }
        fields(&self.health.http, &["port"], "health.http")?;
        fields(&self.probe.http, &["port"], "probe.http")?;
        if let Some(pr) = &self.promote {
            if pr.run.is_empty() {
                return Err("`promote.run` is empty; give a command".into());
            }
            for a in &pr.run {
                fields(a, &["candidate.", "port"], "promote.run")?;
            }
        }
        Ok(())
    }
}

/// Takes `[canaries.NAME]` out of `root`, parses and checks each, then their references to
/// windows, budgets and supervised units.
pub fn take(
    src: &Source,
    root: &mut DeTable<'_>,
    orchestrator: &OrchestratorConfig,
    units: &BTreeMap<String, UnitConfig>,
    errors: &mut Vec<Diagnostic>,
) -> BTreeMap<String, CanaryConfig> {
    let out = match load::take_key(root, "canaries") {
        Some(section) => parse_all(src, section, orchestrator, units, errors),
        None => BTreeMap::new(),
    };
    // A playbook's `{ canary = "NAME" }` steps name configured canaries.
    for (name, pb) in &orchestrator.playbooks {
        for step in pb.steps.iter().chain(&pb.on_failure) {
            let Some(c) = step
                .action
                .get::<crate::orchestrator::actions::canary::Canary>()
            else {
                continue;
            };
            if !out.contains_key(&c.name) {
                let known: Vec<&str> = out.keys().map(String::as_str).collect();
                let hint = match load::closest(&c.name, &known) {
                    Some(k) => format!("did you mean {k:?}?"),
                    None => format!("define it: [canaries.{}]", c.name),
                };
                let at = src.text.find(&format!("[playbooks.{name}]")).unwrap_or(0);
                errors.push(src.at(
                    at,
                    format!(
                        "step in [playbooks.{name}]: canary {:?} is not defined; {hint}",
                        c.name
                    ),
                ));
            }
        }
    }
    out
}

fn parse_all(
    src: &Source,
    section: toml::Spanned<DeValue<'_>>,
    orchestrator: &OrchestratorConfig,
    units: &BTreeMap<String, UnitConfig>,
    errors: &mut Vec<Diagnostic>,
) -> BTreeMap<String, CanaryConfig> {
    let mut out = BTreeMap::new();
    let start = section.span().start;
    let DeValue::Table(entries) = section.into_inner() else {
        errors.push(src.at(
            start,
            "`canaries` must be a table of canaries, like [canaries.judge] with command = [...]",
        ));
        return out;
    };
    for (key, value) in entries {
        let name = key.get_ref().to_string();
        let at = value.span().start;
        let header = format!("[canaries.{name}]");
        if !matches!(value.get_ref(), DeValue::Table(_)) {
            errors.push(src.at(at, format!("{header} must be a table with command = [...]")));
            continue;
        }
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            errors.push(src.at(at, format!("canary name {name:?} may hold only letters, digits, '_' and '-'; it names files, locks and store rows")));
            continue;
        }
        let c = match load::deserialize::<CanaryConfig>(src, value) {
            Ok(c) => c,
            Err(d) => {
                errors.push(d);
                continue;
            }
        };
        if let Err(msg) = c.check() {
            errors.push(src.at(at, format!("{header}: {msg}")));
            continue;
        }
        let mut refer = |kind: &str, got: Option<&String>, known: Vec<&str>| {
            let Some(got) = got else { return };
            if known.contains(&got.as_str()) {
                return;
            }
            let hint = match load::closest(got, &known) {
                Some(k) => format!("did you mean {k:?}?"),
                None if kind == "unit" => format!("define it: [units.{got}] command = [...]"),
                None => format!("define it: [{kind}s.{got}]"),
            };
            errors.push(src.at(
                at,
                format!("{header} uses {kind} {got:?}, which is not defined; {hint}"),
            ));
        };
        refer(
            "window",
            c.window.as_ref(),
            orchestrator.windows.keys().map(String::as_str).collect(),
        );
        refer(
            "budget",
            c.budget.as_ref(),
            orchestrator.budgets.keys().map(String::as_str).collect(),
        );
        refer(
            "unit",
            c.production.unit.as_ref(),
            units.keys().map(String::as_str).collect(),
        );
        out.insert(name, c);
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    /// The issue's config, as written, with the window and budget it names.
    pub const ISSUE: &str = r#"
[windows.maintenance]
at = "03:00-07:00"
[budgets.gpu_downtime]
seconds = 60

[canaries.judge]
production = { systemd = "judge.service" }        # or { unit = "judge" } for a supervised unit
command = ["/usr/bin/python3", "-m", "vllm.entrypoints.openai.api_server", "--port", "{port}",
           "--gpu-memory-utilization", "{candidate.gpu_memory_utilization}"]
ports = "9011-9015"                # bounded search for a free port
path = "auto"                      # spare | quiesced | auto (spare when the spare resource is free)
spare_when = { run = ["/usr/local/bin/spare-gpu"] }  # exit 0 = a spare resource exists
health = { http = "http://127.0.0.1:{port}/health", timeout = "120s" }
probe = { http = "http://127.0.0.1:{port}/v1/completions", body = "...", requests = 50, concurrency = 4 }
judge = { max_error_rate = 0.01, max_p95_ms = 800, compare = "production" }
restore_sla = "15s"
window = "maintenance"             # quiesced path only: the window, budget and cooldown it needs
budget = "gpu_downtime"
cooldown = "6h"
"#;

    fn errors(text: &str) -> String {
        match Config::parse("v.toml", text) {
            Ok(_) => panic!("expected errors"),
            Err(ConfigError::Invalid(ds)) => ds
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_issues_config_parses_as_written_and_warns_that_production_has_no_port() {
        let c = Config::parse("v.toml", ISSUE).unwrap_or_else(|e| panic!("{e}"));
        let w: Vec<String> = c
            .warnings("2026-01-01T00:00:00Z".parse().unwrap())
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert!(
            w.iter().any(|w| w
                .starts_with("v.toml:7:1: warning: [canaries.judge] compare = \"production\"")
                && w.contains("judged on its thresholds alone")),
            "{w:?}"
        );
        let text = ISSUE.replace(
            "{ systemd = \"judge.service\" }",
            "{ systemd = \"judge.service\", port = 8000 }",
        );
        let c = Config::parse("v.toml", &text).unwrap();
        let j = &c.canaries["judge"];
        assert_eq!((j.ports.first, j.ports.last), (9011, 9015));
        assert_eq!(j.path, super::PathChoice::Auto);
        assert_eq!(j.probe.requests, 50);
        assert_eq!(j.health.timeout.0.as_secs(), 120);
        assert_eq!(j.cooldown.unwrap().0.as_secs(), 6 * 3600);
        assert_eq!(j.production.port, Some(8000));
    }

    #[test]
    fn a_playbook_step_names_a_configured_canary_with_known_templates() {
        let base = ISSUE.replace("\"judge.service\" }", "\"judge.service\", port = 8000 }");
        let pb = |step: &str| format!("{base}\n[playbooks.p]\non = \"x\"\nsteps = [{step}]\n");
        assert!(Config::parse(
            "v.toml",
            &pb("{ canary = \"judge\", candidate = { gpu_memory_utilization = \"{data.util}\" } }")
        )
        .is_ok());
        let e = errors(&pb("{ canary = \"jugde\" }"));
        assert!(
            e.contains(
                "step in [playbooks.p]: canary \"jugde\" is not defined; did you mean \"judge\"?"
            ),
            "{e}"
        );
        let e = errors(&pb(
            "{ canary = \"judge\", candidate = { u = \"{dta.util}\" } }",
        ));
        assert!(e.contains("template {dta.util}"), "{e}");
    }

    #[test]
    fn references_and_templates_are_checked_with_their_place() {
        let text = ISSUE
            .replace("\"judge.service\" }", "\"judge.service\", port = 8000 }")
            .replace("window = \"maintenance\"", "window = \"maintenence\"")
            .replace("{candidate.gpu_memory_utilization}", "{gpu}");
        let e = errors(&text);
        assert!(e.contains("v.toml:7:1: [canaries.judge]: `command` uses {gpu}; it may use only {port}, {candidate.KEY}"), "{e}");
        let text = ISSUE
            .replace("\"judge.service\" }", "\"judge.service\", port = 8000 }")
            .replace("window = \"maintenance\"", "window = \"maintenence\"");
        let e = errors(&text);
        assert!(
            e.contains(
                "uses window \"maintenence\", which is not defined; did you mean \"maintenance\"?"
            ),
            "{e}"
        );
        let e = errors(&ISSUE.replace("ports = \"9011-9015\"", "ports = \"9015-9011\""));
        assert!(
            e.contains("v.toml:11:9: invalid port range \"9015-9011\""),
            "{e}"
        );
        let e = errors(&ISSUE.replace("requests = 50", "requets = 50"));
        assert!(e.contains("unknown key \"requets\""), "{e}");
        let e = errors(&ISSUE.replace(
            "{ systemd = \"judge.service\" }",
            "{ unit = \"judge\", port = 8000 }",
        ));
        assert!(
            e.contains("uses unit \"judge\", which is not defined; define it: [units.judge]"),
            "{e}"
        );
    }
}
