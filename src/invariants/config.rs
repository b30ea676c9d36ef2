//! `[invariants]` (settings plus `[invariants.ID]` entries) and the `[collectors.NAME]` that
//! fill the snapshot they query.
//!
//! `[invariants]` mixes settings (`interval`, `enabled`, `alert`, `timeout`) with invariant
//! tables, so it is taken out of the document by hand: known keys are settings, every other key
//! must be a table and is an invariant. Each query is prepared against an empty snapshot schema
//! built from the collectors' declared tables, so a bad query is an error at `vigil check`.

use super::collectors::CollectorConfig;
use crate::config::load::{self, Diagnostic, Source};
use crate::config::Dur;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

const SETTINGS: [&str; 5] = ["interval", "enabled", "alert", "timeout", "snapshot_max_mb"];

#[derive(Debug, Clone, Default)]
pub struct InvariantsConfig {
    pub settings: Settings,
    pub collectors: BTreeMap<String, CollectorConfig>,
    pub invariants: BTreeMap<String, Invariant>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Period of the background loop.
    pub interval: Dur,
    /// The background loop runs only when enabled; `run-cycle` always works.
    pub enabled: bool,
    /// Default timeout of a collector.
    pub timeout: Dur,
    pub alert: Option<AlertConfig>,
    /// The most a snapshot may hold, in MiB: a query that selects far more than it meant to
    /// fails with a clear error instead of taking the host's memory.
    pub snapshot_max_mb: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            interval: Dur::secs(300),
            enabled: true,
            timeout: Dur::secs(10),
            alert: None,
            snapshot_max_mb: 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Slack incoming-webhook URL.
    pub slack: String,
    #[serde(default = "Severity::major")]
    pub min_severity: Severity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Minor,
    Major,
    Critical,
}

impl Severity {
    fn major() -> Self {
        Severity::Major
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Minor => "minor",
            Severity::Major => "major",
            Severity::Critical => "critical",
        }
    }
}

/// `[invariants.ID]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInvariant {
    name: String,
    #[serde(default = "default_tier")]
    tier: String,
    severity: Severity,
    runbook: Option<String>,
    query: Spanned<String>,
    signal: Option<String>,
    #[serde(default)]
    key: Vec<String>,
    #[serde(rename = "for")]
    for_: Option<Dur>,
    needs: Option<Vec<String>>,
}

fn default_tier() -> String {
    "A".into()
}

/// One invariant: a query whose rows are violations, plus metadata.
#[derive(Debug, Clone)]
pub struct Invariant {
    pub id: String,
    pub name: String,
    pub tier: String,
    pub severity: Severity,
    pub runbook: Option<String>,
    pub query: String,
    /// Template with `{column}` placeholders, filled from each violation row.
    pub signal: Option<String>,
    pub key: Vec<String>,
    pub for_ms: i64,
    /// The collectors whose tables the query reads.
    pub needs: BTreeSet<String>,
}

/// Takes `[invariants]` and `[collectors]` out of the document.
pub fn take(
    src: &Source,
    root: &mut DeTable<'_>,
    errors: &mut Vec<Diagnostic>,
) -> InvariantsConfig {
    let mut out = InvariantsConfig::default();
    // Table → the collector that makes it: two collectors cannot fill one table.
    let mut makers: BTreeMap<String, String> = BTreeMap::new();
    renamed_section(src, root, errors);
    let collectors = load::take_tagged(src, root, "collectors", super::collectors::KINDS, errors);
    for (name, at, c) in collectors {
        for d in c.declared(&name) {
            if let Some(other) = makers.insert(d.name.clone(), name.clone()) {
                errors.push(src.at(at, format!("[collectors.{name}] makes table {:?}, which [collectors.{other}] makes too; give one of them another name (`table = \"...\"`, or another key in `tables`)", d.name)));
            }
        }
        out.collectors.insert(name, c);
    }
    let Some(section) = load::take_key(root, "invariants") else {
        return out;
    };
    let start = section.span().start;
    let DeValue::Table(entries) = section.into_inner() else {
        errors.push(src.at(
            start,
            "`invariants` must be a table: [invariants] settings and [invariants.ID] entries",
        ));
        return out;
    };
    let mut settings = DeTable::new();
    let mut raw = Vec::new();
    for (key, value) in entries {
        let k = key.get_ref().to_string();
        if SETTINGS.contains(&k.as_str()) {
            settings.insert(key, value);
        } else if matches!(value.get_ref(), DeValue::Table(_)) {
            let at = value.span().start;
            match load::deserialize::<RawInvariant>(src, value) {
                Ok(r) => raw.push((k, at, r)),
                Err(d) => errors.push(d),
            }
        } else {
            let hint = load::closest(&k, &SETTINGS)
                .map(|s| format!("did you mean {s:?}? "))
                .unwrap_or_default();
            errors.push(src.at(
                value.span().start,
                format!("unknown key {k:?} in [invariants]; {hint}settings are {}, invariants are tables like [invariants.S-01]", SETTINGS.join(", ")),
            ));
        }
    }
    match load::deserialize::<Settings>(src, Spanned::new(start..start, DeValue::Table(settings))) {
        Ok(s) => out.settings = s,
        Err(d) => errors.push(d),
    }
    let schema = super::snapshot::Schema::declared(&out.collectors);
    for (id, at, r) in raw {
        let query_at = r.query.span().start;
        let query = r.query.into_inner();
        let needs = match schema.check(&query) {
            Ok(tables) => tables,
            Err(msg) => {
                errors.push(src.at(query_at, format!("[invariants.{id}] query: {msg}")));
                continue;
            }
        };
        let needs = match r.needs {
            Some(explicit) => {
                let unknown: Vec<_> = explicit
                    .iter()
                    .filter(|n| !out.collectors.contains_key(*n))
                    .collect();
                if !unknown.is_empty() {
                    errors.push(src.at(at, format!("[invariants.{id}] needs unknown collectors {unknown:?}; name [collectors.NAME] sections")));
                    continue;
                }
                explicit.into_iter().collect()
            }
            None => needs
                .iter()
                .filter_map(|t| schema.owner(t).map(str::to_string))
                .collect(),
        };
        out.invariants.insert(
            id.clone(),
            Invariant {
                id,
                name: r.name,
                tier: r.tier,
                severity: r.severity,
                runbook: r.runbook,
                query,
                signal: r.signal,
                key: r.key,
                for_ms: r.for_.map_or(0, |d| d.as_ms()),
                needs,
            },
        );
    }
    out
}

/// `[snapshot.NAME]` is what `[collectors.NAME]` was called before; each such table is an error
/// at its place that says so, rather than a section silently ignored.
fn renamed_section(src: &Source, root: &mut DeTable<'_>, errors: &mut Vec<Diagnostic>) {
    let Some(old) = load::take_key(root, "snapshot") else {
        return;
    };
    let at = old.span().start;
    match old.into_inner() {
        DeValue::Table(entries) if !entries.is_empty() => {
            for (name, value) in entries {
                let name = name.get_ref();
                errors.push(src.at(
                    value.span().start,
                    format!(
                        "[snapshot.{name}] was renamed to [collectors.{name}]; rename the section"
                    ),
                ));
            }
        }
        _ => errors.push(src.at(
            at,
            "[snapshot] was renamed to [collectors]: write collectors as [collectors.NAME]",
        )),
    }
}
