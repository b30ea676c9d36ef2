//! `vigil store migrate --to URL | --from URL`: the embedded store into PostgreSQL when a
//! team grows into a fleet, or back.

use super::{print_json, Exit};
use vigil::app::App;
use vigil::store::migrate::{self, Side};
use vigil::store::{PgStore, SqliteStore};

#[derive(clap::Subcommand)]
pub enum StoreCommand {
    /// Copy every table between the SQLite store under the data directory and PostgreSQL,
    /// verified by row counts and checksums. The destination must be empty; stop the daemon
    /// first.
    Migrate {
        /// Copy the SQLite store into the PostgreSQL store at URL.
        #[arg(
            long,
            value_name = "URL",
            conflicts_with = "from",
            required_unless_present = "from"
        )]
        to: Option<String>,
        /// Copy the PostgreSQL store at URL into the SQLite store (a new one) under the data
        /// directory.
        #[arg(long, value_name = "URL")]
        from: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(app: &App, cmd: StoreCommand) -> Exit {
    let StoreCommand::Migrate { to, from, json } = cmd;
    vigil::private_fs::create_dir(app.data_dir())?;
    let sqlite = SqliteStore::open_dir(app.data_dir())?;
    let (copied, what) = match (to, from) {
        (Some(url), _) => {
            let pg = PgStore::open(&url)?;
            let copied = migrate::copy(&Side::Sqlite(&sqlite), &Side::Postgres(&pg))?;
            (
                copied,
                format!("{} into {}", sqlite.path().display(), pg.url()),
            )
        }
        (None, Some(url)) => {
            let pg = PgStore::open(&url)?;
            let copied = migrate::copy(&Side::Postgres(&pg), &Side::Sqlite(&sqlite))?;
            (
                copied,
                format!("{} into {}", pg.url(), sqlite.path().display()),
            )
        }
        (None, None) => unreachable!("clap requires --to or --from"),
    };
    if json {
        return print_json(&copied);
    }
    println!("copied {what}, verified:");
    println!("{:<18} {:>8}  SHA-256", "TABLE", "ROWS");
    for t in &copied {
        println!("{:<18} {:>8}  {}", t.table, t.rows, t.checksum);
    }
    Ok(0)
}
