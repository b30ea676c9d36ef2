//! The command line's faces: one file per command group, each holding its clap arguments and
//! all of its printing (tables for people, `--json` for programs: JSON only on stdout). They
//! call library functions that return data and typed errors; `anyhow` lives only here, at the
//! edge, where an error becomes a message and an exit code.

pub mod acceptance;
pub mod audit;
pub mod canary;
pub mod check;
pub mod completions;
pub mod daemon_api;
pub mod init;
pub mod intents;
pub mod invariants;
pub mod locks;
mod memory;
pub mod run;
pub mod runs;
pub mod status;
pub mod store;
pub mod symptoms;
pub mod units;

use std::path::{Path, PathBuf};
use vigil::config::{Config, DEFAULT_FILE};

/// What a command returns: its exit code (0 success, 1 the command ran and found a problem).
pub type Exit = anyhow::Result<u8>;

/// The config: `--config FILE`, else `./vigil.toml` when present, else the built-in default.
pub fn load_config(flag: Option<&Path>) -> anyhow::Result<Config> {
    if let Some(path) = flag {
        return Ok(Config::load(path)?);
    }
    let local = PathBuf::from(DEFAULT_FILE);
    if local.exists() {
        return Ok(Config::load(&local)?);
    }
    Ok(Config::builtin())
}

/// Prints `value` as pretty JSON on stdout, and nothing else.
pub fn print_json(value: &impl serde::Serialize) -> Exit {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(0)
}
