//! The `vigil` command: parses arguments, then calls into the library.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use vigil::app::App;
use vigil::clock::{rfc3339_ms, SystemClock};
use vigil::config::{Config, ConfigError, DEFAULT_FILE};
use vigil::intent::{inbox, IntentStatus, NewIntent};
use vigil::store::{IntentQuery, IntentStore, SourceStore};

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
    Run(RunArgs),
    /// Validate the config: exit 0 when valid, 1 with file:line:col messages when not.
    Check,
    /// Sources and intents at a glance.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Submit, list, show and verify intents.
    #[command(subcommand)]
    Intents(IntentsCommand),
    /// Record and list symptoms (repeated symptoms arm escalation flags).
    #[command(subcommand)]
    Symptoms(vigil::orchestrator::cli::SymptomsCommand),
    /// Escalation flags: status and clear.
    #[command(subcommand)]
    Escalation(vigil::orchestrator::cli::EscalationCommand),
    /// The audit trail of every decision and step.
    #[command(subcommand)]
    Audit(vigil::orchestrator::cli::AuditCommand),
    /// Invariants over a snapshot of other systems' state: run a cycle, list, snapshot.
    #[command(subcommand)]
    Invariants(vigil::invariants::cli::InvariantsCommand),
    /// Supervised units: list, show, release from quarantine.
    #[command(subcommand)]
    Units(vigil::supervisor::cli::UnitsCommand),
}

#[derive(Args)]
struct RunArgs {
    /// Write every raw event to DATA_DIR/events/ for debugging (pruned after 7 days).
    #[arg(long, env = "VIGIL_SPOOL_EVENTS")]
    spool_events: bool,
    /// Evaluate everything, print what would run, act on nothing.
    #[arg(long)]
    dry_run: bool,
    /// Log filter, e.g. `info`, `debug`, `vigil=debug` (or set RUST_LOG).
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(Subcommand)]
enum IntentsCommand {
    /// Propose an intent through the inbox (works with or without a running daemon).
    Submit {
        /// Intent type, e.g. alert_gpu_oom.
        intent_type: String,
        /// 0-4 informational, 5-7 actionable, 8-10 critical.
        #[arg(long, short, value_parser = clap::value_parser!(u8).range(0..=10))]
        priority: u8,
        #[arg(long, short)]
        reason: String,
        /// A JSON object of extra data, e.g. '{"alloc_gib": 2.5}'.
        #[arg(long)]
        data: Option<String>,
        /// Same type and dedup key within an hour is one intent (default: a hash of data).
        #[arg(long)]
        dedup_key: Option<String>,
    },
    /// List intents, newest first.
    List {
        #[arg(long)]
        json: bool,
        /// Only this status: pending, running, done, denied, failed, restore_failed, expired, unmatched.
        #[arg(long)]
        status: Option<IntentStatus>,
        /// Only this intent type.
        #[arg(long = "type")]
        intent_type: Option<String>,
        #[arg(long, short = 'n', default_value_t = 50)]
        limit: usize,
    },
    /// Show one intent as JSON.
    Show { id: i64 },
    /// Verify an intent file's checksum and fields: exit 0 when valid, 1 when not.
    Verify { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
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

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    if let Some(path) = &cli.config {
        return Ok(Config::load(path)?);
    }
    let local = PathBuf::from(DEFAULT_FILE);
    if local.exists() {
        return Ok(Config::load(&local)?);
    }
    Ok(Config::builtin())
}

fn real_main(cli: Cli) -> anyhow::Result<u8> {
    let config = load_config(&cli)?;
    let data_dir = config.resolve_data_dir(cli.data_dir.as_deref());
    let app = Arc::new(App::new(config, data_dir, Arc::new(SystemClock)));
    match cli.command {
        Command::Run(args) => run(app, args),
        Command::Check => {
            for w in app.config.warnings(app.clock.now()) {
                eprintln!("{w}");
            }
            let c = &app.config;
            println!(
                "{}: valid ({} sources, {} rules, {} playbooks, {} invariants)",
                c.origin,
                c.sources.len(),
                c.rules.len(),
                c.orchestrator.playbooks.len(),
                c.invariants.invariants.len()
            );
            Ok(0)
        }
        Command::Status { json } => status(&app, json),
        Command::Intents(cmd) => intents(&app, cmd),
        Command::Symptoms(cmd) => vigil::orchestrator::cli::symptoms(&app, cmd),
        Command::Escalation(cmd) => vigil::orchestrator::cli::escalation(&app, cmd),
        Command::Audit(cmd) => vigil::orchestrator::cli::audit(&app, cmd),
        Command::Invariants(cmd) => {
            let rt = tokio::runtime::Runtime::new()?;
            let code = rt.block_on(vigil::invariants::cli::run(&app, cmd))?;
            Ok(u8::try_from(code).unwrap_or(1))
        }
        Command::Units(cmd) => vigil::supervisor::cli::run(&app, cmd),
    }
}

fn run(app: Arc<App>, args: RunArgs) -> anyhow::Result<u8> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&args.log_level))
        .context("invalid --log-level; try `info` or `vigil=debug`")?;
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("stopping");
            let _ = stop_tx.send(true);
        });
        let opts = vigil::daemon::Options {
            spool_events: args.spool_events,
            dry_run: args.dry_run,
        };
        let summary = vigil::daemon::run(app, opts, stop_rx).await?;
        eprintln!("vigil stopped: {summary}");
        Ok(0)
    })
}

fn status(app: &App, json: bool) -> anyhow::Result<u8> {
    let store = app.store()?;
    let sources = store.source_states()?;
    let counts = store.intent_counts()?;
    let orch = vigil::orchestrator::status::collect(app)?;
    if json {
        let by_state: serde_json::Map<String, serde_json::Value> = counts
            .iter()
            .map(|(s, n)| (s.to_string(), (*n).into()))
            .collect();
        let out = serde_json::json!({"sources": sources, "intents": by_state,
            "playbooks": orch.playbooks, "flags": orch.flags, "budgets": orch.budgets, "locks": orch.locks});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    println!(
        "config: {}\ndata dir: {}",
        app.config.origin,
        app.data_dir.display()
    );
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
    println!("\nINTENTS");
    if counts.is_empty() {
        println!("  none");
    }
    for (s, n) in counts {
        println!("  {:<15} {n}", s.as_str());
    }
    print!("\n{}", vigil::orchestrator::status::render(&orch));
    Ok(0)
}

fn intents(app: &App, cmd: IntentsCommand) -> anyhow::Result<u8> {
    match cmd {
        IntentsCommand::Submit {
            intent_type,
            priority,
            reason,
            data,
            dedup_key,
        } => {
            let data = match data {
                None => Default::default(),
                Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(serde_json::Value::Object(m)) => m,
                    Ok(_) => bail!("--data must be a JSON object, like '{{\"alloc_gib\": 2.5}}'"),
                    Err(e) => bail!("--data is not valid JSON ({e}); write a JSON object, like '{{\"alloc_gib\": 2.5}}'"),
                },
            };
            let mut body = serde_json::json!({
                "intent_type": intent_type, "priority": priority, "reason": reason, "data": data,
            });
            if let Some(k) = dedup_key {
                body["dedup_key"] = k.into();
            }
            let body = body.as_object().expect("an object");
            let intent = NewIntent::from_body(body, "cli").map_err(|e| anyhow::anyhow!(e))?;
            let path = inbox::write(&app.inbox_dir(), &intent, app.clock.now_ms())?;
            println!("{}", path.display());
            Ok(0)
        }
        IntentsCommand::List {
            json,
            status,
            intent_type,
            limit,
        } => {
            let list = app.store()?.intents(&IntentQuery {
                status,
                intent_type,
                limit: Some(limit),
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(0);
            }
            if list.is_empty() {
                println!("no intents");
            } else {
                println!(
                    "{:>6}  {:<25} {:<32} {:>3}  {:<14} REASON",
                    "ID", "CREATED", "TYPE", "PRI", "STATUS"
                );
            }
            for i in list {
                println!(
                    "{:>6}  {:<25} {:<32} {:>3}  {:<14} {}",
                    i.id,
                    rfc3339_ms(i.created_at),
                    i.intent_type,
                    i.priority,
                    i.status.as_str(),
                    i.reason
                );
            }
            Ok(0)
        }
        IntentsCommand::Show { id } => match app.store()?.intent(id)? {
            Some(i) => {
                println!("{}", serde_json::to_string_pretty(&i)?);
                Ok(0)
            }
            None => bail!("no intent with id {id}; `vigil intents list` shows the ids"),
        },
        IntentsCommand::Verify { file } => {
            match inbox::read(&file, app.config.intents.max_file_size) {
                Ok(i) => {
                    println!(
                        "{}: valid ({} priority {})",
                        file.display(),
                        i.intent_type,
                        i.priority
                    );
                    Ok(0)
                }
                Err(e) => {
                    eprintln!("{}: invalid: {e}", file.display());
                    Ok(1)
                }
            }
        }
    }
}
