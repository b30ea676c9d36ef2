//! `vigil runs [--all] [--json]` and `vigil runs settle RUN`: the playbook runs in flight on
//! every host, and ending one whose host will not (it died, and will not come back), so its
//! budget reservation stops counting and its lock frees. Audited as `run_settled`.

use super::{print_json, Exit};
use anyhow::{bail, Context};
use vigil::app::App;
use vigil::clock::rfc3339_ms;
use vigil::intent::IntentStatus;
use vigil::store::{RunEnd, RunStore, Settled};

#[derive(clap::Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    command: Option<RunsCommand>,
    /// Every run of the last 24 h, not only those in flight.
    #[arg(long)]
    all: bool,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum RunsCommand {
    /// End run RUN as failed for a host that will not return to settle it: its lock is freed,
    /// its budget reservation released, and the downtime charged. A host that does return
    /// finds the run ended and does nothing more with it. Production is not touched: check
    /// that host's services yourself.
    Settle {
        run: i64,
        /// Downtime to charge to the budget (default: the run's whole reservation, since
        /// nobody saw how long production was down), e.g. "12s".
        #[arg(long, value_parser = vigil::config::parse_duration)]
        downtime: Option<std::time::Duration>,
    },
}

pub fn run(app: &App, args: RunsArgs) -> Exit {
    let store = app.store()?;
    let now = app.clock.now_ms();
    match args.command {
        None => {
            // In flight however old (a dead host's), or everything of the last day.
            let since = if args.all {
                now - 24 * 3_600_000
            } else {
                i64::MIN
            };
            let runs = store.runs(None, since, !args.all)?;
            if args.json {
                return print_json(&runs);
            }
            if runs.is_empty() {
                println!("no runs in flight (`vigil runs --all` lists the last 24 h)");
            }
            for r in runs {
                let state = match (&r.result, r.downtime_since) {
                    (Some(result), _) => result.clone(),
                    (None, Some(since)) => format!("production down since {}", rfc3339_ms(since)),
                    (None, None) => format!("at step {}", r.step),
                };
                let budget = r.budget.as_ref().map_or(String::new(), |b| {
                    format!(", {} s of {b} reserved", r.reserved_ms as f64 / 1000.0)
                });
                let lock = r
                    .lock_name
                    .as_ref()
                    .map_or(String::new(), |l| format!(", lock {l}"));
                println!(
                    "run {:<6} {:<16} host {:<12} intent {:<6} started {}: {state}{budget}{lock}",
                    r.id,
                    r.playbook,
                    r.host,
                    r.intent_id,
                    rfc3339_ms(r.started_at)
                );
            }
            Ok(0)
        }
        Some(RunsCommand::Settle { run, downtime }) => {
            let Some(record) = store.run(run)? else {
                bail!("no run {run} (`vigil runs --all` lists them)");
            };
            if record.ended_at.is_some() {
                bail!(
                    "run {run} has ended already ({})",
                    record.result.unwrap_or_default()
                );
            }
            let downtime_ms = downtime.map_or(record.reserved_ms, |d| d.as_millis() as i64);
            let note = format!(
                "settled by an operator: host {} did not settle it; {} s charged",
                record.host,
                downtime_ms as f64 / 1000.0
            );
            let end = RunEnd {
                run_id: run,
                downtime_ms,
                intent_id: record.intent_id,
                status: IntentStatus::Failed,
                note: &note,
                now_ms: now,
                fence: None,
            };
            let audit = app.audit()?;
            let entry = audit.entry(
                "run_settled",
                Some(record.intent_id),
                Some(&record.playbook),
                serde_json::json!({"run": run, "host": record.host, "holder": record.holder,
                    "downtime_ms": downtime_ms, "reserved_ms": record.reserved_ms,
                    "lock": record.lock_name, "by": "operator"}),
            );
            match store
                .settle_run(&end, &entry)
                .context("cannot settle the run")?
            {
                Settled::Ended => {}
                _ => bail!("run {run} ended meanwhile; look again with `vigil runs --all`"),
            }
            audit.write_file(&entry);
            println!("settled run {run} of host {}: {note}", record.host);
            Ok(0)
        }
    }
}
