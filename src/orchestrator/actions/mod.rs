//! Actions: what a playbook step does. Each kind is one module, a config struct that
//! implements [`Action`], listed in [`KINDS`] under the key that names it in a step
//! (`{ run = [...] }`, `{ systemd = "stop", unit = "x.service" }`). The keys every step has
//! whatever its action (`mode`, `timeout`, `downtime`, `restore`) are parsed once, here, into
//! [`Step`].
//!
//! Templates (`{data.KEY}`, `{mode}`, `{reason}`, `{intent}`, `{intent_type}`, `{playbook}`)
//! fill in inside one argv element or JSON string ([`fill`]); nothing is ever passed through a
//! shell.

pub mod canary;
pub mod clear_escalation;
pub mod log;
pub mod run;
pub mod symptom;
pub mod systemd;
pub mod unit;
pub mod webhook;

use crate::app::App;
use crate::config::load::{self, Diagnostic, Source};
use crate::config::Dur;
use crate::intent::Intent;
use crate::sources::BoxFuture;
use crate::template::{self, Missing, Template};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use toml::de::DeValue;
use toml::Spanned;

/// Every kind of action, by the step key that names it: a reader sees them all here. Adding
/// a kind is one file (a config struct that implements [`Action`] and has a field named like
/// its key) and one line here.
pub const KINDS: &[(&str, Kind)] = &[
    ("run", Kind::of::<run::Run>()),
    ("webhook", Kind::of::<webhook::Webhook>()),
    ("systemd", Kind::of::<systemd::Systemd>()),
    ("symptom", Kind::of::<symptom::Symptom>()),
    (
        "clear_escalation",
        Kind::of::<clear_escalation::ClearEscalation>(),
    ),
    ("log", Kind::of::<log::Log>()),
    ("unit", Kind::of::<unit::UnitStep>()),
    ("canary", Kind::of::<canary::Canary>()),
];

/// What each kind of action is, implemented by its config struct (the step's table minus the
/// [`SHARED`] keys, deserialized with serde; it includes the action's own key).
pub trait Action: fmt::Debug + Send + Sync + Any {
    /// Rules serde cannot express; reported as `step in [playbooks.NAME]: MESSAGE`.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    /// The strings that [`fill`] fills in when the step runs, so `vigil check` can refuse a
    /// name no run provides (a typo would otherwise fail only when the step runs).
    fn templates(&self) -> Vec<&str> {
        Vec::new()
    }
    /// What the step does, for the audit trail and dry-run plans: `systemd stop x.service`.
    fn describe(&self) -> String;
    /// Does it: Ok with details for the audit trail, or Err with what went wrong.
    fn execute<'a>(
        &'a self,
        timeout: Duration,
        ctx: &'a StepContext<'a>,
    ) -> BoxFuture<'a, Result<Value, String>>;
}

/// Parses a step's table (shared keys taken out) into one kind's config.
type ParseAction =
    for<'a, 'b, 'i> fn(&'a Source<'b>, Spanned<DeValue<'i>>) -> Result<Arc<dyn Action>, Diagnostic>;

/// How [`KINDS`] knows a kind: how to parse it, and which keys it takes (so a key of another
/// kind can be named as such).
#[derive(Clone, Copy)]
pub struct Kind {
    parse: ParseAction,
    fields: fn() -> &'static [&'static str],
}

impl Kind {
    /// The kind whose config is `T`.
    pub const fn of<T: Action + DeserializeOwned>() -> Kind {
        Kind {
            parse: parse::<T>,
            fields: load::fields::<T>,
        }
    }
}

fn parse<T: Action + DeserializeOwned>(
    src: &Source,
    table: Spanned<DeValue<'_>>,
) -> Result<Arc<dyn Action>, Diagnostic> {
    let action: T = load::deserialize_rest(src, table, &SHARED)?;
    Ok(Arc::new(action))
}

/// The keys every step may have, whatever its action.
pub const SHARED: [&str; 4] = ["mode", "timeout", "downtime", "restore"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Shared {
    mode: Option<String>,
    timeout: Option<Dur>,
    #[serde(default)]
    downtime: bool,
    #[serde(default)]
    restore: bool,
}

/// One step of a playbook: its action and the keys every step has.
#[derive(Debug, Clone)]
pub struct Step {
    pub action: ActionConfig,
    /// Runs only in this mode (every mode when `None`).
    pub mode: Option<String>,
    pub timeout: Option<Duration>,
    /// Production goes down with this step: downtime is charged to the budget from here ...
    pub downtime: bool,
    /// ... until this step succeeds.
    pub restore: bool,
}

/// One configured action: its kind (the key that names it) and its config.
#[derive(Debug, Clone)]
pub struct ActionConfig {
    kind: &'static str,
    action: Arc<dyn Action>,
}

impl ActionConfig {
    /// The key that names it, as listed in [`KINDS`]: `run`, `systemd`, ...
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The kind's own config, when it is a `T` (`None` otherwise).
    pub fn get<T: Action>(&self) -> Option<&T> {
        let any: &dyn Any = self.action.as_ref();
        any.downcast_ref()
    }
}

impl fmt::Display for ActionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.action.describe())
    }
}

/// The one parse-then-check path of every step (`header` is its playbook's `[playbooks.NAME]`):
/// which action (exactly one key of [`KINDS`]), keys that belong to another action, the
/// [`SHARED`] keys, the action's own keys, then its check. Problems go to `errors`; `None`
/// when there were any.
pub fn parse_step(
    src: &Source,
    header: &str,
    mut value: Spanned<DeValue<'_>>,
    errors: &mut Vec<Diagnostic>,
) -> Option<Step> {
    let at = value.span().start;
    let before = errors.len();
    let mut bad = |msg: String| errors.push(src.at(at, format!("step in {header}: {msg}")));
    let names: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
    let DeValue::Table(table) = value.get_mut() else {
        bad(format!(
            "a step is a table with one action, like {{ log = \"...\" }} (actions: {})",
            names.join(", ")
        ));
        return None;
    };
    let keys: Vec<String> = table.keys().map(|k| k.get_ref().to_string()).collect();
    let named: Vec<&(&str, Kind)> = KINDS
        .iter()
        .filter(|(k, _)| keys.iter().any(|key| key == k))
        .collect();
    // A kind's key may also be another kind's field (`unit` of a `systemd` step): beside other
    // action keys it is read as that field, so `{ systemd = "stop", unit = "x" }` is one
    // systemd step, and `unit` in a `run` step is reported as belonging to `systemd` steps.
    let present: Vec<&(&str, Kind)> = if named.len() > 1 {
        let narrowed: Vec<&(&str, Kind)> = named
            .iter()
            .copied()
            .filter(|(k, _)| {
                !KINDS
                    .iter()
                    .any(|(other, kind)| other != k && (kind.fields)().contains(k))
            })
            .collect();
        if narrowed.is_empty() {
            named
        } else {
            narrowed
        }
    } else {
        named
    };
    let (kind, how) = match present[..] {
        [] => {
            bad(format!(
                "no action; a step has one of: {}",
                names.join(", ")
            ));
            return None;
        }
        [one] => *one,
        [a, b, ..] => {
            bad(format!(
                "has both `{}` and `{}`; write one action per step",
                a.0, b.0
            ));
            return None;
        }
    };
    let own = (how.fields)();
    for key in &keys {
        if own.contains(&key.as_str()) || SHARED.contains(&key.as_str()) {
            continue;
        }
        let owner = KINDS
            .iter()
            .find(|(_, k)| (k.fields)().contains(&key.as_str()));
        if let Some((other, _)) = owner {
            bad(format!("`{key}` belongs to `{other}` steps; remove it"));
            load::take_key(table, key);
        }
    }
    let shared = load::split_off(&mut value, &SHARED);
    let shared: Option<Shared> = load::deserialize(src, shared)
        .map_err(|d| errors.push(d))
        .ok();
    let action = (how.parse)(src, value).map_err(|d| errors.push(d)).ok();
    let (shared, action) = (shared?, action?);
    let mut bad = |msg: String| errors.push(src.at(at, format!("step in {header}: {msg}")));
    if let Err(msg) = action.check() {
        bad(msg);
    }
    for text in action.templates() {
        if let Err(msg) = check_template(text) {
            bad(msg);
        }
    }
    if shared.downtime && shared.restore {
        bad("a step is either `downtime = true` or `restore = true`, not both".into());
    }
    (errors.len() == before).then(|| Step {
        action: ActionConfig { kind, action },
        mode: shared.mode,
        timeout: shared.timeout.map(|d| d.0),
        downtime: shared.downtime,
        restore: shared.restore,
    })
}

/// What a running step may use.
pub struct StepContext<'a> {
    pub app: &'a Arc<App>,
    pub http: &'a reqwest::Client,
    pub intent: &'a Intent,
    pub playbook: &'a str,
    pub mode: &'a str,
    pub run: i64,
    /// The orchestrator running the step, for the mark on its processes.
    pub holder: &'a str,
}

/// Runs one step; Ok with details for the audit trail, or Err with what went wrong.
pub async fn execute(
    step: &Step,
    timeout: Duration,
    ctx: &StepContext<'_>,
) -> Result<Value, String> {
    step.action.action.execute(timeout, ctx).await
}

/// The names a step's templates may use besides `data.KEY` (see [`step_field`]).
const STEP_FIELDS: [&str; 5] = ["mode", "reason", "intent", "intent_type", "playbook"];

/// What to write instead of a name no step has.
const STEP_FIELDS_HINT: &str = "use {mode}, {reason}, {intent}, {intent_type}, {playbook} or \
     {data.KEY}, and {{ }} for literal braces";

/// Refuses a template in `text` that names nothing a running step provides.
fn check_template(text: &str) -> Result<(), String> {
    for name in Template::parse(text).fields() {
        if STEP_FIELDS.contains(&name) || name.strip_prefix("data.").is_some_and(|k| !k.is_empty())
        {
            continue;
        }
        let hint = load::closest(name, &STEP_FIELDS)
            .map(|c| format!("did you mean {{{c}}}? "))
            .unwrap_or_default();
        return Err(format!(
            "template {{{name}}} in {text:?} names nothing a step has; {hint}{STEP_FIELDS_HINT}"
        ));
    }
    Ok(())
}

/// Fills the templates of one string ([`crate::template`]). A step acts on the result, so a
/// field that cannot be filled is an error ([`Missing::Error`]), never a placeholder in an argv.
/// Braces that are not a template (JSON in an argument) stay as written; `{{`/`}}` are literal.
pub fn fill(text: &str, ctx: &StepContext) -> Result<String, String> {
    Template::parse(text)
        .render(Missing::Error, |name| step_field(ctx, name))
        .map_err(|e| match e.name.strip_prefix("data.") {
            Some(key) => format!(
                "template {{{}}}: intent {} has no data field {key:?}",
                e.name, ctx.intent.id
            ),
            None => format!("template {{{}}}: unknown name; {STEP_FIELDS_HINT}", e.name),
        })
}

/// The names a step's templates may use.
fn step_field<'a>(ctx: &'a StepContext, name: &str) -> Option<Cow<'a, str>> {
    match name {
        "mode" => Some(Cow::Borrowed(ctx.mode)),
        "reason" => Some(Cow::Borrowed(&ctx.intent.reason)),
        "intent" => Some(Cow::Owned(ctx.intent.id.to_string())),
        "intent_type" => Some(Cow::Borrowed(&ctx.intent.intent_type)),
        "playbook" => Some(Cow::Borrowed(ctx.playbook)),
        _ => template::field(&ctx.intent.data, name.strip_prefix("data.")?),
    }
}

/// Every string in `v` (what [`fill_json`] fills).
fn json_strings<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| json_strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| json_strings(x, out)),
        _ => {}
    }
}

/// [`fill`] on every string of a JSON value (a webhook's body).
pub fn fill_json(v: &Value, ctx: &StepContext) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(fill(s, ctx)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| fill_json(x, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), fill_json(x, ctx)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Output kept in the audit trail per stream: the end, where errors usually are.
const AUDIT_TAIL: usize = 2048;

fn last(text: &str, n: usize) -> &str {
    let mut start = text.len().saturating_sub(n);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Fills the templates of an argv. A value from outside (an intent's data or reason) that
/// fills in at the start of an element and begins with `-` would be read as an option
/// (`systemctl restart --help`): it is refused, unless the element follows a `--`. Elements
/// written with a leading `-` in the config are the operator's options and stay.
pub fn fill_argv(templates: &[String], ctx: &StepContext) -> Result<Vec<String>, String> {
    let mut options_ended = false;
    let mut argv = Vec::with_capacity(templates.len());
    for t in templates {
        let value = fill(t, ctx)?;
        if !options_ended && value.starts_with('-') && !t.starts_with('-') {
            return Err(format!(
                "argument {t:?} filled in as {value:?}, which the program would read as an option; refused. Put \"--\" before it if the program takes such values, or fix what the intent carries"
            ));
        }
        options_ended |= t == "--";
        argv.push(value);
    }
    Ok(argv)
}

/// A step command's environment: a minimal base ([`crate::exec::BASE_ENV`]) plus `vars`, or,
/// with `inherit`, the daemon's whole environment plus `vars`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepEnv {
    pub vars: std::collections::BTreeMap<String, String>,
    pub inherit: bool,
}

/// Runs a command for a step (`run`, `systemd`) through `crate::exec`, its processes marked
/// with the run so recovery can find them; the result as audit details. The daemon's own
/// environment (which may hold secrets given to the config through `${ENV}`) is not passed on
/// unless `env.inherit`.
pub async fn command(
    argv: &[String],
    timeout: Duration,
    env: &StepEnv,
    ctx: &StepContext<'_>,
) -> Result<Value, String> {
    let mut cmd = crate::exec::Cmd::new(argv.to_vec(), timeout);
    if !env.inherit {
        cmd = cmd.clear_env();
    }
    for (k, v) in &env.vars {
        cmd = cmd.env(k.clone(), v.clone());
    }
    let out = cmd
        .env("VIGIL_INTENT", ctx.intent.id.to_string())
        .env("VIGIL_INTENT_TYPE", ctx.intent.intent_type.clone())
        .env("VIGIL_PLAYBOOK", ctx.playbook)
        .env("VIGIL_MODE", ctx.mode)
        // Marks the step's processes, so recovery can find them if this vigil dies.
        .env(
            super::orphans::MARK,
            super::orphans::token(ctx.holder, ctx.run),
        )
        .run()
        .await
        .map_err(|e| e.to_string())?;
    let (stdout, stderr) = (last(&out.stdout, AUDIT_TAIL), last(&out.stderr, AUDIT_TAIL));
    let details = json!({
        "argv": argv, "result": out.describe(), "elapsed_s": out.duration.as_secs_f64(),
        "stdout_tail": stdout, "stderr_tail": stderr,
    });
    if out.success() {
        Ok(details)
    } else {
        let said = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        Err(format!(
            "{} {}; output: {}",
            argv[0],
            out.describe(),
            last(said.trim_end(), 300)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn every_kind_takes_its_own_key() {
        for (name, kind) in KINDS {
            assert!((kind.fields)().contains(name), "{name}");
        }
    }

    #[test]
    fn templates_fill_inside_one_element_and_leave_other_braces() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::Config::parse("t.toml", "").unwrap();
        let app = Arc::new(App::new(
            config,
            dir.path().to_path_buf(),
            Arc::new(ManualClock::at("2026-01-01T00:00:00Z")),
        ));
        let intent = Intent {
            id: 7,
            intent_type: "alert_gpu_oom".into(),
            priority: 9,
            reason: "OOM $(reboot)".into(),
            data: json!({"alloc_gib": 2.5, "name": "a b"})
                .as_object()
                .unwrap()
                .clone(),
            created_at: 0,
            updated_at: 0,
            status: crate::intent::IntentStatus::Running,
            dedup_key: "k".into(),
            origin: "test".into(),
            note: None,
            host: "a".into(),
        };
        let http = crate::http::client(crate::http::DEFAULT_TIMEOUT);
        let ctx = StepContext {
            app: &app,
            http: &http,
            intent: &intent,
            playbook: "pb",
            mode: "canary",
            run: 1,
            holder: "h:1:0",
        };
        assert_eq!(
            fill("--alloc={data.alloc_gib}", &ctx).unwrap(),
            "--alloc=2.5"
        );
        assert_eq!(fill("{data.name}", &ctx).unwrap(), "a b");
        assert_eq!(fill("{reason}", &ctx).unwrap(), "OOM $(reboot)");
        assert_eq!(
            fill("{mode}/{playbook}/{intent}/{intent_type}", &ctx).unwrap(),
            "canary/pb/7/alert_gpu_oom"
        );
        assert_eq!(
            fill("{\"json\": 1} {unknown", &ctx).unwrap(),
            "{\"json\": 1} {unknown"
        );
        let e = fill("{data.missing}", &ctx).unwrap_err();
        assert!(e.contains("no data field \"missing\""), "{e}");
    }
}
