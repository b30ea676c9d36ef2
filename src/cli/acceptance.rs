//! `vigil acceptance`: the seed's day-1 acceptance as a command. One line per check, `ok` or
//! `FAIL` with what was found; exit 0 only when every check passes:
//! the config is valid; predictive mode runs with no downtime; the budget ledger exists and
//! holds; locks are free; the audit trail is writable; a spare-path canary of a given test
//! service passes.

use super::Exit;
use std::path::Path;
use std::sync::Arc;
use vigil::app::App;
use vigil::canary::{Mode, Outcome, PathChoice, Request};
use vigil::clock::SystemClock;
use vigil::store::{AuditStore, RunStore};

#[derive(Debug, clap::Args)]
pub struct AcceptanceArgs {
    /// The canary whose spare-path run must pass (default: the first configured).
    #[arg(long, value_name = "NAME")]
    pub canary: Option<String>,
}

struct Checks {
    failed: usize,
    total: usize,
}

impl Checks {
    fn line(&mut self, name: &str, result: Result<String, String>) {
        self.total += 1;
        match result {
            Ok(what) => println!("ok    {name}: {what}"),
            Err(why) => {
                self.failed += 1;
                println!("FAIL  {name}: {why}");
            }
        }
    }
}

pub fn run(config: Option<&Path>, data_dir: Option<&Path>, args: AcceptanceArgs) -> Exit {
    let mut checks = Checks {
        failed: 0,
        total: 0,
    };
    let config = match super::load_config(config) {
        Ok(c) => {
            checks.line("config valid", Ok(c.origin.clone()));
            c
        }
        Err(e) => {
            checks.line("config valid", Err(format!("{e:#}").replace('\n', "; ")));
            println!("acceptance: the config must be valid before anything else can be checked");
            return Ok(1);
        }
    };
    let data_dir = config.resolve_data_dir(data_dir);
    let app = Arc::new(App::new(config, data_dir, Arc::new(SystemClock)));
    let rt = tokio::runtime::Runtime::new()?;
    // Acceptance judges; it never applies a candidate to production.
    let run = |name: &str, path: Option<PathChoice>, mode: Mode| {
        let req = Request {
            candidate: Default::default(),
            path,
            mode,
            promote: false,
        };
        rt.block_on(vigil::canary::run(app.clone(), name, req))
            .map_err(|e| e.to_string())
    };

    // Predictive mode: nothing starts, no downtime, whatever the gates say.
    let mut predicted = Vec::new();
    let mut bad = Vec::new();
    for name in app.config.canaries.keys() {
        match run(name, None, Mode::Predictive) {
            Ok(r)
                if r.downtime_s == 0.0
                    && matches!(r.result, Outcome::Predicted | Outcome::Denied) =>
            {
                predicted.push(format!("{name} {} ({})", r.result.as_str(), r.reason));
            }
            Ok(r) => bad.push(format!(
                "{name}: {} with {:.3}s downtime: {}",
                r.result.as_str(),
                r.downtime_s,
                r.reason
            )),
            Err(e) => bad.push(format!("{name}: {e}")),
        }
    }
    checks.line(
        "predictive mode, no downtime",
        if !bad.is_empty() {
            Err(bad.join("; "))
        } else if predicted.is_empty() {
            Ok("no canaries configured".into())
        } else {
            Ok(predicted.join("; "))
        },
    );

    checks.line(
        "budget ledger",
        (|| {
            let status = vigil::orchestrator::status::collect(&app).map_err(|e| e.to_string())?;
            let over: Vec<String> = status
                .budgets
                .iter()
                .filter(|b| b.used_s + b.reserved_s > b.limit_s)
                .map(|b| {
                    format!(
                        "{} is over: {:.1}s used and {:.1}s reserved of {:.1}s on {}",
                        b.name, b.used_s, b.reserved_s, b.limit_s, b.day
                    )
                })
                .collect();
            if !over.is_empty() {
                return Err(over.join("; "));
            }
            let held: Vec<String> = status
                .budgets
                .iter()
                .map(|b| {
                    format!(
                        "{} {:.1}s of {:.1}s left on {}",
                        b.name, b.remaining_s, b.limit_s, b.day
                    )
                })
                .collect();
            Ok(if held.is_empty() {
                "the ledger is in the store; no budgets configured".into()
            } else {
                held.join("; ")
            })
        })(),
    );

    checks.line(
        "locks free",
        (|| {
            let now = app.clock.now_ms();
            let held: Vec<String> = app
                .store()
                .and_then(|s| s.locks())
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|l| l.expires_at > now)
                .map(|l| {
                    format!(
                        "{} held by {} for {:.1}s more",
                        l.name,
                        l.holder,
                        (l.expires_at - now) as f64 / 1000.0
                    )
                })
                .collect();
            if held.is_empty() {
                Ok("no lock is held".into())
            } else {
                Err(held.join("; "))
            }
        })(),
    );

    checks.line(
        "audit trail writable",
        (|| {
            let audit = app.audit().map_err(|e| e.to_string())?;
            let entry = audit.entry(
                "acceptance_check",
                None,
                None,
                serde_json::json!({"check": "audit trail writable"}),
            );
            app.store()
                .and_then(|s| s.append_audit(&entry))
                .map_err(|e| format!("the store refused the entry: {e}"))?;
            audit.write_file(&entry);
            let day = app
                .clock
                .now()
                .to_zoned(app.config.timezone.0.clone())
                .strftime("%Y%m%d")
                .to_string();
            let file = app.audit_dir().join(format!("{day}.jsonl"));
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            if text
                .lines()
                .last()
                .is_some_and(|l| l.contains("acceptance_check"))
            {
                Ok(format!(
                    "an entry written to the store and {}",
                    file.display()
                ))
            } else {
                Err(format!(
                    "the entry did not reach {}; check the data directory is writable",
                    file.display()
                ))
            }
        })(),
    );

    let canary = args
        .canary
        .clone()
        .or_else(|| app.config.canaries.keys().next().cloned());
    checks.line(
        "spare-path canary",
        match canary {
            None => Err("no canary configured; add a [canaries.NAME] for a test service, or pass --canary NAME".into()),
            Some(name) => match run(&name, Some(PathChoice::Spare), Mode::Canary) {
                Ok(r) if r.result == Outcome::Passed => Ok(format!(
                    "{name} passed on port {} in {:.2}s: {}",
                    r.port.unwrap_or_default(),
                    r.duration_s,
                    r.reason
                )),
                Ok(r) => Err(format!("{name} {}: {}", r.result.as_str(), r.reason)),
                Err(e) => Err(e),
            },
        },
    );

    if checks.failed == 0 {
        println!("acceptance: all {} checks passed", checks.total);
        Ok(0)
    } else {
        println!(
            "acceptance: {} of {} checks failed",
            checks.failed, checks.total
        );
        Ok(1)
    }
}
