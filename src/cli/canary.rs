//! `vigil canary run NAME` and `vigil canary list`. A run goes through the running daemon's
//! API when there is one (the daemon owns the supervised production unit, the gates and the
//! locks), else it runs in this process.

use super::{print_json, Exit};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use vigil::app::App;
use vigil::canary::{Mode, PathChoice, Request};

#[derive(Debug, clap::Subcommand)]
pub enum CanaryCommand {
    /// Run a canary: start the candidate on a free port, judge it, promote or roll back, and
    /// restore production. Exit 0 when promoted (or, predictive, when the gates pass).
    Run(RunArgs),
    /// Canaries: the last run of each and the time until a quiesced run is allowed again.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The [canaries.NAME] to run.
    pub name: String,
    /// Candidate settings as a JSON object, laid over the configured `candidate` defaults:
    /// '{"gpu_memory_utilization": 0.85}'.
    #[arg(long, value_name = "JSON")]
    pub candidate: Option<String>,
    /// Take this path instead of the configured one.
    #[arg(long, value_enum)]
    pub path: Option<PathArg>,
    /// `predictive` starts nothing: it says what it would do and whether the gates pass.
    #[arg(long, value_enum, default_value = "canary")]
    pub mode: ModeArg,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PathArg {
    Spare,
    Quiesced,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    Canary,
    Predictive,
}

pub fn run(app: Arc<App>, cmd: CanaryCommand) -> Exit {
    match cmd {
        CanaryCommand::Run(args) => run_one(app, args),
        CanaryCommand::List { json } => list(&app, json),
    }
}

fn run_one(app: Arc<App>, args: RunArgs) -> Exit {
    let candidate = match &args.candidate {
        None => serde_json::Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => bail!("--candidate must be a JSON object, like '{{\"gpu_memory_utilization\": 0.85}}'"),
            Err(e) => bail!("--candidate is not JSON ({e}); give an object, like '{{\"gpu_memory_utilization\": 0.85}}'"),
        },
    };
    let path = args.path.map(|p| match p {
        PathArg::Spare => PathChoice::Spare,
        PathArg::Quiesced => PathChoice::Quiesced,
    });
    let mode = match args.mode {
        ModeArg::Canary => Mode::Canary,
        ModeArg::Predictive => Mode::Predictive,
    };
    let cfg = vigil::canary::config(&app, &args.name)?.clone();
    let report: Value = match super::daemon_api::running(&app)? {
        Some(api) => {
            // The daemon answers once the run has ended: allow for all of it.
            let o = &app.config.orchestrator;
            let rounds = cfg.probe.requests.div_ceil(cfg.probe.concurrency);
            let timeout = cfg.health.timeout.0
                + cfg.probe.timeout.0 * rounds * 2
                + cfg.restore_sla(o)
                + cfg.stop_timeout.0
                + Duration::from_secs(120);
            let body = json!({"candidate": candidate, "path": path, "mode": mode});
            api.post(&format!("/api/canaries/{}/run", args.name), &body, timeout)?
        }
        None => {
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let req = Request {
                candidate,
                path,
                mode,
                promote: true,
            };
            let report = rt.block_on(vigil::canary::run(app.clone(), &args.name, req))?;
            serde_json::to_value(report)?
        }
    };
    let ok = matches!(report["result"].as_str(), Some("promoted" | "predicted"));
    if args.json {
        print_json(&report)?;
    } else {
        print_report(&report);
    }
    Ok(if ok { 0 } else { 1 })
}

fn num(v: &Value, key: &str) -> String {
    v[key].as_f64().map_or("-".into(), |x| format!("{x:.3}"))
}

fn summary(s: &Value) -> String {
    format!(
        "{} requests, {} errors ({:.1}%), median {} ms, p95 {} ms",
        s["requests"],
        s["errors"],
        s["error_rate"].as_f64().unwrap_or_default() * 100.0,
        num(s, "median_ms"),
        num(s, "p95_ms")
    )
}

fn print_report(r: &Value) {
    let text = |k: &str| r[k].as_str().map_or("-".to_string(), String::from);
    println!("result      {}", text("result"));
    println!("mode        {}", text("mode"));
    println!("path        {}", text("path"));
    println!(
        "port        {}",
        r["port"].as_u64().map_or("-".into(), |p| p.to_string())
    );
    println!("duration_s  {}", num(r, "duration_s"));
    println!("downtime_s  {}", num(r, "downtime_s"));
    println!("reason      {}", text("reason"));
    let j = &r["judgement"];
    if j.is_object() {
        println!(
            "judgement   {}",
            if j["passed"] == true {
                "passed"
            } else {
                "failed"
            }
        );
        println!("  candidate   {}", summary(&j["candidate"]));
        if j["production"].is_object() {
            println!("  production  {}", summary(&j["production"]));
            let c = &j["comparison"];
            println!(
                "  comparison  slowdown {:+.1}%, effect {} (0.5: none), p = {:.3e} latency (Mann-Whitney U), {:.3e} errors (z-test), alpha {}",
                c["slowdown"].as_f64().unwrap_or_default() * 100.0,
                c["effect"],
                c["p_value"].as_f64().unwrap_or(1.0),
                c["error_p_value"].as_f64().unwrap_or(1.0),
                c["alpha"]
            );
        }
    }
}

fn list(app: &App, json: bool) -> Exit {
    let list = vigil::canary::list(app)?;
    if json {
        return print_json(&list);
    }
    if list.is_empty() {
        println!("no canaries configured");
        return Ok(0);
    }
    println!(
        "{:<16} {:<15} {:<9} {:>6} {:>10} {:>10} {:>12}",
        "NAME", "LAST RESULT", "PATH", "PORT", "DURATION", "DOWNTIME", "NEXT ALLOWED"
    );
    for c in list {
        let (result, path, port, dur, down) = match &c.last_run {
            Some(r) => (
                r.result.clone().unwrap_or_else(|| "running".into()),
                r.path.clone().unwrap_or_default(),
                r.port.map_or("-".into(), |p| p.to_string()),
                format!("{:.1}s", r.duration_s),
                format!("{:.1}s", r.downtime_s),
            ),
            None => (
                "never run".into(),
                String::new(),
                "-".into(),
                "-".into(),
                "-".into(),
            ),
        };
        println!(
            "{:<16} {:<15} {:<9} {:>6} {:>10} {:>10} {:>12}",
            c.name,
            result,
            path,
            port,
            dur,
            down,
            vigil::config::human(Duration::from_secs_f64(c.next_allowed_in_s))
        );
    }
    Ok(0)
}
