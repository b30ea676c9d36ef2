//! `vigil status`: the daemon and its config, sources, intents and the orchestrator at a glance.

use super::{print_json, Exit};
use std::fmt::Write;
use std::time::Duration;
use vigil::app::App;
use vigil::clock::rfc3339_ms;
use vigil::config::human;
use vigil::daemon::record::{self, DaemonRecord};
use vigil::orchestrator::status::OrchestratorStatus;
use vigil::store::{FleetStore, IntentStore, SourceStore};

pub fn run(app: &App, json: bool) -> Exit {
    let store = app.store()?;
    let sources = store.source_states()?;
    let counts = store.intent_counts()?;
    let orch = vigil::orchestrator::status::collect(app)?;
    let daemon = record::read(&app.data_dir)?;
    let degraded = vigil::supervisor::view::degraded(app)?;
    let fleet = store.fleet()?;
    let canaries = vigil::canary::list(app)?;
    if json {
        let by_state: serde_json::Map<String, serde_json::Value> = counts
            .iter()
            .map(|(s, n)| (s.to_string(), (*n).into()))
            .collect();
        let daemon = daemon.map(|d| {
            let running = d.running();
            let mut v = serde_json::to_value(d).expect("JSON");
            v["running"] = running.into();
            v
        });
        return print_json(&serde_json::json!({"daemon": daemon, "sources": sources,
            "intents": by_state, "playbooks": orch.playbooks, "flags": orch.flags,
            "budgets": orch.budgets, "locks": orch.locks, "degraded": degraded, "host": store.host(),
            "fleet": fleet, "canaries": canaries}));
    }
    println!("{}", config_line(app, daemon.as_ref()));
    println!("data dir: {}", app.data_dir.display());
    println!("\nSOURCES (as last recorded by the daemon)");
    if sources.is_empty() {
        println!("  none recorded: is `vigil run` running with this data dir?");
    }
    for s in &sources {
        let state = if s.up { "up" } else { "DOWN" };
        let reason = s
            .reason
            .as_deref()
            .map(|r| format!("  ({r})"))
            .unwrap_or_default();
        println!(
            "  {:<20} {:<9} {:<5} since {}{reason}",
            s.source,
            s.kind,
            state,
            rfc3339_ms(s.since_ms)
        );
    }
    // A shared (PostgreSQL) store: every host of the fleet.
    if store.backend() == "postgres" {
        println!("\nFLEET (this host: {})", store.host());
        for h in &fleet {
            let seen = h.last_seen_ms.map_or("never".into(), rfc3339_ms);
            let down = if h.sources_down.is_empty() {
                "none".into()
            } else {
                h.sources_down.join(", ")
            };
            println!(
                "  {:<20} last seen {seen}  runs in flight {}  sources down: {down}",
                h.host, h.runs_in_flight
            );
        }
    }
    println!("\nINTENTS");
    if counts.is_empty() {
        println!("  none");
    }
    for (s, n) in counts {
        println!("  {:<15} {n}", s.as_str());
    }
    print!("\n{}", render(&orch));
    if !canaries.is_empty() {
        println!("\nCANARIES");
        for c in &canaries {
            let last = match &c.last_run {
                Some(r) => format!(
                    "last {} ({}, {}, {:.1}s, downtime {:.1}s)",
                    r.result.as_deref().unwrap_or("running"),
                    r.mode,
                    r.path.as_deref().unwrap_or("-"),
                    r.duration_s,
                    r.downtime_s
                ),
                None => "never run".into(),
            };
            let next = if c.next_allowed_in_s > 0.0 {
                format!(
                    "quiesced run allowed in {}",
                    human(Duration::from_secs_f64(c.next_allowed_in_s))
                )
            } else {
                "quiesced run allowed now".into()
            };
            println!("  {:<20} {last}  {next}", c.name);
        }
    }
    if !degraded.is_empty() {
        println!("\nDEGRADED: units disabled until released (`vigil units release NAME`)");
        for d in &degraded {
            println!(
                "  {:<20} {:<12} since {}  bundle {}",
                d["unit"].as_str().unwrap_or(""),
                d["state"].as_str().unwrap_or(""),
                d["since"].as_str().unwrap_or("-"),
                d["bundle"].as_str().unwrap_or("-")
            );
        }
    }
    Ok(0)
}

/// The config that matters: the running daemon's when one runs on this data dir (the CLI's
/// own choice, `./vigil.toml` or the built-in default, may differ), else the CLI's.
fn config_line(app: &App, daemon: Option<&DaemonRecord>) -> String {
    match daemon {
        Some(d) if d.running() => format!(
            "config: {} (the running daemon's: pid {}, since {}{})",
            d.config,
            d.pid,
            rfc3339_ms(d.started_at),
            d.api
                .as_deref()
                .map(|a| format!(", API on {a}"))
                .unwrap_or_default()
        ),
        Some(d) => format!(
            "config: {}\ndaemon: not running (the last one ran with {}, {})",
            app.config.origin,
            d.config,
            d.stopped_at
                .as_deref()
                .map(|t| format!("stopped {t}"))
                .unwrap_or_else(|| "ended without a clean stop".into())
        ),
        None => format!(
            "config: {}\ndaemon: none has run with this data dir",
            app.config.origin
        ),
    }
}

/// The orchestrator part of `vigil status`, as text.
fn render(s: &OrchestratorStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "PLAYBOOKS");
    if s.playbooks.is_empty() {
        let _ = writeln!(out, "  none configured");
    }
    for p in &s.playbooks {
        let cooldown = if p.cooldown_remaining_s > 0.0 {
            format!(
                "cooldown {}",
                human(Duration::from_secs_f64(p.cooldown_remaining_s.max(0.0)))
            )
        } else {
            "ready".into()
        };
        let _ = writeln!(
            out,
            "  {:<20} on {:<24} mode {:<12}{} {:<16} runs/24h {}  last {}",
            p.name,
            p.on,
            p.mode,
            if p.escalated { " (escalated)" } else { "" },
            cooldown,
            p.runs_24h,
            p.last_result.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(out, "\nESCALATION");
    if s.flags.is_empty() {
        let _ = writeln!(out, "  no symptoms in the window");
    }
    for f in &s.flags {
        match (f.armed, &f.reason, f.expires_in_s) {
            (true, Some(r), Some(left)) => {
                let _ = writeln!(
                    out,
                    "  {:<20} ARMED  {r}; expires in {}",
                    f.kind,
                    human(Duration::from_secs_f64(left.max(0.0)))
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "  {:<20} clear  {} symptoms in the window",
                    f.kind, f.symptom_count
                );
            }
        }
    }
    let _ = writeln!(out, "\nBUDGETS (tonight)");
    if s.budgets.is_empty() {
        let _ = writeln!(out, "  none configured");
    }
    for b in &s.budgets {
        let _ = writeln!(
            out,
            "  {:<20} {}  used {:.1}s  reserved {:.1}s  remaining {:.1}s of {:.0}s",
            b.name, b.day, b.used_s, b.reserved_s, b.remaining_s, b.limit_s
        );
    }
    let _ = writeln!(out, "\nLOCKS");
    if s.locks.is_empty() {
        let _ = writeln!(out, "  none held");
    }
    for l in &s.locks {
        let _ = writeln!(
            out,
            "  {:<20} held by {}  lease {:.0}s left",
            l.name, l.holder, l.expires_in_s
        );
    }
    out
}
