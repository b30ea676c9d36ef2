//! `vigil locks [--json]` and `vigil locks release NAME [--scope HOST|fleet]`: the playbook
//! locks held (each host's and the fleet's), and freeing one whose holder will not (a host
//! that died holding a fleet lock), audited.

use super::{print_json, Exit};
use anyhow::bail;
use vigil::app::App;
use vigil::clock::rfc3339_ms;
use vigil::store::{RunStore, FLEET};

#[derive(clap::Args)]
pub struct LocksArgs {
    #[command(subcommand)]
    command: Option<LocksCommand>,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum LocksCommand {
    /// Free lock NAME whoever holds it (audited as `lock_released`); for a holder that died.
    /// The run that held it stays open, and its budget reservation counted, until its host
    /// returns and settles it.
    Release {
        name: String,
        /// Which NAME, when several hosts hold one of that name: a host, or `fleet`.
        #[arg(long)]
        scope: Option<String>,
    },
}

pub fn run(app: &App, args: LocksArgs) -> Exit {
    let store = app.store()?;
    match args.command {
        None => {
            let locks = store.locks()?;
            if args.json {
                return print_json(&locks);
            }
            if locks.is_empty() {
                println!("no locks held");
            }
            for l in locks {
                let scope = if l.scope == FLEET {
                    "fleet".to_string()
                } else {
                    format!("host {}", l.scope)
                };
                println!(
                    "{:<20} {:<14} held by {} since {}, lease until {}",
                    l.name,
                    scope,
                    l.holder,
                    rfc3339_ms(l.acquired_at),
                    rfc3339_ms(l.expires_at)
                );
            }
            Ok(0)
        }
        Some(LocksCommand::Release { name, scope }) => {
            let key = scope.map(|s| if s == "fleet" { FLEET.to_string() } else { s });
            let mut found: Vec<_> = store
                .locks()?
                .into_iter()
                .filter(|l| l.name == name && key.as_ref().is_none_or(|k| &l.scope == k))
                .collect();
            if found.len() > 1 {
                let scopes: Vec<_> = found
                    .iter()
                    .map(|l| if l.scope == FLEET { "fleet" } else { &l.scope })
                    .collect();
                bail!(
                    "{} locks named {name:?} are held ({}); say which with --scope",
                    found.len(),
                    scopes.join(", ")
                );
            }
            let Some(lock) = found.pop() else {
                bail!("no lock {name:?} is held (`vigil locks` lists them)");
            };
            if !store.release_lock(&lock.name, &lock.holder)? {
                bail!("lock {name:?} changed hands meanwhile; look again with `vigil locks`");
            }
            vigil::audit::record(
                app,
                "lock_released",
                None,
                None,
                serde_json::json!({"lock": lock.name, "scope": lock.scope, "holder": lock.holder,
                    "acquired_at": rfc3339_ms(lock.acquired_at), "by": "operator"}),
            );
            println!("released lock {} (held by {})", lock.name, lock.holder);
            Ok(0)
        }
    }
}
