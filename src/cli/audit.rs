//! `vigil audit tail|count`: the audit trail from the store.

use super::{print_json, Exit};
use vigil::app::App;
use vigil::clock::rfc3339_ms;

#[derive(Debug, clap::Subcommand)]
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

/// Said instead of an empty listing, so "nothing" is not mistaken for "nothing printed yet".
const EMPTY: &str =
    "the audit trail is empty: nothing has been decided or done with this data dir yet";

pub fn run(app: &App, cmd: AuditCommand) -> Exit {
    match cmd {
        AuditCommand::Tail { n, json } => {
            let entries = vigil::audit::tail(app, n)?;
            if json {
                return print_json(&entries);
            }
            if entries.is_empty() {
                println!("{EMPTY}");
            }
            // Which host wrote each entry, when the trail is a fleet's.
            let fleet = entries.iter().any(|e| e.host != entries[0].host);
            for e in &entries {
                let host = if fleet {
                    format!("host={:<12} ", e.host)
                } else {
                    String::new()
                };
                println!(
                    "{}  {host}{:<20} intent={:<6} playbook={:<16} {}",
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
            let counts = vigil::audit::counts(app)?;
            if json {
                let m: serde_json::Map<String, serde_json::Value> =
                    counts.into_iter().map(|(k, n)| (k, n.into())).collect();
                return print_json(&m);
            }
            if counts.is_empty() {
                println!("{EMPTY}");
            }
            for (event, n) in counts {
                println!("{n:>7} {event}");
            }
            Ok(0)
        }
    }
}
