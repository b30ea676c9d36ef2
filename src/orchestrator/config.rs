//! `[windows.NAME]`, `[budgets.NAME]`, `[escalation]`, `[playbooks.NAME]` and `[orchestrator]`.
//!
//! These sections are taken out of the document before the rest is parsed, so steps (parsed by
//! `actions::parse_step`) and cross references (a playbook's window and budget exist) report
//! their errors at the right `file:line:col`.

use super::actions;
pub use super::actions::Step;
use crate::config::load::{self, Diagnostic, Source};
use crate::config::{Dur, Tz};
use crate::store::Scope;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The top-level keys this module owns.
pub const SECTIONS: [&str; 5] = [
    "windows",
    "budgets",
    "escalation",
    "playbooks",
    "orchestrator",
];

#[derive(Debug, Clone, Default)]
pub struct OrchestratorConfig {
    pub windows: BTreeMap<String, WindowConfig>,
    pub budgets: BTreeMap<String, BudgetConfig>,
    pub escalation: EscalationConfig,
    pub playbooks: BTreeMap<String, Playbook>,
    pub settings: Settings,
}

/// `[windows.NAME]`: local times in the config's time zone (or the window's own `timezone`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    pub at: WindowSpan,
    pub timezone: Option<Tz>,
}

/// `"03:00-07:00"`; the end is exclusive; `"22:00-02:00"` crosses midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpan {
    pub start: jiff::civil::Time,
    pub end: jiff::civil::Time,
}

impl WindowSpan {
    pub fn parse(text: &str) -> Result<Self, String> {
        let hint = || {
            format!("invalid window {text:?}: write local start and end times, like \"03:00-07:00\" (may cross midnight: \"22:00-02:00\")")
        };
        let (a, b) = text.split_once('-').ok_or_else(hint)?;
        let time = |s: &str| -> Result<jiff::civil::Time, String> {
            let s = s.trim();
            jiff::civil::Time::strptime("%H:%M:%S", s)
                .or_else(|_| jiff::civil::Time::strptime("%H:%M", s))
                .map_err(|_| hint())
        };
        let span = WindowSpan {
            start: time(a)?,
            end: time(b)?,
        };
        if span.start == span.end {
            return Err(format!(
                "window {text:?} starts and ends at the same time; give it a length, like \"03:00-07:00\""
            ));
        }
        Ok(span)
    }

    pub fn crosses_midnight(&self) -> bool {
        self.end < self.start
    }
}

impl fmt::Display for WindowSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.strftime("%H:%M"),
            self.end.strftime("%H:%M")
        )
    }
}

impl<'de> Deserialize<'de> for WindowSpan {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        WindowSpan::parse(&s).map_err(de::Error::custom)
    }
}

/// `[budgets.NAME]`: production downtime allowed per window day.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub seconds: u64,
    /// `host` (the default): each host's downtime against `seconds`; `fleet`: every host's
    /// sharing the store, together.
    #[serde(default)]
    pub scope: Scope,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EscalationConfig {
    /// Symptoms of one kind ...
    pub threshold: u32,
    /// ... within this rolling window arm a flag ...
    pub window: Dur,
    /// ... that expires after this.
    pub flag_ttl: Dur,
    /// `host` (the default): a host's own symptoms arm its own flags; `fleet`: symptoms of
    /// every host count together and arm one flag for all.
    pub scope: Scope,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        Self {
            threshold: 3,
            window: Dur::secs(24 * 3600),
            flag_ttl: Dur::secs(4 * 3600),
            scope: Scope::Host,
        }
    }
}

/// `[orchestrator]`: how the loop runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Set `enabled = false` to leave intents to another vigil sharing the store.
    pub enabled: bool,
    /// Command that `systemd` steps run, e.g. `["sudo", "systemctl"]`.
    pub systemctl: Vec<String>,
    /// A `restore = true` step must succeed within this long, or the run is `restore_failed`.
    pub restore_sla: Dur,
    /// Claims on intents and locks expire this long after their holder stops renewing them.
    pub lease: Dur,
    /// Pending intents older than this end as `expired` instead of running late.
    pub intent_ttl: Dur,
    /// Timeout of a step that sets none.
    pub step_timeout: Dur,
    /// Symptoms, finished runs and audit rows older than this leave the store (never less than
    /// the escalation window or a playbook's cooldown and rate-limit window); the audit files
    /// in DATA_DIR/audit/ stay.
    pub retention: Dur,
    /// Intents handled at once. Gates stay exact (they are checked in the store), and a long
    /// playbook does not hold up the rest of the queue.
    pub workers: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: true,
            systemctl: vec!["systemctl".into()],
            restore_sla: Dur::secs(15),
            lease: Dur::secs(30),
            intent_ttl: Dur::secs(3600),
            step_timeout: Dur::secs(60),
            retention: Dur::secs(30 * 24 * 3600),
            workers: 4,
        }
    }
}

/// `[playbooks.NAME]`.
#[derive(Debug, Clone)]
pub struct Playbook {
    pub name: String,
    /// Intent type globs (`*` and `?`); `on = "alert_*"` or `on = ["a", "b_*"]`.
    pub on: Vec<String>,
    pub mode: ModeConfig,
    pub window: Option<String>,
    pub budget: Option<String>,
    pub cooldown: Option<Duration>,
    /// Whose runs the cooldown counts (`cooldown = { duration = "6h", scope = "fleet" }`).
    pub cooldown_scope: Scope,
    pub max_runs: Option<MaxRuns>,
    pub lock: Option<String>,
    /// `lock = { name = "rolling", scope = "fleet" }`: one run at a time across the fleet.
    pub lock_scope: Scope,
    /// Downtime reserved from the budget before a run that has downtime steps starts.
    pub expected_downtime: Duration,
    pub restore_sla: Option<Duration>,
    pub steps: Vec<Step>,
    pub on_failure: Vec<Step>,
}

impl Playbook {
    pub fn matches(&self, intent_type: &str) -> bool {
        self.on.iter().any(|p| glob(p, intent_type))
    }

    /// The steps that run in `mode`: those without a `mode` and those of this mode.
    pub fn steps_for<'a>(
        &'a self,
        steps: &'a [Step],
        mode: &'a str,
    ) -> impl Iterator<Item = &'a Step> + 'a {
        steps
            .iter()
            .filter(move |s| s.mode.as_deref().is_none_or(|m| m == mode))
    }

    pub fn has_downtime(&self, mode: &str) -> bool {
        self.steps_for(&self.steps, mode).any(|s| s.downtime)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeConfig {
    pub default: String,
    /// Symptom kind whose armed flag switches the playbook to `escalated`.
    pub escalate_on: Option<String>,
    pub escalated: String,
}

impl Default for ModeConfig {
    fn default() -> Self {
        Self {
            default: "default".into(),
            escalate_on: None,
            escalated: "canary".into(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeTable {
    default: String,
    escalate_on: Option<String>,
    escalated: Option<String>,
}

/// `mode = "canary"` or `mode = { default = "predictive", escalate_on = "vllm_oom" }`.
impl<'de> Deserialize<'de> for ModeConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ModeConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a mode name, or a table like { default = \"predictive\", escalate_on = \"vllm_oom\" }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ModeConfig, E> {
                Ok(ModeConfig {
                    default: v.to_string(),
                    ..Default::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ModeConfig, A::Error> {
                let t = ModeTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ModeConfig {
                    default: t.default,
                    escalate_on: t.escalate_on,
                    escalated: t.escalated.unwrap_or_else(|| "canary".into()),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A string or an array of strings.
struct OneOrMany(Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an intent type glob like \"alert_*\", or an array of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                if out.is_empty() {
                    return Err(de::Error::custom(
                        "`on` needs at least one intent type glob",
                    ));
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxRuns {
    pub count: u32,
    pub within: Dur,
    /// Whose runs count: this host's (the default) or the fleet's.
    #[serde(default)]
    pub scope: Scope,
}

/// `lock = "gpu"` or `lock = { name = "rolling", scope = "fleet" }`.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a lock name, or a table like { name = \"rolling\", scope = \"fleet\" }"
)]
enum RawLock {
    Name(String),
    Scoped(LockTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LockTable {
    name: String,
    #[serde(default)]
    scope: Scope,
}

/// `cooldown = "6h"` or `cooldown = { duration = "6h", scope = "fleet" }`.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a duration like \"6h\", or a table like { duration = \"6h\", scope = \"fleet\" }"
)]
enum RawCooldown {
    Duration(Dur),
    Scoped(CooldownTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CooldownTable {
    duration: Dur,
    #[serde(default)]
    scope: Scope,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlaybook {
    on: OneOrMany,
    #[serde(default)]
    mode: ModeConfig,
    window: Option<Spanned<String>>,
    budget: Option<Spanned<String>>,
    cooldown: Option<RawCooldown>,
    max_runs: Option<MaxRuns>,
    lock: Option<RawLock>,
    expected_downtime: Option<Dur>,
    restore_sla: Option<Dur>,
}

/// The keys of a playbook that hold steps, parsed by `actions::parse_step`.
const STEP_LISTS: [&str; 2] = ["steps", "on_failure"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    windows: BTreeMap<String, WindowConfig>,
    #[serde(default)]
    budgets: BTreeMap<String, BudgetConfig>,
    #[serde(default)]
    escalation: EscalationConfig,
    #[serde(default)]
    orchestrator: Settings,
}

/// Takes this module's sections out of `root`, parses and cross-checks them; problems go to
/// `errors` with their place.
pub fn take(
    src: &Source,
    root: &mut DeTable<'_>,
    errors: &mut Vec<Diagnostic>,
) -> OrchestratorConfig {
    let mut mine = DeTable::new();
    let mut playbooks = None;
    let mut start = usize::MAX;
    let mut end = 0;
    for key in SECTIONS {
        if let Some(v) = load::take_key(root, key) {
            start = start.min(v.span().start);
            end = end.max(v.span().end);
            // Playbooks are parsed one by one below, so their steps keep their places.
            if key == "playbooks" {
                playbooks = Some(v);
            } else {
                mine.insert(Spanned::new(0..0, key.into()), v);
            }
        }
    }
    if mine.is_empty() && playbooks.is_none() {
        return OrchestratorConfig::default();
    }
    let raw: Raw = match load::deserialize(src, Spanned::new(start..end, DeValue::Table(mine))) {
        Ok(r) => r,
        Err(d) => {
            errors.push(d);
            return OrchestratorConfig::default();
        }
    };
    let mut out = OrchestratorConfig {
        windows: raw.windows,
        budgets: raw.budgets,
        escalation: raw.escalation,
        playbooks: BTreeMap::new(),
        settings: raw.orchestrator,
    };
    if out.escalation.threshold == 0 {
        errors.push(src.at(start, "[escalation] threshold must be at least 1"));
    }
    if !(1..=64).contains(&out.settings.workers) {
        errors.push(src.at(start, "[orchestrator] workers must be 1-64"));
    }
    if out.settings.systemctl.is_empty() {
        errors.push(src.at(
            start,
            "[orchestrator] systemctl must name a command, like [\"systemctl\"] or [\"sudo\", \"systemctl\"]",
        ));
    }
    let entries = match playbooks.map(|p| (p.span().start, p.into_inner())) {
        None => DeTable::new(),
        Some((_, DeValue::Table(t))) => t,
        Some((at, _)) => {
            errors.push(src.at(
                at,
                "`playbooks` must be a table of named entries, like [playbooks.NAME]",
            ));
            DeTable::new()
        }
    };
    for (name, mut value) in entries {
        let name = name.into_inner().into_owned();
        let at = value.span().start;
        let header = format!("[playbooks.{name}]");
        if !matches!(value.get_ref(), DeValue::Table(_)) {
            errors.push(src.at(at, format!("{header} must be a table")));
            continue;
        }
        let DeValue::Table(mut lists) = load::split_off(&mut value, &STEP_LISTS).into_inner()
        else {
            unreachable!("split_off makes a table")
        };
        let raw: RawPlaybook = match load::deserialize_rest(src, value, &STEP_LISTS) {
            Ok(r) => r,
            Err(d) => {
                errors.push(d);
                continue;
            }
        };
        let mut check_ref = |r: &Option<Spanned<String>>, kind: &str, known: Vec<&str>| {
            if let Some(r) = r {
                if !known.contains(&r.get_ref().as_str()) {
                    let hint = match load::closest(r.get_ref(), &known) {
                        Some(k) => format!("did you mean {k:?}?"),
                        None if known.is_empty() => format!("define it: [{kind}s.{}]", r.get_ref()),
                        None => format!("defined: {}", known.join(", ")),
                    };
                    errors.push(src.at(
                        r.span().start,
                        format!(
                            "{header} uses {kind} {:?}, which is not defined; {hint}",
                            r.get_ref()
                        ),
                    ));
                }
            }
        };
        check_ref(
            &raw.window,
            "window",
            out.windows.keys().map(String::as_str).collect(),
        );
        check_ref(
            &raw.budget,
            "budget",
            out.budgets.keys().map(String::as_str).collect(),
        );
        let before = errors.len();
        let Some(steps) = load::take_key(&mut lists, "steps") else {
            errors.push(src.at(
                at,
                format!("missing key \"steps\" in {header}; add `steps = ...`"),
            ));
            continue;
        };
        let steps = convert_steps(src, &header, "steps", steps, errors);
        let on_failure = match load::take_key(&mut lists, "on_failure") {
            Some(v) => convert_steps(src, &header, "on_failure", v, errors),
            None => Vec::new(),
        };
        // A step that did not parse would only add noise to the checks over all steps.
        let steps_ok = errors.len() == before;
        if steps_ok && steps.is_empty() {
            errors.push(src.at(
                at,
                format!("{header} has no steps; add `steps = [{{ log = \"...\" }}]`"),
            ));
        }
        if let Some(m) = raw.max_runs {
            if m.count == 0 {
                errors.push(src.at(at, format!("{header} max_runs.count must be at least 1")));
            }
        }
        let (cooldown, cooldown_scope) = match raw.cooldown {
            None => (None, Scope::Host),
            Some(RawCooldown::Duration(d)) => (Some(d), Scope::Host),
            Some(RawCooldown::Scoped(t)) => (Some(t.duration), t.scope),
        };
        let (lock, lock_scope) = match raw.lock {
            None => (None, Scope::Host),
            Some(RawLock::Name(n)) => (Some(n), Scope::Host),
            Some(RawLock::Scoped(t)) => (Some(t.name), t.scope),
        };
        let pb = Playbook {
            name: name.clone(),
            on: raw.on.0,
            mode: raw.mode,
            window: raw.window.map(Spanned::into_inner),
            budget: raw.budget.map(Spanned::into_inner),
            cooldown: cooldown.map(|d| d.0),
            cooldown_scope,
            max_runs: raw.max_runs,
            lock,
            lock_scope,
            expected_downtime: raw
                .expected_downtime
                .map_or(Duration::from_secs(15), |d| d.0),
            restore_sla: raw.restore_sla.map(|d| d.0),
            steps,
            on_failure,
        };
        for mode in [&pb.mode.default, &pb.mode.escalated]
            .into_iter()
            .filter(|_| steps_ok)
        {
            let mut down = false;
            for s in pb.steps_for(&pb.steps, mode) {
                down = (down || s.downtime) && !s.restore;
            }
            if down {
                errors.push(src.at(at, format!(
                    "{header}: in mode {mode:?} a `downtime = true` step has no `restore = true` step after it; add one so production comes back"
                )));
            }
        }
        if steps_ok
            && (pb.has_downtime(&pb.mode.default) || pb.has_downtime(&pb.mode.escalated))
            && pb.budget.is_none()
        {
            errors.push(src.at(at, format!(
                "{header} has `downtime = true` steps but no budget; add `budget = \"NAME\"` and [budgets.NAME] seconds = 60"
            )));
        }
        out.playbooks.insert(name, pb);
    }
    out
}

/// A playbook's `steps` or `on_failure` list, each step parsed by `actions::parse_step`.
fn convert_steps(
    src: &Source,
    header: &str,
    key: &str,
    list: Spanned<DeValue<'_>>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<Step> {
    let at = list.span().start;
    let DeValue::Array(items) = list.into_inner() else {
        errors.push(src.at(
            at,
            format!("`{key}` in {header} must be a list of steps, like [{{ log = \"...\" }}]"),
        ));
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| actions::parse_step(src, header, item, errors))
        .collect()
}

/// `*` matches any run of characters, `?` one; everything else literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_intent_types() {
        assert!(glob("alert_gpu_oom", "alert_gpu_oom"));
        assert!(glob("alert_*", "alert_gpu_oom"));
        assert!(glob("*_oom", "alert_gpu_oom"));
        assert!(glob("alert_*_oom", "alert_gpu_oom"));
        assert!(glob("alert_gpu_oo?", "alert_gpu_oom"));
        assert!(glob("*", ""));
        assert!(!glob("alert_*", "trigger_x"));
        assert!(!glob("alert_gpu", "alert_gpu_oom"));
        assert!(!glob("*_oom", "alert_gpu_oomx"));
    }

    #[test]
    fn window_spans_parse_with_a_hint() {
        let w = WindowSpan::parse("22:00-02:00").unwrap();
        assert!(w.crosses_midnight());
        assert_eq!(w.to_string(), "22:00-02:00");
        assert!(WindowSpan::parse("03:00:30-07:00").is_ok());
        let e = WindowSpan::parse("3am-7am").unwrap_err();
        assert!(e.contains("like \"03:00-07:00\""), "{e}");
        let e = WindowSpan::parse("03:00-03:00").unwrap_err();
        assert!(e.contains("same time"), "{e}");
    }
}
