//! The `vigil` command: parses arguments (clap), then dispatches to `cli/`, where each command
//! group calls into the library and prints.

mod cli;

use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use vigil::app::App;
use vigil::clock::SystemClock;
use vigil::config::ConfigError;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "A self-healing daemon: watch the host, turn signals into intents, act only through safety gates.",
    long_about = "vigil watches logs, the journal, directories, metrics, probes and the host; rules turn \
what it sees into durable intents; playbooks act on them only through gates (maintenance \
windows, downtime budgets, cooldowns, rate limits, locks, escalation); invariants check the \
state other systems keep. Config: --config FILE, else ./vigil.toml, else a built-in default.\n\n\
Exit codes: 0 success, 1 the command ran and found a problem, 2 usage error."
)]
struct Cli {
    /// Config file (default: ./vigil.toml if present, else the built-in default).
    #[arg(long, short, global = true, env = "VIGIL_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the store, inbox, audit trail and spool live (overrides `data_dir` in the config).
    #[arg(long, global = true, env = "VIGIL_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGINT/SIGTERM.
    Run(cli::run::RunArgs),
    /// Validate the config: exit 0 when valid, 1 with file:line:col messages when not.
    Check,
    /// Write a commented starter vigil.toml for this host (refuses to overwrite one).
    Init(cli::init::InitArgs),
    /// The daemon and its config, sources and intents at a glance.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Submit, list, show and verify intents.
    #[command(subcommand)]
    Intents(cli::intents::IntentsCommand),
    /// Record and list symptoms (repeated symptoms arm escalation flags).
    #[command(subcommand)]
    Symptoms(cli::symptoms::SymptomsCommand),
    /// Escalation flags: status and clear.
    #[command(subcommand)]
    Escalation(cli::symptoms::EscalationCommand),
    /// The audit trail of every decision and step.
    #[command(subcommand)]
    Audit(cli::audit::AuditCommand),
    /// Invariants over a snapshot of other systems' state: run a cycle, list, snapshot.
    #[command(subcommand)]
    Invariants(cli::invariants::InvariantsCommand),
    /// Supervised units: list, show, logs, start, stop, restart, release, snapshot.
    #[command(subcommand)]
    Units(cli::units::UnitsCommand),
    /// Canaries: run one (candidate on a free port, judged, promoted or rolled back), list.
    #[command(subcommand)]
    Canary(cli::canary::CanaryCommand),
    /// The day-1 acceptance checks: config, predictive run, budgets, locks, audit, a spare canary.
    Acceptance(cli::acceptance::AcceptanceArgs),
    /// Playbook locks held; `release NAME` frees one whose holder died (audited).
    Locks(cli::locks::LocksArgs),
    /// Playbook runs in flight on every host; `settle RUN` ends one whose host died (audited).
    Runs(cli::runs::RunsArgs),
    /// The store itself: `migrate --to URL` copies it into PostgreSQL (`--from URL` back).
    #[command(subcommand)]
    Store(cli::store::StoreCommand),
    /// Print a shell completion script: `vigil completions bash > /etc/bash_completion.d/vigil`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `vigil man | man -l -`.
    Man,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            match e.downcast_ref::<ConfigError>() {
                Some(ConfigError::Invalid(ds)) => ds.iter().for_each(|d| eprintln!("{d}")),
                _ => eprintln!("error: {e:#}"),
            }
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: Cli) -> cli::Exit {
    // These need no config: they work anywhere, even beside a broken vigil.toml.
    match cli.command {
        Command::Init(args) => return cli::init::run(args),
        // It reports an invalid config as its first failed check rather than erroring out.
        Command::Acceptance(args) => {
            return cli::acceptance::run(cli.config.as_deref(), cli.data_dir.as_deref(), args)
        }
        Command::Completions { shell } => {
            return cli::completions::completions(Cli::command(), shell)
        }
        Command::Man => return cli::completions::man(Cli::command()),
        _ => {}
    }
    let config = cli::load_config(cli.config.as_deref())?;
    let data_dir = config.resolve_data_dir(cli.data_dir.as_deref());
    let app = Arc::new(App::new(config, data_dir, Arc::new(SystemClock)));
    match cli.command {
        Command::Run(args) => cli::run::run(app, args),
        Command::Check => cli::check::run(&app),
        Command::Status { json } => cli::status::run(&app, json),
        Command::Intents(cmd) => cli::intents::run(&app, cmd),
        Command::Symptoms(cmd) => cli::symptoms::symptoms(&app, cmd),
        Command::Escalation(cmd) => cli::symptoms::escalation(&app, cmd),
        Command::Audit(cmd) => cli::audit::run(&app, cmd),
        Command::Invariants(cmd) => cli::invariants::run(&app, cmd),
        Command::Units(cmd) => cli::units::run(&app, cmd),
        Command::Canary(cmd) => cli::canary::run(app, cmd),
        Command::Store(cmd) => cli::store::run(&app, cmd),
        Command::Locks(args) => cli::locks::run(&app, args),
        Command::Runs(args) => cli::runs::run(&app, args),
        Command::Init(_) | Command::Completions { .. } | Command::Man | Command::Acceptance(_) => {
            unreachable!("dispatched above")
        }
    }
}
