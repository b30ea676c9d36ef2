//! `vigil symptoms record|list` and `vigil escalation status|clear`: the symptom ledger and
//! the flags it arms, on the same store the daemon uses, with or without a daemon running.

use super::{print_json, Exit};
use anyhow::bail;
use vigil::app::App;
use vigil::clock::rfc3339_ms;
use vigil::escalation;
use vigil::event::Data;
use vigil::store::EscalationStore;

#[derive(Debug, clap::Subcommand)]
pub enum SymptomsCommand {
    /// Record a symptom (may arm its escalation flag): `vigil symptoms record vllm_oom deficit_mb=1155`.
    Record {
        kind: String,
        /// Extra facts as key=value (numbers and true/false are kept as such).
        #[arg(value_name = "KEY=VALUE")]
        meta: Vec<String>,
    },
    /// Symptoms in the escalation window, newest first.
    List {
        #[arg(long)]
        json: bool,
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum EscalationCommand {
    /// Flags and symptom counts by kind.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Clear a flag by hand (its playbooks go back to their default mode).
    Clear { kind: String },
}

/// `key=value` arguments as data: numbers and booleans stay typed, anything else is a string.
fn parse_meta(items: &[String]) -> anyhow::Result<Data> {
    let mut data = Data::new();
    for item in items {
        let Some((k, v)) = item.split_once('=') else {
            bail!("{item:?} is not key=value; write e.g. deficit_mb=1155");
        };
        let value = match serde_json::from_str::<serde_json::Value>(v) {
            Ok(n @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => n,
            _ => serde_json::Value::String(v.to_string()),
        };
        data.insert(k.to_string(), value);
    }
    Ok(data)
}

pub fn symptoms(app: &App, cmd: SymptomsCommand) -> Exit {
    match cmd {
        SymptomsCommand::Record { kind, meta } => {
            vigil::intent::validate_type(&kind)
                .map_err(|e| anyhow::anyhow!("symptom kind: {e}"))?;
            let rec = escalation::record(app, &kind, parse_meta(&meta)?)?;
            let p = escalation::policy(app);
            println!(
                "recorded {kind}: {} in the window (threshold {})",
                rec.count, p.threshold
            );
            if let Some(f) = rec.armed {
                println!(
                    "escalation armed: {}; expires {}",
                    f.reason,
                    rfc3339_ms(f.expires_at)
                );
            }
            Ok(0)
        }
        SymptomsCommand::List { json, kind } => {
            let since = app.clock.now_ms() - escalation::policy(app).window_ms;
            let list = app.store()?.symptoms(kind.as_deref(), since, 10_000)?;
            if json {
                let out: Vec<_> = list
                    .iter()
                    .map(|s| serde_json::json!({"id": s.id, "kind": s.kind, "ts": rfc3339_ms(s.ts), "meta": s.meta}))
                    .collect();
                return print_json(&out);
            }
            if list.is_empty() {
                println!("no symptoms in the window");
            }
            for s in list {
                println!(
                    "{}  {:<20} {}",
                    rfc3339_ms(s.ts),
                    s.kind,
                    serde_json::Value::Object(s.meta)
                );
            }
            Ok(0)
        }
    }
}

pub fn escalation(app: &App, cmd: EscalationCommand) -> Exit {
    match cmd {
        EscalationCommand::Status { json } => {
            let flags = escalation::status(app)?;
            if json {
                return print_json(&flags);
            }
            if flags.is_empty() {
                println!("no flags and no symptoms in the window");
            }
            for f in flags {
                match (f.armed, f.reason) {
                    (true, Some(r)) => println!(
                        "{:<20} ARMED  {r}; expires {}",
                        f.kind,
                        f.expires_at.unwrap_or_default()
                    ),
                    _ => println!(
                        "{:<20} clear  {} symptoms in the window",
                        f.kind, f.symptom_count
                    ),
                }
            }
            Ok(0)
        }
        EscalationCommand::Clear { kind } => {
            match escalation::clear(app, &kind, "cleared by hand (vigil escalation clear)")? {
                Some(_) => println!("cleared {kind}"),
                None => {
                    println!("{kind} was not armed; symptoms so far no longer count towards it")
                }
            }
            Ok(0)
        }
    }
}
