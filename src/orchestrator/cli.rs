//! `vigil symptoms`, `vigil escalation` and `vigil audit`: the CLI over the same store the
//! daemon uses, with or without a daemon running.

use crate::app::App;
use crate::clock::rfc3339_ms;
use crate::escalation;
use crate::store::EscalationStore;
use anyhow::bail;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
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

#[derive(Debug, Subcommand)]
pub enum EscalationCommand {
    /// Flags and symptom counts by kind.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Clear a flag by hand (its playbooks go back to their default mode).
    Clear { kind: String },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// The last entries of the audit trail, oldest first.
    Tail {
        #[arg(short = 'n', default_value_t = 20)]
        n: usize,
        #[arg(long)]
        json: bool,
    },
    /// How many entries of each event the trail holds.
    Count {
        #[arg(long)]
        json: bool,
    },
}

fn parse_meta(items: &[String]) -> anyhow::Result<crate::event::Data> {
    let mut data = crate::event::Data::new();
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

pub fn symptoms(app: &App, cmd: SymptomsCommand) -> anyhow::Result<u8> {
    match cmd {
        SymptomsCommand::Record { kind, meta } => {
            crate::intent::validate_type(&kind)
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
                println!("{}", serde_json::to_string_pretty(&out)?);
                return Ok(0);
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

pub fn escalation(app: &App, cmd: EscalationCommand) -> anyhow::Result<u8> {
    match cmd {
        EscalationCommand::Status { json } => {
            let flags = escalation::status(app)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&flags)?);
                return Ok(0);
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

pub fn audit(app: &App, cmd: AuditCommand) -> anyhow::Result<u8> {
    match cmd {
        AuditCommand::Tail { n, json } => {
            let entries = crate::audit::tail(app, n)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
                return Ok(0);
            }
            for e in entries {
                println!(
                    "{}  {:<20} intent={:<6} playbook={:<16} {}",
                    rfc3339_ms(e.ts),
                    e.event,
                    e.intent.map_or("-".into(), |i| i.to_string()),
                    e.playbook.as_deref().unwrap_or("-"),
                    e.details
                );
            }
            Ok(0)
        }
        AuditCommand::Count { json } => {
            let counts = crate::audit::counts(app)?;
            if json {
                let m: serde_json::Map<String, serde_json::Value> =
                    counts.into_iter().map(|(k, n)| (k, n.into())).collect();
                println!("{}", serde_json::to_string_pretty(&m)?);
                return Ok(0);
            }
            for (event, n) in counts {
                println!("{n:>7} {event}");
            }
            Ok(0)
        }
    }
}
