//! Typed config in three steps: parse (with `file:line:col` on every error), validate (cross
//! references), build (elsewhere: nothing starts before everything validates).

mod duration;
pub mod load;

use crate::store::Scope;
pub use duration::{human, parse_duration, Dur};
pub use load::Diagnostic;

use crate::rules::RuleConfig;
use crate::sources::SourceConfig;
use load::Source;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The config file `vigil run` looks for in the current directory.
pub const DEFAULT_FILE: &str = "vigil.toml";

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the config came from: a path, or "(built-in default)".
    pub origin: String,
    pub data_dir: Option<PathBuf>,
    pub timezone: Tz,
    pub api: ApiConfig,
    pub intents: IntentsConfig,
    /// `[metrics]`: bounds on the exported series.
    pub metrics: crate::metrics::MetricsConfig,
    pub sources: BTreeMap<String, SourceConfig>,
    pub rules: BTreeMap<String, RuleConfig>,
    /// Windows, budgets, escalation, playbooks and the orchestrator's settings.
    pub orchestrator: crate::orchestrator::config::OrchestratorConfig,
    /// `[invariants]`, `[invariants.ID]` and the `[collectors.NAME]` that feed them.
    pub invariants: crate::invariants::InvariantsConfig,
    /// `[units.NAME]`: the processes the supervisor runs.
    pub units: BTreeMap<String, crate::supervisor::UnitConfig>,
    /// `[canaries.NAME]`: candidates judged against production (issue 13).
    pub canaries: BTreeMap<String, crate::canary::CanaryConfig>,
    /// `[store]`: where the store lives (SQLite under `data_dir`, or PostgreSQL).
    pub store: crate::store::StoreConfig,
    /// `host = "..."`: this daemon's name in a fleet (`Config::host` has the default).
    pub host: Option<String>,
    /// Where each `[section.NAME]` starts, for validation messages.
    locations: BTreeMap<String, usize>,
    text: String,
}

/// Everything but the `type`-tagged sections, which `load::take_tagged` handles.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Plain {
    data_dir: Option<PathBuf>,
    #[serde(default)]
    timezone: Tz,
    #[serde(default)]
    api: ApiConfig,
    #[serde(default)]
    intents: IntentsConfig,
    #[serde(default)]
    metrics: crate::metrics::MetricsConfig,
    #[serde(default)]
    rules: BTreeMap<String, Spanned<RuleConfig>>,
    #[serde(default)]
    store: crate::store::StoreConfig,
    host: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the HTTP API, `/metrics` and the dashboard. Loopback by default.
    #[serde(default = "ApiConfig::default_listen")]
    pub listen: SocketAddr,
    /// Bearer token that calls which change state must present, inline.
    pub token: Option<String>,
    /// A file holding the bearer token (whitespace around it is ignored). With neither `token`
    /// nor `token_file`, the daemon generates one into `DATA_DIR/api.token` on first start.
    pub token_file: Option<PathBuf>,
    /// Set `enabled = false` to run without the HTTP listener.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Connections served at once; more wait in the kernel's backlog.
    #[serde(default = "ApiConfig::default_max_connections")]
    pub max_connections: usize,
    /// A request's headers must arrive within this long; an idle keep-alive connection is
    /// closed after it.
    #[serde(default = "ApiConfig::default_header_timeout")]
    pub header_timeout: Dur,
    /// Request bodies over this many bytes are answered 413.
    #[serde(default = "ApiConfig::default_max_body_size")]
    pub max_body_size: usize,
}

impl ApiConfig {
    fn default_listen() -> SocketAddr {
        "127.0.0.1:9108".parse().unwrap()
    }

    fn default_max_connections() -> usize {
        256
    }

    fn default_header_timeout() -> Dur {
        Dur::secs(10)
    }

    fn default_max_body_size() -> usize {
        1 << 20
    }

    /// What is wrong with the token settings: both kinds of token, or an address other than
    /// loopback without a configured one (a generated token is printed once, on one host's
    /// log; an API reachable from elsewhere is set up on purpose, with a token on purpose).
    fn check(&self) -> Option<String> {
        if self.token.is_some() && self.token_file.is_some() {
            return Some("[api]: set `token` or `token_file`, not both".into());
        }
        let configured = self.token.is_some() || self.token_file.is_some();
        if self.enabled && !self.listen.ip().is_loopback() && !configured {
            return Some(format!(
                "[api] listen = \"{}\" is reachable from other hosts, and no token is configured; set `token_file = \"/etc/vigil/api.token\"` under [api], or listen on 127.0.0.1",
                self.listen
            ));
        }
        None
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: Self::default_listen(),
            token: None,
            token_file: None,
            enabled: true,
            max_connections: Self::default_max_connections(),
            header_timeout: Self::default_header_timeout(),
            max_body_size: Self::default_max_body_size(),
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntentsConfig {
    /// Same type and dedup key within this window: one intent.
    pub dedup_window: Dur,
    /// Finished intents older than this are pruned.
    pub retention: Dur,
    /// Inbox files larger than this many bytes are rejected unread.
    pub max_file_size: u64,
}

impl Default for IntentsConfig {
    fn default() -> Self {
        Self {
            dedup_window: Dur::secs(3600),
            retention: Dur::secs(24 * 3600),
            max_file_size: crate::intent::inbox::DEFAULT_MAX_BYTES,
        }
    }
}

/// An IANA time zone, checked when the config is read.
#[derive(Clone, PartialEq)]
pub struct Tz(pub jiff::tz::TimeZone);

impl Default for Tz {
    fn default() -> Self {
        Tz(jiff::tz::TimeZone::system())
    }
}

impl fmt::Debug for Tz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.iana_name().unwrap_or("local"))
    }
}

impl<'de> Deserialize<'de> for Tz {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        jiff::tz::TimeZone::get(&name).map(Tz).map_err(|_| {
            serde::de::Error::custom(format!(
                "unknown time zone {name:?}; use an IANA name such as \"America/New_York\" or \"UTC\""
            ))
        })
    }
}

/// A regular expression, compiled when the config is read so a bad one is a config error.
#[derive(Clone)]
pub struct Pattern(pub regex::Regex);

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        regex::Regex::new(&s).map(Pattern).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid regex {s:?}: {}",
                e.to_string().lines().last().unwrap_or("")
            ))
        })
    }
}

/// A config that failed to parse or validate: every problem found, each with its place.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // `error` is not a `#[source]`: the message already says it, and a chain printed by the
    // CLI would say it twice.
    #[error("cannot read config {path}: {error}; pass an existing file with --config")]
    Read { path: String, error: std::io::Error },
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            error,
        })?;
        Config::parse(&path.display().to_string(), &text)
    }

    /// The config `vigil run` uses when it is given none and finds no `vigil.toml`.
    pub fn builtin() -> Config {
        let mut text = String::from(include_str!("default.toml"));
        let roots = crate::sources::journald::SYSTEM_JOURNALS.map(PathBuf::from);
        if crate::sources::journald::has_journal_files(&roots) {
            text.push_str(include_str!("default_journal.toml"));
        }
        Config::parse("(built-in default)", &text).expect("the built-in config is valid")
    }

    /// Parse and validate.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let src = Source { file, text };
        let root =
            DeTable::parse(text).map_err(|e| ConfigError::Invalid(vec![src.from_toml(&e, 0)]))?;
        let root_span = root.span();
        let mut root = Spanned::new(root_span.clone(), DeValue::Table(root.into_inner()));
        let mut errors = Vec::new();
        load::expand_env(&src, &mut root, &mut errors);
        let DeValue::Table(mut table) = root.into_inner() else {
            unreachable!("a document is a table")
        };

        let mut locations = BTreeMap::new();
        let mut sources = BTreeMap::new();
        for (name, at, entry) in load::take_tagged(
            &src,
            &mut table,
            "sources",
            crate::sources::KINDS,
            &mut errors,
        ) {
            locations.insert(format!("sources.{name}"), at);
            sources.insert(name, entry);
        }
        if let Some(DeValue::Table(api)) = table.get("api").map(|a| a.get_ref()) {
            if let Some(listen) = api.get("listen") {
                locations.insert("api.listen".into(), listen.span().start);
            }
        }
        // Windows are checked again by `warnings`, which points at their place.
        if let Some(DeValue::Table(windows)) = table.get("windows").map(|w| w.get_ref()) {
            for (name, w) in windows.iter() {
                locations.insert(format!("windows.{}", name.get_ref()), w.span().start);
            }
        }
        // ... and so are canaries (a comparison that cannot run).
        if let Some(DeValue::Table(canaries)) = table.get("canaries").map(|c| c.get_ref()) {
            for (name, c) in canaries.iter() {
                locations.insert(format!("canaries.{}", name.get_ref()), c.span().start);
            }
        }
        let orchestrator = crate::orchestrator::config::take(&src, &mut table, &mut errors);
        let invariants = crate::invariants::config::take(&src, &mut table, &mut errors);
        let units = crate::supervisor::config::take(&src, &mut table, &mut errors);
        let canaries =
            crate::canary::config::take(&src, &mut table, &orchestrator, &units, &mut errors);
        let plain: Option<Plain> =
            match load::deserialize(&src, Spanned::new(root_span, DeValue::Table(table))) {
                Ok(p) => Some(p),
                Err(d) => {
                    errors.push(d);
                    None
                }
            };
        if !errors.is_empty() {
            return Err(ConfigError::Invalid(errors));
        }
        let plain = plain.expect("no errors means parsed");
        let rules = plain
            .rules
            .into_iter()
            .map(|(name, r)| {
                locations.insert(format!("rules.{name}"), r.span().start);
                (name, r.into_inner())
            })
            .collect();
        let config = Config {
            origin: file.to_string(),
            data_dir: plain.data_dir,
            timezone: plain.timezone,
            api: plain.api,
            intents: plain.intents,
            metrics: plain.metrics,
            sources,
            rules,
            orchestrator,
            invariants,
            units,
            canaries,
            store: plain.store,
            host: plain.host,
            locations,
            text: text.to_string(),
        };
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// A diagnostic at the start of `[section.name]`.
    pub fn diagnostic(&self, section: &str, name: &str, message: impl Into<String>) -> Diagnostic {
        let at = self
            .locations
            .get(&format!("{section}.{name}"))
            .copied()
            .unwrap_or(0);
        Source {
            file: &self.origin,
            text: &self.text,
        }
        .at(at, message)
    }

    /// Cross references and rules that serde cannot express.
    fn validate(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for (name, rule) in &self.rules {
            if let Err(msg) = rule.check() {
                out.push(self.diagnostic("rules", name, format!("[rules.{name}]: {msg}")));
            }
        }
        // Zero here would prune every finished intent at once, or close every API connection
        // before its request arrives.
        for (table, key, value) in [
            ("intents", "retention", self.intents.retention),
            ("api", "header_timeout", self.api.header_timeout),
        ] {
            if value.is_zero() {
                out.push(self.at_key(
                    table,
                    key,
                    format!(
                        "`{key}` in [{table}] must be more than zero; give a duration like \"24h\""
                    ),
                ));
            }
        }
        if let Some(msg) = self.api.check() {
            out.push(self.diagnostic("api", "listen", msg));
        }
        if let Some(host) = &self.host {
            // Holders are `HOST:PID:N/INTENT`, and `*` names the fleet (`store::Scope`).
            if host.is_empty()
                || host == crate::store::FLEET
                || host.contains([':', '/'])
                || host.chars().any(char::is_whitespace)
            {
                let at = self
                    .text
                    .lines()
                    .scan(0usize, |pos, l| {
                        let start = *pos;
                        *pos += l.len() + 1;
                        Some((start, l.trim_start()))
                    })
                    .find(|(_, l)| l.starts_with("host"))
                    .map_or(0, |(at, _)| at);
                out.push(Source { file: &self.origin, text: &self.text }.at(at, format!(
                    "host = {host:?} cannot name a host: use letters, digits, '.', '-' or '_' (no ':', '/', spaces or '*'), e.g. host = \"gpu-01\""
                )));
            }
        }
        if let Some(url) = &self.store.url {
            if !crate::store::is_postgres_url(url) {
                out.push(self.at_key("store", "url", "[store] url must be a PostgreSQL URL, `postgres://user:password@host:port/db`; leave it out for the embedded SQLite store under data_dir".into()));
            }
        }
        out
    }

    /// A diagnostic at `key` of the top-level `[table]`, or at the table, or at the start.
    fn at_key(&self, table: &str, key: &str, message: String) -> Diagnostic {
        let header = format!("[{table}]");
        let text = &self.text;
        let at = text
            .lines()
            .scan(0usize, |pos, l| {
                let start = *pos;
                *pos += l.len() + 1;
                Some((start, l.trim()))
            })
            .skip_while(|(_, l)| *l != header)
            .skip(1)
            .take_while(|(_, l)| !l.starts_with('['))
            .find(|(_, l)| l.split('=').next().map(str::trim) == Some(key))
            .map(|(at, _)| at)
            .or_else(|| text.find(&header))
            .unwrap_or(0);
        Source {
            file: &self.origin,
            text,
        }
        .at(at, message)
    }

    /// Things that are allowed but probably wrong, such as a rule waiting for an event no
    /// configured source emits, or a maintenance window that a DST change moves or stretches
    /// within the year from `now`. `vigil check` prints them; they do not fail it.
    pub fn warnings(&self, now: jiff::Timestamp) -> Vec<Diagnostic> {
        let emitted: std::collections::BTreeSet<String> = self
            .sources
            .values()
            .flat_map(|s| s.event_types())
            .chain(self.units.values().flat_map(|u| u.event_types()))
            .chain(crate::supervisor::config::EVENTS.map(String::from))
            .collect();
        let mut out = Vec::new();
        for (name, rule) in &self.rules {
            let wanted = rule.on.as_ref().or(rule.absent.as_ref());
            if let Some(ty) = wanted {
                if !emitted.contains(ty) && !crate::sources::BUILTIN_EVENTS.contains(&ty.as_str()) {
                    let known: Vec<&str> = emitted.iter().map(String::as_str).collect();
                    let hint = load::closest(ty, &known)
                        .map(|k| format!("; did you mean {k:?}?"))
                        .unwrap_or_else(|| {
                            "; events may still arrive through the API or other programs".into()
                        });
                    out.push(self.diagnostic(
                        "rules",
                        name,
                        format!("warning: [rules.{name}] waits for event {ty:?}, which no configured source emits{hint}"),
                    ));
                }
            }
        }
        for (name, rule) in &self.rules {
            if let Some(msg) = self.reason_warning(name, rule) {
                out.push(self.diagnostic("rules", name, msg));
            }
        }
        for (name, c) in &self.canaries {
            if c.judge.compare == Some(crate::canary::config::Compare::Production)
                && c.production.port.is_none()
            {
                out.push(self.diagnostic(
                    "canaries",
                    name,
                    format!("warning: [canaries.{name}] compare = \"production\" sends the workload to production too, but production's port is not given, so the candidate is judged on its thresholds alone; give it, like production = {{ systemd = \"judge.service\", port = 8000 }}"),
                ));
            }
        }
        // On the embedded store this host is the whole fleet: a fleet scope means the host's.
        // (VIGIL_STORE_URL may still name a shared store at run time.)
        if self.store.resolve_url().is_none() {
            let o = &self.orchestrator;
            let fleet_wide = o
                .budgets
                .iter()
                .filter(|(_, b)| b.scope == Scope::Fleet)
                .map(|(n, _)| ("budgets", n.as_str()))
                .chain(
                    o.playbooks
                        .iter()
                        .filter(|(_, p)| {
                            p.lock_scope == Scope::Fleet
                                || p.cooldown_scope == Scope::Fleet
                                || p.max_runs.is_some_and(|m| m.scope == Scope::Fleet)
                        })
                        .map(|(n, _)| ("playbooks", n.as_str())),
                );
            for (table, name) in fleet_wide {
                out.push(self.diagnostic(
                    table,
                    name,
                    format!("warning: [{table}.{name}] has scope = \"fleet\", but the store is this host's own SQLite: the fleet is this host alone; hosts share a fleet through [store] url = \"postgres://...\""),
                ));
            }
        }
        for (name, w) in &self.orchestrator.windows {
            let tz = w.timezone.as_ref().unwrap_or(&self.timezone);
            for msg in crate::orchestrator::window::dst_warnings(w.at, &tz.0, now) {
                out.push(self.diagnostic(
                    "windows",
                    name,
                    format!("warning: [windows.{name}] {msg}"),
                ));
            }
        }
        out
    }

    /// A warning when an `on` rule's `reason` names a field that no event of its type carries:
    /// the message would show `{name}` as written forever. Only when every source that emits
    /// the type declares its fields (a scrape's labels are not known ahead).
    fn reason_warning(&self, name: &str, rule: &RuleConfig) -> Option<String> {
        let (ty, reason) = (rule.on.as_ref()?, rule.reason.as_ref()?);
        let mut carried: Vec<String> = Vec::new();
        let mut any = false;
        for source in self.sources.values() {
            if !source.event_types().contains(ty) {
                continue;
            }
            any = true;
            carried.extend(source.event_fields(ty)?);
        }
        if !any {
            return None;
        }
        // What the rule engine adds to every proposal (see `crate::rules`).
        carried.extend(
            ["count", "rule", "type", "event_type", "source"]
                .iter()
                .map(|f| f.to_string()),
        );
        carried.sort();
        carried.dedup();
        let template = crate::template::Template::parse(reason);
        let unknown: Vec<&str> = template
            .fields()
            .filter(|f| {
                let head = f.split('.').next().unwrap_or(f);
                !carried.iter().any(|c| c == f || c == head)
            })
            .collect();
        let first = unknown.first()?;
        let known: Vec<&str> = carried.iter().map(String::as_str).collect();
        let hint = load::closest(first, &known)
            .map(|k| format!("; did you mean {{{k}}}?"))
            .unwrap_or_default();
        let names = unknown
            .iter()
            .map(|f| format!("{{{f}}}"))
            .collect::<Vec<_>>()
            .join(", ");
        Some(format!(
            "warning: [rules.{name}] reason names {names}, which no {ty:?} event carries (it has: {}){hint}",
            known.join(", ")
        ))
    }

    /// This daemon's name in a fleet: `host` in the config, else the machine's hostname.
    pub fn host(&self) -> String {
        self.host.clone().unwrap_or_else(crate::store::hostname)
    }

    /// The data directory: `--data-dir` / `VIGIL_DATA_DIR` win over the config, then `.vigil`.
    pub fn resolve_data_dir(&self, cli: Option<&Path>) -> PathBuf {
        cli.map(Path::to_path_buf)
            .or_else(|| self.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(".vigil"))
    }
}

#[cfg(test)]
mod tests;
