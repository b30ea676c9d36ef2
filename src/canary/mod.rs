//! The canary runner (issue 13): start a candidate instance of a service on a free port, check
//! its health, send it a probe workload, judge it (thresholds, and against production on the
//! same interleaved workload), promote or roll back, stop it, and put production back.
//!
//! Two paths. *Spare*: beside production, no downtime, no cooldown. *Quiesced*: production is
//! stopped for the candidate, only inside the maintenance window, within the downtime budget
//! and after the cooldown; production is always restored (also when the candidate fails or
//! hangs, and, when the daemon dies, by the next daemon start: the pending restore is in the
//! store before production is stopped) and must be healthy within the restore SLA, else the
//! run ends `restore_failed` with an `alert_restore_failed` intent. *Predictive* mode starts
//! nothing: it says which path and port it would take and whether the gates pass.
//!
//! - `config`: `[canaries.NAME]`; `ports`: the free-port search; `candidate`: its process;
//!   `health`, `probe`, `judge` (with `stats`): the judgement; `restore`: production's stop,
//!   start and health; `pending`: restores a dead daemon left; `status`: last runs and the
//!   next allowed run; `api`: `POST /api/canaries/{name}/run`, `GET /api/canaries`.
//! - A playbook step runs one (`orchestrator::actions::canary`); so does `vigil canary run`.

pub mod api;
pub mod candidate;
pub mod config;
pub mod health;
pub mod judge;
pub mod pending;
pub mod ports;
pub mod probe;
pub mod restore;
pub mod stats;
pub mod status;

pub use config::{CanaryConfig, PathChoice};
pub use pending::finish_pending;
pub use status::{list, next_allowed_in, CanaryStatus, LastRun};

use crate::app::App;
use crate::config::human;
use crate::orchestrator::gates::{window_tz, Denial};
use crate::orchestrator::window;
use crate::store::{
    BudgetRequest, CanaryEnd, CanaryStore, NewCanaryRun, RunStore, Scope, StoreError,
};
use crate::template::{Missing, Template};
use judge::Judgement;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `canary` starts things; `predictive` only says what it would do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Canary,
    Predictive,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Canary => "canary",
            Mode::Predictive => "predictive",
        }
    }
}

/// What a run is asked to do: the candidate's settings (over the configured defaults), a path
/// that overrides the configured one, and the mode.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default)]
    pub candidate: Map<String, Value>,
    pub path: Option<PathChoice>,
    #[serde(default)]
    pub mode: Mode,
    /// Run the promote command when the candidate passes (default); `false` only judges it
    /// (`vigil acceptance`), and a pass ends `passed`.
    #[serde(default = "yes")]
    pub promote: bool,
}

fn yes() -> bool {
    true
}

impl Default for Request {
    fn default() -> Self {
        Request {
            candidate: Map::new(),
            path: None,
            mode: Mode::Canary,
            promote: true,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Judged good; the promote command ran.
    Promoted,
    /// Judged bad (or never healthy): stopped, nothing applied.
    RolledBack,
    /// A gate said no (window, budget, cooldown, lock, ports): nothing started.
    Denied,
    /// Something went wrong that is not the candidate's judgement.
    Failed,
    /// Production did not come back healthy within the restore SLA.
    RestoreFailed,
    /// Predictive mode, gates pass: what would run is in `reason`.
    Predicted,
    /// Judged good and not promoted, as asked (`promote = false`).
    Passed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Promoted => "promoted",
            Outcome::RolledBack => "rolled_back",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
            Outcome::RestoreFailed => "restore_failed",
            Outcome::Predicted => "predicted",
            Outcome::Passed => "passed",
        }
    }
}

/// What `vigil canary run` prints and the API answers.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub canary: String,
    /// The stored run (none when it was denied before one was recorded).
    pub run: Option<i64>,
    pub result: Outcome,
    pub mode: Mode,
    /// `spare` or `quiesced`, once chosen.
    pub path: Option<&'static str>,
    pub port: Option<u16>,
    pub duration_s: f64,
    /// Production's downtime (quiesced path), charged to the budget.
    pub downtime_s: f64,
    pub reason: String,
    /// The candidate's settings the run used.
    pub candidate: Map<String, Value>,
    /// Seconds from the candidate's start to its first healthy answer.
    pub healthy_after_s: Option<f64>,
    /// Seconds from production's start to healthy again (quiesced path).
    pub restore_s: Option<f64>,
    pub judgement: Option<Judgement>,
}

/// A run that could not be made at all.
#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    #[error("no canary named {0:?} is configured{1}")]
    NoSuchCanary(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the canary run stopped unexpectedly: {0}; a pending restore is finished at the next start"
    )]
    Panicked(String),
}

/// The config of canary `name`, or an error that lists the configured ones.
pub fn config<'a>(app: &'a App, name: &str) -> Result<&'a CanaryConfig, CanaryError> {
    app.config.canaries.get(name).ok_or_else(|| {
        let known: Vec<&str> = app.config.canaries.keys().map(String::as_str).collect();
        let hint = match crate::config::load::closest(name, &known) {
            Some(k) => format!("; did you mean {k:?}?"),
            None if known.is_empty() => "; add a [canaries.NAME] section".into(),
            None => format!("; configured: {}", known.join(", ")),
        };
        CanaryError::NoSuchCanary(name.into(), hint)
    })
}

/// Runs canary `name`. The run goes on in a task of its own: a caller that goes away (an
/// API client, a cancelled step) never leaves production stopped.
pub async fn run(app: Arc<App>, name: &str, req: Request) -> Result<Report, CanaryError> {
    let cfg = config(&app, name)?.clone();
    let runner = Runner {
        http: crate::http::client(crate::http::DEFAULT_TIMEOUT),
        started: Instant::now(),
        started_ms: app.clock.now_ms(),
        name: name.to_string(),
        candidate: merged(&cfg.candidate, &req.candidate),
        app,
        cfg,
        req,
        run: None,
        lock: None,
        path: None,
        port: None,
        downtime: Duration::ZERO,
        healthy_after: None,
        restore: None,
        judgement: None,
    };
    tokio::spawn(runner.go())
        .await
        .map_err(|e| CanaryError::Panicked(e.to_string()))
}

fn merged(defaults: &Map<String, Value>, given: &Map<String, Value>) -> Map<String, Value> {
    let mut out = defaults.clone();
    out.extend(given.iter().map(|(k, v)| (k.clone(), v.clone())));
    out
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task panicked")
}

/// The lock every real run of a canary holds: one candidate of a canary at a time.
fn lock_name(canary: &str) -> String {
    format!("canary:{canary}")
}

/// One run in progress.
struct Runner {
    app: Arc<App>,
    http: reqwest::Client,
    name: String,
    cfg: CanaryConfig,
    req: Request,
    candidate: Map<String, Value>,
    started: Instant,
    started_ms: i64,
    run: Option<i64>,
    /// The lock's holder, while held.
    lock: Option<String>,
    path: Option<PathChoice>,
    port: Option<u16>,
    downtime: Duration,
    healthy_after: Option<Duration>,
    restore: Option<Duration>,
    judgement: Option<Judgement>,
}

/// The end a phase of the run came to: the outcome and why.
type End = (Outcome, String);

impl Runner {
    async fn audit(&self, event: &'static str, mut details: Value) {
        if let Value::Object(m) = &mut details {
            m.insert("canary".into(), self.name.clone().into());
            if let Some(r) = self.run {
                m.insert("canary_run".into(), r.into());
            }
        }
        let app = self.app.clone();
        blocking(move || crate::audit::record(&app, event, None, None, details)).await
    }

    /// `{port}` and `{candidate.KEY}` in `text`; a missing field is an error that says what
    /// to pass.
    fn fill(&self, text: &str, port: u16) -> Result<String, String> {
        Template::parse(text)
            .render(Missing::Error, |f| match f {
                "port" => Some(Cow::Owned(port.to_string())),
                _ => crate::template::field(&self.candidate, f.strip_prefix("candidate.")?),
            })
            .map_err(|e| match e.name.strip_prefix("candidate.") {
                Some(k) => format!(
                    "the candidate has no setting {k:?} ({{{}}} in the config); pass it, like --candidate '{{\"{k}\": ...}}', or set a default under candidate = {{ ... }}",
                    e.name
                ),
                None => e.to_string(),
            })
    }

    async fn go(mut self) -> Report {
        let mode = self.req.mode;
        self.audit(
            "canary_start",
            json!({"mode": mode.as_str(), "candidate": self.candidate,
                   "path_requested": self.req.path.unwrap_or(self.cfg.path).as_str()}),
        )
        .await;
        let (outcome, reason) = self.decide_and_run().await;
        self.finish(outcome, reason).await
    }

    /// Chooses the path and the port, checks the gates, then runs (or, predictive, says what
    /// it would run).
    async fn decide_and_run(&mut self) -> End {
        let path = match self.choose_path().await {
            Ok(p) => p,
            Err(e) => return (Outcome::Failed, e),
        };
        self.path = Some(path);
        let port = match ports::find_free(self.cfg.ports) {
            Ok(p) => p,
            Err(busy) => return (Outcome::Denied, busy),
        };
        self.port = Some(port);
        tracing::info!(canary = %self.name, port, "selected free canary port {port}");
        self.audit(
            "port_selected",
            json!({"port": port, "range": self.cfg.ports.to_string()}),
        )
        .await;
        let argv: Result<Vec<String>, String> = self
            .cfg
            .command
            .iter()
            .map(|a| self.fill(a, port))
            .collect();
        let argv = match argv {
            Ok(a) => a,
            Err(e) => return (Outcome::Failed, e),
        };
        let quiesced = path == PathChoice::Quiesced;
        if quiesced {
            if let Err(e) = restore::controllable(&self.app, &self.cfg.production) {
                return (Outcome::Failed, e);
            }
            if let Some(denied) = self.window_gate() {
                return (Outcome::Denied, denied);
            }
        }
        let predictive = self.req.mode == Mode::Predictive;
        let new = NewCanaryRun {
            canary: self.name.clone(),
            mode: self.req.mode.as_str().into(),
            path: Some(path.as_str().into()),
            port: Some(port),
            budget: if quiesced {
                self.budget_request()
            } else {
                None
            },
            cooldown_ms: if quiesced {
                self.cfg.cooldown.map(|c| c.as_ms())
            } else {
                None
            },
        };
        let app = self.app.clone();
        let now = app.clock.now_ms();
        let check = new.clone();
        // The cooldown and budget checked without writing (what predictive mode reports).
        let gates = blocking(move || app.store()?.begin_canary(&check, now, false)).await;
        match gates {
            Ok(Ok(_)) => {}
            Ok(Err(refusal)) => return (Outcome::Denied, Denial::from(refusal).reason),
            Err(e) => return (Outcome::Failed, e.to_string()),
        }
        if predictive {
            return (Outcome::Predicted, self.prediction(path, port, &argv));
        }
        let app = self.app.clone();
        let begun = blocking(move || app.store()?.begin_canary(&new, now, true)).await;
        match begun {
            Ok(Ok(id)) => self.run = Some(id),
            // The gates were checked a moment ago; another run got in between.
            Ok(Err(refusal)) => return (Outcome::Denied, Denial::from(refusal).reason),
            Err(e) => return (Outcome::Failed, e.to_string()),
        }
        if let Err(held) = self.take_lock().await {
            return (Outcome::Denied, held);
        }
        if quiesced {
            self.quiesced(argv, port).await
        } else {
            let end = self.candidate_phase(argv, port, true).await;
            self.judged(end).await
        }
    }

    async fn choose_path(&self) -> Result<PathChoice, String> {
        let choice = self.req.path.unwrap_or(self.cfg.path);
        let (path, why) = match (choice, &self.cfg.spare_when) {
            (PathChoice::Auto, Some(s)) => {
                let out = crate::exec::Cmd::new(s.run.clone(), s.timeout.0)
                    .run()
                    .await;
                match out {
                    Ok(o) if o.success() => (
                        PathChoice::Spare,
                        format!("{} exited 0: a spare resource is free", s.run[0]),
                    ),
                    Ok(o) => (
                        PathChoice::Quiesced,
                        format!("{} {}: no spare resource", s.run[0], o.describe()),
                    ),
                    Err(e) => (
                        PathChoice::Quiesced,
                        format!("spare_when could not run ({e}): taking the quiesced path"),
                    ),
                }
            }
            (PathChoice::Auto, None) => (PathChoice::Spare, "no spare_when: spare".into()),
            (p, _) if self.req.path.is_some() => (p, "asked for".into()),
            (p, _) => (p, "configured".into()),
        };
        let event = match path {
            PathChoice::Spare => "spare_path_selected",
            _ => "quiesced_path_selected",
        };
        self.audit(event, json!({"why": why})).await;
        Ok(path)
    }

    /// The maintenance window's no, in words, when outside it.
    fn window_gate(&self) -> Option<String> {
        let name = self.cfg.window.as_ref()?;
        let w = &self.app.config.orchestrator.windows[name];
        let tz = window_tz(&self.app, name);
        let now = self.app.clock.now();
        if window::contains(w.at, tz, now) {
            return None;
        }
        Some(format!(
            "Outside maintenance window {name} ({} {}): opens in {}",
            w.at,
            tz.iana_name().unwrap_or("local"),
            human(window::opens_in(w.at, tz, now).unsigned_abs())
        ))
    }

    fn budget_request(&self) -> Option<BudgetRequest> {
        let name = self.cfg.budget.as_ref()?;
        let now = self.app.clock.now();
        let day = match &self.cfg.window {
            Some(w) => window::window_day(
                self.app.config.orchestrator.windows[w].at,
                window_tz(&self.app, w),
                now,
            )
            .to_string(),
            None => now
                .to_zoned(self.app.config.timezone.0.clone())
                .date()
                .to_string(),
        };
        Some(BudgetRequest {
            name: name.clone(),
            day,
            limit_ms: self.app.config.orchestrator.budgets[name].seconds as i64 * 1000,
            want_ms: self.cfg.expected_downtime().as_millis() as i64,
            scope: self.app.config.orchestrator.budgets[name].scope,
        })
    }

    fn prediction(&self, path: PathChoice, port: u16, argv: &[String]) -> String {
        let what = match path {
            PathChoice::Quiesced => format!(
                "would stop production ({}), start the candidate on port {port} on the freed resources, judge it and restore production within {}",
                self.cfg.production.describe(),
                human(self.cfg.restore_sla(&self.app.config.orchestrator))
            ),
            _ => format!("would start the candidate beside production on port {port} (spare path, no downtime) and judge it"),
        };
        format!("{what}: {}; gates pass", argv.join(" "))
    }

    /// The canary's lock, for as long as a run can take (a dead daemon's lapses).
    async fn take_lock(&mut self) -> Result<(), String> {
        let holder = candidate::mark(&self.name, self.run.unwrap_or_default());
        let c = &self.cfg;
        let rounds = c.probe.requests.div_ceil(c.probe.concurrency);
        let probe = c.probe.timeout.0 * rounds * 2;
        let lease = c.health.timeout.0
            + probe
            + c.restore_sla(&self.app.config.orchestrator)
            + c.stop_timeout.0
            + Duration::from_secs(60);
        let (app, name, h) = (self.app.clone(), lock_name(&self.name), holder.clone());
        let now = app.clock.now_ms();
        let got = blocking(move || {
            app.store()?
                .acquire_lock(&name, Scope::Host, &h, lease.as_millis() as i64, now)
        })
        .await;
        match got {
            Ok(Ok(())) => {
                self.lock = Some(holder);
                Ok(())
            }
            Ok(Err(held)) => Err(format!(
                "Lock {:?} held by {} (another run of this canary) for {} more",
                held.name,
                held.holder,
                human(Duration::from_millis((held.expires_at - now).max(0) as u64))
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Starts the candidate, waits for it to be healthy, runs the probe (against production
    /// too when comparing and `compare_ok`), stops it. Sets `healthy_after` and `judgement`.
    async fn candidate_phase(
        &mut self,
        argv: Vec<String>,
        port: u16,
        compare_ok: bool,
    ) -> Result<(), String> {
        let mut env = std::collections::BTreeMap::new();
        for (k, v) in &self.cfg.env {
            env.insert(k.clone(), self.fill(v, port)?);
        }
        let log = self
            .app
            .dir("canaries")
            .join(&self.name)
            .join("candidate.log");
        let mark = candidate::mark(&self.name, self.run.unwrap_or_default());
        let mut cand =
            candidate::Candidate::start(&argv, &env, self.cfg.cwd.as_deref(), &log, &mark)?;
        let health_url = self.fill(&self.cfg.health.http, port)?;
        let healthy = health::wait_healthy(
            &self.http,
            &health_url,
            self.cfg.health.timeout.0,
            self.cfg.health.interval.0,
            Some(&mut cand),
        )
        .await;
        let result = match healthy {
            Ok(after) => {
                self.healthy_after = Some(after);
                self.audit(
                    "canary_healthy",
                    json!({"port": port, "pid": cand.pid(), "healthy_after_s": after.as_secs_f64()}),
                )
                .await;
                let url = self.fill(&self.cfg.probe.http, port)?;
                let production =
                    match (self.cfg.judge.compare, self.cfg.production.port, compare_ok) {
                        (Some(_), Some(p), true) => {
                            Some(self.cfg.probe.http.replace("{port}", &p.to_string()))
                        }
                        _ => None,
                    };
                let samples =
                    probe::run(&self.http, &self.cfg.probe, &url, production.as_deref()).await;
                let j = judge::judge(
                    &self.cfg.judge,
                    &samples.candidate,
                    production.as_ref().map(|_| samples.production.as_slice()),
                );
                self.audit("canary_judged", json!({"passed": j.passed, "judgement": j}))
                    .await;
                self.judgement = Some(j);
                Ok(())
            }
            Err(e) => Err(e),
        };
        let how = cand.stop(self.cfg.stop_timeout.0).await;
        self.audit("canary_stopped", json!({"port": port, "how": how}))
            .await;
        result
    }

    /// The outcome of a candidate phase: promoted (after the promote command) or rolled back.
    async fn judged(&mut self, phase: Result<(), String>) -> End {
        if let Err(e) = phase {
            return (Outcome::RolledBack, e);
        }
        let Some(j) = &self.judgement else {
            return (Outcome::Failed, "the candidate was not judged".into());
        };
        if !j.passed {
            return (Outcome::RolledBack, j.reasons.join("; "));
        }
        if !self.req.promote {
            return (
                Outcome::Passed,
                "the candidate passed its judgement; not promoted, as asked".into(),
            );
        }
        match self.promote().await {
            Ok(how) => (Outcome::Promoted, how),
            Err(e) => (
                Outcome::Failed,
                format!("the candidate passed, but promoting it failed: {e}"),
            ),
        }
    }

    async fn promote(&self) -> Result<String, String> {
        let Some(p) = &self.cfg.promote else {
            return Ok("the candidate passed its judgement".into());
        };
        let port = self.port.unwrap_or_default();
        let argv: Vec<String> = p
            .run
            .iter()
            .map(|a| self.fill(a, port))
            .collect::<Result<_, _>>()?;
        let out = crate::exec::Cmd::new(argv.clone(), p.timeout.0)
            .run()
            .await
            .map_err(|e| e.to_string())?;
        if out.success() {
            Ok(format!(
                "the candidate passed its judgement; promoted with {}",
                argv.join(" ")
            ))
        } else {
            Err(format!(
                "{} {}: {}",
                argv[0],
                out.describe(),
                out.stderr.trim()
            ))
        }
    }

    /// The quiesced path: production stopped, the candidate on the freed resources for at most
    /// the reserved downtime, production ALWAYS restored and checked healthy within the SLA.
    async fn quiesced(&mut self, argv: Vec<String>, port: u16) -> End {
        let (app, id) = (self.app.clone(), self.run.unwrap_or_default());
        let down_ms = app.clock.now_ms();
        // Before production stops: a daemon that dies from here on leaves a pending restore
        // that the next start finishes.
        let pending = blocking(move || app.store()?.canary_restore_pending(id, down_ms)).await;
        if let Err(e) = pending {
            return (
                Outcome::Failed,
                format!("cannot record the pending restore, so production was not stopped: {e}"),
            );
        }
        self.audit(
            "production_stopped",
            json!({"production": self.cfg.production.describe()}),
        )
        .await;
        let down = Instant::now();
        let stopped = restore::stop(&self.app, &self.cfg.production).await;
        let stop_failed = stopped.is_err();
        let phase = match stopped {
            Err(e) => Err(format!("cannot stop production: {e}")),
            Ok(()) => {
                // Bounded downtime: the candidate gets the downtime the run reserved, no more.
                let cap = self.cfg.expected_downtime();
                match tokio::time::timeout(cap, self.candidate_phase(argv, port, false)).await {
                    Ok(r) => r,
                    Err(_) => Err(format!(
                        "cut short after {}: production may stay down only the expected_downtime the run reserved",
                        human(cap)
                    )),
                }
            }
        };
        let sla = self.cfg.restore_sla(&self.app.config.orchestrator);
        let restored = restore::restore(&self.app, &self.http, &self.cfg, sla).await;
        self.downtime = down.elapsed();
        match restored {
            Ok(took) => {
                self.restore = Some(took);
                self.audit(
                    "production_restored",
                    json!({"downtime_s": self.downtime.as_secs_f64(), "restore_s": took.as_secs_f64()}),
                )
                .await;
            }
            Err(e) => {
                let why = match phase {
                    Ok(()) => e,
                    Err(p) => format!("{e}; before that: {p}"),
                };
                return (
                    Outcome::RestoreFailed,
                    format!("production was not restored: {why}"),
                );
            }
        }
        if stop_failed {
            return (Outcome::Failed, phase.err().unwrap_or_default());
        }
        self.judged(phase).await
    }

    /// Ends the run: the store (budget settled), metrics, the audit trail, the lock, and the
    /// alert when production was not restored.
    async fn finish(mut self, outcome: Outcome, reason: String) -> Report {
        let duration = self.started.elapsed();
        let path = self.path.map(|p| p.as_str());
        let report = Report {
            canary: self.name.clone(),
            run: self.run,
            result: outcome,
            mode: self.req.mode,
            path,
            port: self.port,
            duration_s: duration.as_secs_f64(),
            downtime_s: self.downtime.as_secs_f64(),
            reason: reason.clone(),
            candidate: std::mem::take(&mut self.candidate),
            healthy_after_s: self.healthy_after.map(|d| d.as_secs_f64()),
            restore_s: self.restore.map(|d| d.as_secs_f64()),
            judgement: self.judgement.take(),
        };
        let app = self.app.clone();
        let (name, mode) = (self.name.clone(), self.req.mode.as_str());
        let end = CanaryEnd {
            result: outcome.as_str().into(),
            reason: reason.clone(),
            duration_ms: duration.as_millis() as i64,
            downtime_ms: self.downtime.as_millis() as i64,
            report: serde_json::to_value(&report).unwrap_or(Value::Null),
            now_ms: app.clock.now_ms(),
        };
        let (run, lock) = (self.run, self.lock.take());
        let new = NewCanaryRun {
            canary: name.clone(),
            mode: mode.into(),
            path: path.map(String::from),
            port: self.port,
            budget: None,
            cooldown_ms: None,
        };
        let started_ms = self.started_ms;
        let stored = blocking(move || -> Result<(), StoreError> {
            let store = app.store()?;
            // A run denied or predicted before it was recorded is recorded now, for its last
            // result.
            let id = match run {
                Some(id) => id,
                None => store
                    .begin_canary(&new, started_ms, true)?
                    .unwrap_or_default(),
            };
            store.end_canary(id, &end)?;
            if let Some(holder) = lock {
                store.release_lock(&lock_name(&new.canary), &holder)?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = stored {
            tracing::error!(canary = %self.name, "cannot record the end of the canary run: {e}");
        }
        let m = &self.app.metrics;
        m.canary_runs_total
            .inc(&[&self.name, outcome.as_str(), mode]);
        m.canary_duration_seconds
            .observe(&[&self.name], duration.as_secs_f64());
        m.canary_downtime_seconds_total
            .add(&[&self.name], self.downtime.as_secs_f64());
        let (app, name, cfg) = (self.app.clone(), self.name.clone(), self.cfg.clone());
        let next = blocking(move || next_allowed_in(&app, &name, &cfg).unwrap_or(0.0)).await;
        m.canary_cooldown_seconds.set(&[&self.name], next);
        let event = match outcome {
            Outcome::Promoted => "promoted",
            Outcome::RolledBack => "rolled_back",
            _ => "canary_end",
        };
        tracing::info!(canary = %self.name, result = outcome.as_str(), "canary {}: {reason}", outcome.as_str());
        self.audit(
            event,
            json!({"result": outcome.as_str(), "mode": mode, "path": path, "port": self.port,
                   "reason": reason, "duration_s": report.duration_s, "downtime_s": report.downtime_s}),
        )
        .await;
        // The dashboard's canaries panel redraws on it.
        self.app.changes.publish(
            "canary",
            json!({"canary": self.name, "result": outcome.as_str(), "mode": mode, "next_allowed_in_s": next}),
        );
        if outcome == Outcome::RestoreFailed {
            let app = self.app.clone();
            let (name, run) = (self.name.clone(), self.run);
            blocking(move || restore::alert(&app, &name, run, &reason)).await;
        }
        report
    }
}
