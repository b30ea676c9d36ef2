//! `vigil units list|show|logs|release`, on the store (with or without a daemon running).

use anyhow::bail;
use serde_json::json;
use vigil::app::App;
use vigil::clock::rfc3339_ms;
use vigil::store::{UnitRecord, UnitStore};
use vigil::supervisor::state::UnitState;

#[derive(Debug, clap::Subcommand)]
pub enum UnitsCommand {
    /// Configured units: name, state, pid, tier, restarts in window, since.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One unit: last exit, last error, quarantine bundle, replica.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Lift a unit's quarantine and forget its restart history. A running daemon starts it
    /// at its next start.
    Release { name: String },
    /// The last lines of a unit's output (`DATA_DIR/units/NAME/unit.log`).
    Logs {
        name: String,
        /// Lines to print.
        #[arg(short = 'n', long = "lines", default_value_t = 50)]
        n: usize,
    },
}

/// The last `n` lines of a file (the whole file is read: unit logs rotate at `log.max_size`).
fn tail(path: &std::path::Path, n: usize) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)?;
    let lines: Vec<&str> = text.lines().collect();
    Ok(lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect())
}

/// The stored record of `name`, or what a unit that never ran looks like.
fn record(app: &App, name: &str) -> anyhow::Result<UnitRecord> {
    let stored = app.store()?.unit(name)?;
    let Some(cfg) = app.config.units.get(name) else {
        if let Some(r) = stored {
            return Ok(r);
        }
        let names: Vec<&str> = app.config.units.keys().map(String::as_str).collect();
        bail!(
            "no unit named {name:?}; configured units: {}",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
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

fn row(app: &App, r: &UnitRecord) -> serde_json::Value {
    let cfg = app.config.units.get(&r.name);
    let now = app.clock.now_ms();
    let window = cfg.map_or(i64::MAX, |c| c.restart_window.as_ms());
    let in_window = r
        .restarts
        .iter()
        .filter(|t| **t > now.saturating_sub(window))
        .count();
    json!({
        "name": r.name,
        "state": r.state,
        "pid": r.pid,
        "tier": r.tier,
        "restarts_in_window": in_window,
        "total_restarts": r.total_restarts,
        "since": (r.since_ms > 0).then(|| rfc3339_ms(r.since_ms)),
        "configured": cfg.is_some(),
        "output_captured": r.state != UnitState::Adopted.as_str(),
    })
}

pub fn run(app: &App, cmd: UnitsCommand) -> anyhow::Result<u8> {
    match cmd {
        UnitsCommand::List { json } => {
            let mut names: Vec<String> = app.config.units.keys().cloned().collect();
            for r in app.store()?.units()? {
                if !names.contains(&r.name) {
                    names.push(r.name);
                }
            }
            let rows: Vec<_> = names
                .iter()
                .map(|n| record(app, n).map(|r| row(app, &r)))
                .collect::<anyhow::Result<_>>()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no units configured");
            } else {
                println!(
                    "{:<20} {:<12} {:>8} {:>4} {:>8}  SINCE",
                    "NAME", "STATE", "PID", "TIER", "RESTARTS"
                );
                for r in &rows {
                    println!(
                        "{:<20} {:<12} {:>8} {:>4} {:>8}  {}",
                        r["name"].as_str().unwrap_or(""),
                        r["state"].as_str().unwrap_or(""),
                        r["pid"].as_i64().map_or("-".into(), |p| p.to_string()),
                        r["tier"],
                        r["restarts_in_window"],
                        r["since"].as_str().unwrap_or("-"),
                    );
                }
            }
            Ok(0)
        }
        UnitsCommand::Show { name, json } => {
            let r = record(app, &name)?;
            let mut v = row(app, &r);
            let cfg = app.config.units.get(&name);
            v["last_exit"] = json!(r.last_exit);
            v["last_error"] = json!(r.last_error);
            v["bundle"] = json!(r.bundle);
            v["replica"] = json!(cfg.and_then(|c| c.replica.clone()));
            v["command"] = json!(cfg.map(|c| c.command.clone()));
            v["restart_history"] = json!(r
                .restarts
                .iter()
                .map(|t| rfc3339_ms(*t))
                .collect::<Vec<_>>());
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if let serde_json::Value::Object(m) = &v {
                for (k, val) in m {
                    let text = match val {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => "-".into(),
                        other => other.to_string(),
                    };
                    println!("{k:<20} {text}");
                }
            }
            Ok(0)
        }
        UnitsCommand::Logs { name, n } => {
            record(app, &name)?;
            let path = app.dir("units").join(&name).join("unit.log");
            match tail(&path, n) {
                Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    eprintln!(
                        "{name} has written no output yet ({} does not exist)",
                        path.display()
                    )
                }
                Err(e) => bail!("cannot read {}: {e}", path.display()),
            }
            Ok(0)
        }
        UnitsCommand::Release { name } => {
            let mut r = record(app, &name)?;
            let disabled = [
                UnitState::Quarantined,
                UnitState::Exhausted,
                UnitState::FailedOver,
            ];
            if !disabled.iter().any(|s| s.as_str() == r.state) {
                println!("{name} is {}, not quarantined; nothing to release", r.state);
                return Ok(0);
            }
            r.state = UnitState::Stopped.as_str().into();
            r.restarts.clear();
            r.total_restarts = 0;
            r.since_ms = app.clock.now_ms();
            app.store()?.put_unit(&r)?;
            println!("{name} released; a daemon starting now starts it");
            Ok(0)
        }
    }
}
