//! `vigil locks [--json]` and `vigil locks release NAME`: the playbook locks held, and freeing
//! one whose holder will not (a host that died holding a fleet lock), audited.

use super::{print_json, Exit};
use anyhow::bail;
use vigil::app::App;
use vigil::clock::rfc3339_ms;
use vigil::store::RunStore;

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
    Release { name: String },
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
                println!(
                    "{:<20} held by {} since {}, lease until {}",
                    l.name,
                    l.holder,
                    rfc3339_ms(l.acquired_at),
                    rfc3339_ms(l.expires_at)
                );
            }
            Ok(0)
        }
        Some(LocksCommand::Release { name }) => {
            let Some(lock) = store.locks()?.into_iter().find(|l| l.name == name) else {
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
                serde_json::json!({"lock": lock.name, "holder": lock.holder,
                    "acquired_at": rfc3339_ms(lock.acquired_at), "by": "operator"}),
            );
            println!("released lock {} (held by {})", lock.name, lock.holder);
            Ok(0)
        }
    }
}
