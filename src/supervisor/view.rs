//! Units as the CLI (`vigil units list|show`), the API (`GET /api/units`) and `vigil status`
//! show them: one row per unit from the store (which the daemon writes before it publishes a
//! state, so the store is never behind), the same fields everywhere.

use super::learned;
use super::state::UnitState;
use crate::app::App;
use crate::clock::rfc3339_ms;
use crate::store::{StoreError, UnitRecord, UnitStore};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no unit named {name:?}; configured units: {configured}")]
    NoSuchUnit { name: String, configured: String },
}

/// The stored record of `name`, or what a configured unit that never ran looks like.
pub fn record(app: &App, name: &str) -> Result<UnitRecord, ViewError> {
    let stored = app.store()?.unit(name)?;
    let Some(cfg) = app.config.units.get(name) else {
        if let Some(r) = stored {
            return Ok(r);
        }
        let names: Vec<&str> = app.config.units.keys().map(String::as_str).collect();
        return Err(ViewError::NoSuchUnit {
            name: name.into(),
            configured: if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            },
        });
    };
    Ok(stored.unwrap_or_else(|| UnitRecord {
        name: name.into(),
        state: UnitState::Stopped.as_str().into(),
        tier: cfg.tier,
        pid: None,
        start_ticks: None,
        marker: None,
        restarts: Vec::new(),
        total_restarts: 0,
        last_exit: None,
        last_error: None,
        bundle: None,
        since_ms: 0,
    }))
}

fn disabled(r: &UnitRecord) -> bool {
    UnitState::parse(&r.state).is_some_and(UnitState::is_disabled)
}

/// One unit's row: `name`, `state`, `pid`, `tier`, `restarts_in_window`, `total_restarts`,
/// `since`, `configured`, `output_captured`, `degraded` (`{"since": ...}` while disabled, else
/// null) and `bundle`.
pub fn row(app: &App, r: &UnitRecord) -> Value {
    let cfg = app.config.units.get(&r.name);
    let now = app.clock.now_ms();
    let window = cfg.map_or(i64::MAX, |c| c.restart_window.as_ms());
    let in_window = r
        .restarts
        .iter()
        .filter(|t| **t > now.saturating_sub(window))
        .count();
    let since = (r.since_ms > 0).then(|| rfc3339_ms(r.since_ms));
    json!({
        "name": r.name,
        "state": r.state,
        "pid": r.pid,
        "tier": r.tier,
        "restarts_in_window": in_window,
        "total_restarts": r.total_restarts,
        "since": since,
        "configured": cfg.is_some(),
        "output_captured": r.state != UnitState::Adopted.as_str(),
        "degraded": disabled(r).then(|| json!({ "since": since })),
        "bundle": r.bundle,
    })
}

/// Every configured or stored unit's row, configured ones first (by name).
pub fn rows(app: &App) -> Result<Vec<Value>, ViewError> {
    let mut names: Vec<String> = app.config.units.keys().cloned().collect();
    for r in app.store()?.units()? {
        if !names.contains(&r.name) {
            names.push(r.name);
        }
    }
    names
        .iter()
        .map(|n| record(app, n).map(|r| row(app, &r)))
        .collect()
}

/// The fingerprint of the failure recorded in a bundle's `error.json`, and the normalized
/// lines it hashes.
pub fn bundle_fingerprint(bundle: &str) -> Option<(String, String)> {
    let text = std::fs::read(std::path::Path::new(bundle).join("error.json")).ok()?;
    let v: Value = serde_json::from_slice(&text).ok()?;
    Some((
        v["fingerprint"].as_str()?.to_string(),
        v["failure"].as_str().unwrap_or_default().to_string(),
    ))
}

/// One unit in detail: its row plus `last_exit`, `last_error`, `replica`, `command`,
/// `restart_history`, `fingerprint` (of the last quarantine's failure), `playbooks` (learned
/// ones, with `runs` and `successes`) and `snapshots` (count and last golden).
pub fn show(app: &App, name: &str) -> Result<Value, ViewError> {
    let r = record(app, name)?;
    let mut v = row(app, &r);
    let cfg = app.config.units.get(name);
    v["last_exit"] = json!(r.last_exit);
    v["last_error"] = json!(r.last_error);
    v["replica"] = json!(cfg.and_then(|c| c.replica.clone()));
    v["command"] = json!(cfg.map(|c| c.command.clone()));
    v["restart_history"] = json!(r
        .restarts
        .iter()
        .map(|t| rfc3339_ms(*t))
        .collect::<Vec<_>>());
    v["fingerprint"] = json!(r
        .bundle
        .as_deref()
        .and_then(bundle_fingerprint)
        .map(|(f, _)| f));
    v["playbooks"] = json!(learned::for_unit(&app.dir("playbooks"), name)
        .iter()
        .map(|l| json!({ "fingerprint": l.fingerprint, "failure": l.failure, "fixed": l.fixed,
            "steps": l.steps, "runs": l.runs, "successes": l.successes, "last_run_at": l.last_run_at }))
        .collect::<Vec<_>>());
    let snaps = super::snapshot::list(&app.dir("snapshots"), name);
    v["snapshots"] = json!({
        "count": snaps.len(),
        "last_golden": snaps.iter().rev().find(|s| s.golden()).map(|s| s.path.display().to_string()),
    });
    Ok(v)
}

/// Disabled units (the host's degraded mode): `unit`, `state`, `since`, `bundle`.
pub fn degraded(app: &App) -> Result<Vec<Value>, ViewError> {
    Ok(app
        .store()?
        .units()?
        .iter()
        .filter(|r| disabled(r))
        .map(|r| {
            json!({ "unit": r.name, "state": r.state, "since": rfc3339_ms(r.since_ms), "bundle": r.bundle })
        })
        .collect())
}

/// Lifts a quarantine in the store, without a daemon: the unit is `stopped` with its restart
/// history forgotten, and a daemon starting later starts it.
pub fn release_stored(app: &App, name: &str) -> Result<Value, super::ActError> {
    let mut r = record(app, name)?;
    if !disabled(&r) {
        return Ok(json!({ "unit": name, "verb": "release", "state": r.state,
            "note": format!("{name} is {}, not quarantined; nothing to release", r.state) }));
    }
    r.state = UnitState::Stopped.as_str().into();
    r.restarts.clear();
    r.total_restarts = 0;
    r.since_ms = app.clock.now_ms();
    app.store()?.put_unit(&r)?;
    Ok(json!({ "unit": name, "verb": "release", "state": r.state,
        "note": format!("{name} released; a daemon starting now starts it") }))
}
