//! `vigil init [DIR]`: a commented starter `vigil.toml` that passes `vigil check`: this host's
//! disk, memory and load, its journal when it has one, rules, and a playbook in predictive
//! mode (it looks, it changes nothing).

use super::Exit;
use std::path::{Path, PathBuf};
use vigil::config::{Config, DEFAULT_FILE};

#[derive(clap::Args)]
pub struct InitArgs {
    /// Directory to write vigil.toml into (default: the current one).
    #[arg(value_name = "DIR", default_value = ".")]
    dir: PathBuf,
    /// Overwrite an existing vigil.toml.
    #[arg(long)]
    force: bool,
}

/// The starter for this host: with the journal part when it has a systemd journal.
fn starter(has_journal: bool) -> String {
    let mut text = String::from(include_str!("starter.toml"));
    if has_journal {
        text.push_str(include_str!("starter_journal.toml"));
    }
    text
}

pub fn run(args: InitArgs) -> Exit {
    let path = args.dir.join(DEFAULT_FILE);
    if path.exists() && !args.force {
        eprintln!(
            "{} already exists; vigil init leaves it as it is. Check it with `vigil check --config {0}`, or pass --force to replace it with the starter",
            path.display()
        );
        return Ok(1);
    }
    let roots = vigil::sources::journald::SYSTEM_JOURNALS.map(PathBuf::from);
    let text = starter(vigil::sources::journald::has_journal_files(&roots));
    // Never write a starter that `vigil check` would refuse.
    Config::parse(&path.display().to_string(), &text)?;
    std::fs::create_dir_all(&args.dir)?;
    write(&path, &text)?;
    println!("wrote {}", path.display());
    println!(
        "next: vigil check --config {0} && vigil run --config {0}",
        path.display()
    );
    Ok(0)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
