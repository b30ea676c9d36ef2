//! `vigil invariants run|list|snapshot`.

use super::{print_json, Exit};
use std::path::PathBuf;
use vigil::app::App;
use vigil::invariants::CycleResult;

#[derive(Debug, clap::Subcommand)]
pub enum InvariantsCommand {
    /// Run one cycle now; exit 1 when there are violations.
    Run {
        /// Only these invariants (comma-separated ids).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Configured invariants and their state.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Collect every source and write the snapshot as a SQLite file (explore with sqlite3).
    Snapshot {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

pub fn run(app: &App, cmd: InvariantsCommand) -> Exit {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run_async(app, cmd))
}

async fn run_async(app: &App, cmd: InvariantsCommand) -> Exit {
    let harness = app.harness()?;
    match cmd {
        InvariantsCommand::Run { only, json } => {
            let only = (!only.is_empty()).then_some(only);
            let r = harness.run_cycle(only.as_deref()).await?;
            harness.flush_alerts().await;
            if json {
                print_json(&r)?;
            } else {
                print_cycle(&r);
            }
            Ok(u8::from(!r.violations.is_empty()))
        }
        InvariantsCommand::List { json } => {
            let list = harness.list()?;
            if json {
                return print_json(&list);
            }
            if list.is_empty() {
                println!("no invariants configured: add [invariants.ID] tables to the config");
            }
            for i in list {
                println!(
                    "{:<8} {:<8} tier {:<2} {:<8} {:<32} {}",
                    i.id,
                    i.state,
                    i.tier,
                    i.severity,
                    i.name,
                    i.since.unwrap_or_default()
                );
            }
            Ok(0)
        }
        InvariantsCommand::Snapshot { out } => {
            let r = harness.write_snapshot(&out).await?;
            for u in &r.sources_unavailable {
                eprintln!("source {} unavailable: {}", u.source, u.error);
            }
            println!("wrote {}", out.display());
            Ok(0)
        }
    }
}

fn print_cycle(r: &CycleResult) {
    println!(
        "{} checks run, {} skipped, {} violations ({} ms)",
        r.checks_run.len(),
        r.skipped.len(),
        r.violations.len(),
        r.cycle_duration_ms
    );
    for u in &r.sources_unavailable {
        println!("source {} unavailable: {}", u.source, u.error);
    }
    for s in &r.skipped {
        println!("skipped {}: {}", s.invariant_id, s.reason);
    }
    for v in &r.violations {
        println!(
            "{} [{} {}] {}: {}",
            v.invariant_id,
            v.severity,
            v.tier,
            v.name,
            v.signal_query
                .clone()
                .unwrap_or_else(|| serde_json::Value::Object(v.observed_state.clone()).to_string())
        );
    }
    for t in &r.transitions {
        println!("{} {} -> {} at {}", t.invariant_id, t.from, t.to, t.at);
    }
}
