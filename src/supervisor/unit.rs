//! One unit's task: start, watch (a crash is noticed at once: `Child::wait` is woken by
//! SIGCHLD, an adopted process's pidfd by the kernel), restart with backoff, and escalate when
//! the restarts run out. Every state change is kept in the store and every step is an event.

use super::config::UnitConfig;
use super::output::{open_fifo_writer, Ring};
use super::policy::{Decision, RestartPolicy};
use super::probe::{self, Health, Ready};
use super::process::{self, start_time};
use super::quarantine::{self, Failure};
use super::state::{ExitStatus, UnitState};
use super::{learned, snapshot};
use crate::app::App;
use crate::event::{Data, Event};
use crate::intent::NewIntent;
use crate::store::{UnitRecord, UnitStore};
use serde_json::{json, Value};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Event source of the supervisor's own events.
pub const SOURCE: &str = "supervisor";

/// What the supervisor (or the CLI through it) asks of a unit.
#[derive(Debug)]
pub enum Control {
    /// Stop every process of the unit; answered once none is left.
    Stop(oneshot::Sender<()>),
    /// Start a stopped unit (a quarantined one must be released first).
    Start,
    /// Lift a quarantine, forget the restart history and start the unit.
    Release(oneshot::Sender<()>),
}

/// A unit's state as others see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub state: UnitState,
    pub pid: Option<i32>,
    pub since_ms: i64,
    /// Restarts since the unit was configured or released.
    pub total_restarts: u64,
    /// Starts of a process by this daemon (adoption does not count).
    pub starts: u64,
    /// The bundle of the last quarantine.
    pub bundle: Option<PathBuf>,
    /// Since when (ms) the live process has been healthy: ready, and its last health check
    /// passed. `None` while starting, failing checks, or down.
    pub healthy_since_ms: Option<i64>,
}

/// A second chance after the restarts ran out, tried once: the unit runs again after a learned
/// playbook's steps (with its fingerprint) or from a restored golden snapshot. A failure
/// before the unit has run `backoff.reset` ends it in quarantine.
#[derive(Debug, Clone, PartialEq)]
enum Attempt {
    Learned(String),
    Restored,
}

/// The process a unit's task watches: its own child, or one a previous daemon left running.
enum Leader {
    Child(tokio::process::Child),
    Adopted(i32),
}

impl Leader {
    /// Until the process exits (cancel-safe).
    async fn wait(&mut self, unit: &str) -> ExitStatus {
        match self {
            Leader::Child(c) => match c.wait().await {
                Ok(s) => ExitStatus::from_std(s),
                Err(e) => {
                    tracing::error!(unit, "cannot wait for the unit's process: {e}");
                    ExitStatus::unknown()
                }
            },
            Leader::Adopted(pid) => {
                if let Err(e) = process::wait_exit(*pid).await {
                    tracing::warn!(unit, pid, "cannot watch adopted process: {e}");
                }
                ExitStatus::unknown()
            }
        }
    }

    /// After a stop: reaps our child (an adopted process is reaped by its own parent).
    async fn reap(&mut self) {
        if let Leader::Child(c) = self {
            let _ = c.wait().await;
        }
    }
}

type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

enum Next {
    Start { restarted: bool },
    Wait(Duration),
    Idle,
    Exit,
}

pub(super) struct UnitTask {
    pub name: String,
    pub cfg: UnitConfig,
    pub app: Arc<App>,
    pub events: mpsc::Sender<Event>,
    pub ring: Ring,
    pub status: watch::Sender<Status>,
    pub control: mpsc::Receiver<Control>,
    pub flush: mpsc::Sender<oneshot::Sender<()>>,
    pub deps: Vec<(String, watch::Receiver<Status>)>,
    pub rec: UnitRecord,
    pub policy: RestartPolicy,
    /// The control of the unit's `replica`, started when a tier-1 unit is exhausted.
    pub replica: Option<mpsc::Sender<Control>>,
    /// A unit that is another's replica waits (cold standby) until a failover starts it.
    pub standby: bool,
    ready: Option<Ready>,
    health: Option<Health>,
    /// A `unit_unhealthy` was sent; `unit_recovered` follows at the next passing probe.
    unhealthy: bool,
    attempt: Option<Attempt>,
    /// The next published state comes with one more start.
    count_start: bool,
    /// Where the output of the current (or last) run starts in the ring.
    run_mark: u64,
    /// The unit's cgroup v2 directory, where one is delegated to vigil.
    pub cgroup: Option<PathBuf>,
    /// An open descriptor of the output FIFO, held while the task runs.
    fifo: Option<std::fs::File>,
}

impl UnitTask {
    /// The task of one unit, its probes built from its config.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        cfg: UnitConfig,
        app: Arc<App>,
        events: mpsc::Sender<Event>,
        ring: Ring,
        status: watch::Sender<Status>,
        control: mpsc::Receiver<Control>,
        flush: mpsc::Sender<oneshot::Sender<()>>,
        deps: Vec<(String, watch::Receiver<Status>)>,
        rec: UnitRecord,
        policy: RestartPolicy,
        replica: Option<mpsc::Sender<Control>>,
        standby: bool,
    ) -> Self {
        let ready = cfg.ready.as_ref().and_then(Ready::new);
        let health = cfg.health.as_ref().and_then(Health::new);
        Self {
            name,
            cfg,
            app,
            events,
            ring,
            status,
            control,
            flush,
            deps,
            rec,
            policy,
            replica,
            standby,
            ready,
            health,
            unhealthy: false,
            attempt: None,
            count_start: false,
            run_mark: 0,
            cgroup: None,
            fifo: None,
        }
    }
}

fn disabled(state: UnitState) -> bool {
    matches!(state, UnitState::Quarantined | UnitState::FailedOver)
}

impl UnitTask {
    pub async fn run(mut self) {
        let mut next = self.recover().await;
        loop {
            next = match next {
                Next::Start { restarted } => self.start(restarted).await,
                Next::Wait(d) => self.backoff(d).await,
                Next::Idle => self.idle().await,
                Next::Exit => return,
            }
        }
    }

    fn now(&self) -> i64 {
        self.app.clock.now_ms()
    }

    /// What the store says the last daemon left: a quarantine stays (and keeps its since), a
    /// live leader with the same start time is adopted (or stopped, with `adopt = false`).
    async fn recover(&mut self) -> Next {
        self.policy = self.policy.clone().with_history(&self.rec.restarts);
        let stored = UnitState::parse(&self.rec.state);
        match stored {
            Some(UnitState::Quarantined) | Some(UnitState::Exhausted) => {
                let keep = stored == Some(UnitState::Quarantined);
                self.set_state(UnitState::Quarantined, None, keep).await;
                return Next::Idle;
            }
            Some(UnitState::FailedOver) => {
                self.set_state(UnitState::FailedOver, None, true).await;
                return Next::Idle;
            }
            // A standby that never served waits for a failover.
            Some(UnitState::Stopped) | None if self.standby && self.rec.pid.is_none() => {
                return Next::Idle;
            }
            _ => {}
        }
        let (Some(pid), Some(ticks)) = (self.rec.pid, self.rec.start_ticks) else {
            return Next::Start { restarted: false };
        };
        let marker = self.rec.marker.clone().unwrap_or_default();
        if start_time(pid) != Some(ticks) {
            // The leader is gone; anything of its instance still alive is stopped.
            self.stop_processes(None, marker).await;
            return Next::Start { restarted: false };
        }
        if !self.cfg.adopt {
            tracing::info!(unit = %self.name, pid, "adopt = false: stopping what the last daemon left running");
            self.stop_processes(Some(pid), marker).await;
            return Next::Start { restarted: false };
        }
        tracing::info!(unit = %self.name, pid, "adopted: left running by the previous daemon");
        let started = self.now();
        self.supervise(Leader::Adopted(pid), pid, started, marker)
            .await
    }

    async fn wait_deps(&mut self) {
        for (dep, rx) in &mut self.deps {
            let ok = |s: &Status| matches!(s.state, UnitState::Running | UnitState::Adopted);
            if !ok(&rx.borrow()) {
                tracing::info!(unit = %self.name, "waiting for {dep} (after)");
            }
            let _ = rx.wait_for(ok).await;
        }
    }

    async fn start(&mut self, restarted: bool) -> Next {
        self.wait_deps().await;
        let started = self.now();
        let marker = format!("{}:{}:{}", self.name, started, std::process::id());
        let fifo = self.app.dir("units").join(&self.name).join("output.fifo");
        self.run_mark = self.ring.mark();
        let mut hold = None;
        let spawned = open_fifo_writer(&fifo).and_then(|out| {
            let err = out.try_clone()?;
            hold = Some(out.try_clone()?);
            let mut cmd = process::command(
                &self.cfg.command,
                &self.cfg.env,
                self.cfg.cwd.as_deref(),
                &marker,
                self.cgroup.as_deref(),
            );
            cmd.stdout(out).stderr(err);
            cmd.spawn()
        });
        // The task keeps the FIFO open too: a unit that writes and exits before the output
        // reader has opened the FIFO (at a daemon's start) would otherwise take its lines with
        // it, since a pipe's buffer goes with the last open descriptor.
        if hold.is_some() {
            self.fifo = hold;
        }
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let line = format!("vigil: cannot start {:?}: {e}", self.cfg.command[0]);
                tracing::error!(unit = %self.name, "{line}");
                self.ring.push(line);
                let exit = ExitStatus {
                    code: Some(-1),
                    signal: None,
                    note: None,
                };
                return self.exited(0, exit, started).await;
            }
        };
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        self.rec.marker = Some(marker.clone());
        self.rec.start_ticks = start_time(pid);
        // Counted with the state the start publishes, so whoever sees the new count sees the
        // new state too.
        self.count_start = true;
        self.emit("unit_started", json!({ "pid": pid }));
        if restarted {
            let in_window = self.policy.restarts_in_window(self.now());
            self.emit(
                "unit_restarted",
                json!({ "pid": pid, "restarts": in_window, "total_restarts": self.rec.total_restarts }),
            );
        }
        self.supervise(Leader::Child(child), pid, started, marker)
            .await
    }

    fn health_probe(&self) -> Option<ProbeFuture> {
        self.health
            .as_ref()
            .map(|h| Box::pin(probe::after(h.interval, h.check.clone())) as ProbeFuture)
    }

    fn set_healthy(&self, healthy: bool) {
        let now = self.now();
        self.status.send_modify(|s| {
            s.healthy_since_ms = match (healthy, s.healthy_since_ms) {
                (true, Some(t)) => Some(t),
                (true, None) => Some(now),
                (false, _) => None,
            }
        });
    }

    /// Watches a live process: its exit (noticed at once), controls, the `ready` probe until
    /// it passes, then the `health` probe; after `backoff.reset` of health a second chance
    /// counts as a success.
    async fn supervise(
        &mut self,
        mut leader: Leader,
        pid: i32,
        started: i64,
        marker: String,
    ) -> Next {
        let adopted = matches!(leader, Leader::Adopted(_));
        let ready = if adopted { None } else { self.ready.clone() };
        let mut waiting = ready.is_some();
        let deadline =
            tokio::time::Instant::now() + ready.as_ref().map_or(Duration::ZERO, |r| r.timeout);
        let mut fails = 0u32;
        let mut stable: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut probe: Option<ProbeFuture> = match &ready {
            Some(r) => {
                // Events first: whoever sees the state change also finds them already sent.
                self.set(UnitState::Starting, Some(pid)).await;
                Some(Box::pin(probe::after(Duration::ZERO, r.check.clone())))
            }
            None => {
                let state = if adopted {
                    UnitState::Adopted
                } else {
                    UnitState::Running
                };
                self.set(state, Some(pid)).await;
                self.set_healthy(true);
                stable = Some(Box::pin(tokio::time::sleep(self.cfg.backoff.reset.0)));
                self.health_probe()
            }
        };
        let name = self.name.clone();
        loop {
            tokio::select! {
                exit = leader.wait(&name) => {
                    // The rest of the instance (daemonized children) goes with its leader.
                    self.stop_processes(None, marker).await;
                    return self.exited(pid, exit, started).await;
                }
                c = self.control.recv() => match c {
                    Some(Control::Stop(reply)) => {
                        self.stop_processes(Some(pid), marker).await;
                        leader.reap().await;
                        self.flush().await;
                        self.set_healthy(false);
                        self.set(UnitState::Stopped, None).await;
                        let _ = reply.send(());
                        return Next::Idle;
                    }
                    Some(Control::Release(reply)) => { let _ = reply.send(()); }
                    Some(Control::Start) => {}
                    None => return Next::Exit,
                },
                _ = tokio::time::sleep_until(deadline), if waiting => {
                    let why = format!("not ready within {}", crate::config::human(ready.as_ref().map_or(Duration::ZERO, |r| r.timeout)));
                    self.emit("unit_unhealthy", json!({ "pid": pid, "reason": why }));
                    self.unhealthy = true;
                    return self.end_unhealthy(leader, pid, started, marker, why).await;
                }
                r = async { probe.as_mut().expect("guarded by is_some").await }, if probe.is_some() => {
                    // Every arm sets the next probe (or ends the process).
                    match (waiting, r) {
                        (true, Ok(())) => {
                            waiting = false;
                            let after_ms = self.now() - started;
                            self.emit("unit_ready", json!({ "pid": pid, "after_ms": after_ms }));
                            self.recovered(pid);
                            self.set(UnitState::Running, Some(pid)).await;
                            self.set_healthy(true);
                            stable = Some(Box::pin(tokio::time::sleep(self.cfg.backoff.reset.0)));
                            probe = self.health_probe();
                        }
                        (true, Err(why)) => {
                            tracing::debug!(unit = %self.name, "not ready yet: {why}");
                            let r = ready.as_ref().expect("waiting only with a ready probe");
                            probe = Some(Box::pin(probe::after(r.interval, r.check.clone())));
                        }
                        (false, Ok(())) => {
                            fails = 0;
                            self.recovered(pid);
                            self.set_healthy(true);
                            probe = self.health_probe();
                        }
                        (false, Err(why)) => {
                            fails += 1;
                            self.set_healthy(false);
                            let limit = self.health.as_ref().map_or(1, |h| h.failures);
                            tracing::warn!(unit = %self.name, "health check failed ({fails} of {limit}): {why}");
                            if fails >= limit {
                                self.emit("unit_unhealthy", json!({ "pid": pid, "reason": why, "failures": fails }));
                                self.unhealthy = true;
                                let why = format!("unhealthy: {why}");
                                return self.end_unhealthy(leader, pid, started, marker, why).await;
                            }
                            probe = self.health_probe();
                        }
                    }
                }
                _ = async { stable.as_mut().expect("guarded by is_some").await }, if stable.is_some() => {
                    stable = None;
                    self.stable().await;
                }
            }
        }
    }

    /// A probe passed after `unit_unhealthy`.
    fn recovered(&mut self, pid: i32) {
        if self.unhealthy {
            self.unhealthy = false;
            self.emit("unit_recovered", json!({ "pid": pid }));
        }
    }

    /// The unit has run healthy for `backoff.reset`: a second chance worked.
    async fn stable(&mut self) {
        match self.attempt.take() {
            Some(Attempt::Learned(fp)) => {
                let (dir, unit, now) = (self.app.dir("playbooks"), self.name.clone(), self.now());
                tracing::info!(unit = %self.name, fingerprint = %fp, "the learned playbook worked");
                let _ = tokio::task::spawn_blocking(move || {
                    learned::count(&dir, &unit, &fp, Some(true), now)
                })
                .await;
            }
            Some(Attempt::Restored) => {
                tracing::info!(unit = %self.name, "running again from the golden snapshot");
            }
            None => {}
        }
    }

    /// Ends a live process that is not healthy; its end counts as a failure.
    async fn end_unhealthy(
        &mut self,
        mut leader: Leader,
        pid: i32,
        started: i64,
        marker: String,
        why: String,
    ) -> Next {
        tracing::warn!(unit = %self.name, pid, "{why}: restarting it");
        self.stop_processes(Some(pid), marker).await;
        leader.reap().await;
        let exit = ExitStatus {
            code: None,
            signal: None,
            note: Some(why),
        };
        self.exited(pid, exit, started).await
    }

    async fn exited(&mut self, pid: i32, exit: ExitStatus, started_ms: i64) -> Next {
        self.flush().await;
        self.set_healthy(false);
        let now = self.now();
        let ran = Duration::from_millis(now.saturating_sub(started_ms).max(0) as u64);
        self.rec.last_exit = Some(exit.describe());
        self.rec.last_error = self.last_error();
        self.emit(
            "unit_exited",
            json!({ "pid": pid, "code": exit.code, "signal": exit.signal, "exit": exit.describe(), "ran_ms": ran.as_millis() as u64 }),
        );
        // A second chance that fails before it proved itself ends in quarantine at once.
        if self.attempt.is_some() && exit.failed() {
            return self.escalate(&exit).await;
        }
        match self.policy.on_exit(now, ran, exit.failed()) {
            Decision::Restart(d) => {
                self.rec.total_restarts += 1;
                self.rec.restarts = self.policy.history(now);
                self.status
                    .send_modify(|s| s.total_restarts = self.rec.total_restarts);
                // An immediate restart is stored once, with its new pid: one store write
                // less between a crash and the new process.
                if !d.is_zero() {
                    self.set(UnitState::Backoff, None).await;
                }
                Next::Wait(d)
            }
            Decision::Stay => {
                self.set(UnitState::Stopped, None).await;
                Next::Idle
            }
            Decision::Exhausted => self.escalate(&exit).await,
        }
    }

    fn last_error(&self) -> Option<String> {
        self.ring
            .last(20)
            .into_iter()
            .rev()
            .find(|l| !l.trim().is_empty())
    }

    /// Submits intents (blocking store writes, off the runtime's threads).
    async fn submit(&self, intents: Vec<NewIntent>) {
        let app = self.app.clone();
        let unit = self.name.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for i in &intents {
                if let Err(e) = crate::intent::queue::submit(&app, i) {
                    tracing::error!(unit = %unit, "cannot submit intent {}: {e}", i.intent_type);
                }
            }
        })
        .await;
    }

    /// Restarts ran out: stop, bundle, escalate; then a learned playbook for this failure, a
    /// replica or a golden snapshot (tier 1), else quarantine.
    async fn escalate(&mut self, exit: &ExitStatus) -> Next {
        let now = self.now();
        let restarts = self.policy.history(now);
        let attempt = self.attempt.take();
        self.set(UnitState::Exhausted, None).await;
        let lines = self.ring.last(quarantine::BUNDLE_LINES);
        let (fingerprint, failure) = learned::fingerprint(&self.ring.since(self.run_mark), exit);
        self.emit(
            "unit_exhausted",
            json!({ "restarts": restarts.len(), "last_error": self.rec.last_error, "exit": exit.describe(), "tier": self.cfg.tier, "fingerprint": fingerprint }),
        );
        let dir = self.app.dir("quarantine");
        let (name, cfg, exit2, hist, fp, text) = (
            self.name.clone(),
            self.cfg.clone(),
            exit.clone(),
            restarts.clone(),
            fingerprint.clone(),
            failure.clone(),
        );
        let bundle = tokio::task::spawn_blocking(move || {
            quarantine::write_bundle(
                &dir,
                &Failure {
                    unit: &name,
                    config: &cfg,
                    exit: &exit2,
                    lines: &lines,
                    restarts: &hist,
                    now_ms: now,
                    fingerprint: &fp,
                    failure: &text,
                },
            )
        })
        .await
        .expect("the bundle writer does not panic");
        let bundle = match bundle {
            Ok(dir) => Some(dir),
            Err(e) => {
                tracing::error!(unit = %self.name, "cannot write the diagnostics bundle: {e}");
                None
            }
        };
        let bundle_text = bundle.as_ref().map(|b| b.display().to_string());
        let mut data = Data::new();
        data.insert("unit".into(), self.name.clone().into());
        data.insert("restarts".into(), restarts.len().into());
        data.insert("tier".into(), self.cfg.tier.into());
        data.insert("exit".into(), exit.describe().into());
        data.insert(
            "last_error".into(),
            self.rec
                .last_error
                .clone()
                .map_or(Value::Null, Value::String),
        );
        data.insert(
            "bundle".into(),
            bundle_text.clone().map_or(Value::Null, Value::String),
        );
        data.insert("fingerprint".into(), fingerprint.clone().into());
        let key = format!("{}:{now}", self.name);
        self.submit(vec![NewIntent {
            intent_type: "unit_exhausted".into(),
            priority: 10,
            reason: format!(
                "unit {} exhausted {} restarts within {} ({}; last error: {})",
                self.name,
                restarts.len(),
                self.cfg.restart_window,
                exit.describe(),
                self.rec.last_error.as_deref().unwrap_or("none")
            ),
            data: data.clone(),
            dedup_key: Some(key.clone()),
            origin: "supervisor".into(),
        }])
        .await;
        self.rec.bundle = bundle_text.clone();
        self.status.send_modify(|s| s.bundle = bundle.clone());

        // A second chance, once per failure: what fixed this failure before, else (tier 1
        // without a replica) the last golden snapshot.
        match &attempt {
            Some(Attempt::Learned(fp)) => {
                tracing::warn!(unit = %self.name, fingerprint = %fp, "the learned playbook did not keep the unit up");
            }
            Some(Attempt::Restored) => {
                tracing::warn!(unit = %self.name, "the unit failed again from its golden snapshot");
            }
            None => {
                if let Some(next) = self.try_learned(&fingerprint, &failure, data.clone()).await {
                    return next;
                }
                if self.cfg.tier == 1 && self.cfg.replica.is_none() {
                    if let Some(next) = self.try_restore().await {
                        return next;
                    }
                }
            }
        }

        // Tier 1 keeps serving through its replica; every tier is disabled until released.
        let failover = match (&self.replica, &self.cfg.replica) {
            (Some(control), Some(name)) if self.cfg.tier == 1 => {
                let _ = control.send(Control::Start).await;
                tracing::warn!(unit = %self.name, replica = %name, "failed over to the replica");
                Some(name.clone())
            }
            _ => None,
        };
        self.submit(vec![NewIntent {
            intent_type: "repair_unit".into(),
            priority: 8,
            reason: format!(
                "repair unit {}: diagnostics in {}",
                self.name,
                bundle_text.as_deref().unwrap_or("(no bundle)")
            ),
            data,
            dedup_key: Some(key),
            origin: "supervisor".into(),
        }])
        .await;
        // Emitted first: whoever sees the state change also finds the event already sent.
        self.emit(
            "unit_quarantined",
            json!({ "bundle": bundle_text, "failed_over_to": failover }),
        );
        let state = if failover.is_some() {
            UnitState::FailedOver
        } else {
            UnitState::Quarantined
        };
        self.set(state, None).await;
        tracing::error!(unit = %self.name, bundle = ?bundle_text, "quarantined: restarts exhausted; `vigil units release {}` after a fix", self.name);
        Next::Idle
    }

    /// Forgets the restart history for a second chance (the total stays).
    fn second_chance(&mut self, attempt: Attempt) -> Next {
        self.policy.reset();
        self.rec.restarts.clear();
        self.attempt = Some(attempt);
        Next::Start { restarted: true }
    }

    /// Runs the learned playbook for this failure, if one was recorded.
    async fn try_learned(&mut self, fingerprint: &str, failure: &str, data: Data) -> Option<Next> {
        let (dir, unit, fp) = (
            self.app.dir("playbooks"),
            self.name.clone(),
            fingerprint.to_string(),
        );
        let found = tokio::task::spawn_blocking(move || learned::find(&dir, &unit, &fp))
            .await
            .ok()
            .flatten()?;
        tracing::warn!(unit = %self.name, fingerprint, fixed = %found.fixed, "this failure was fixed before: running its learned playbook");
        let (dir, unit, fp, now) = (
            self.app.dir("playbooks"),
            self.name.clone(),
            fingerprint.to_string(),
            self.now(),
        );
        let _ =
            tokio::task::spawn_blocking(move || learned::count(&dir, &unit, &fp, None, now)).await;
        let result = learned::run(&self.app, &found, data).await;
        self.emit(
            "unit_playbook",
            json!({ "fingerprint": fingerprint, "failure": failure, "fixed": found.fixed, "ok": result.is_ok(), "error": result.as_ref().err() }),
        );
        match result {
            Ok(_) => Some(self.second_chance(Attempt::Learned(fingerprint.to_string()))),
            Err(e) => {
                tracing::error!(unit = %self.name, "the learned playbook failed: {e}");
                None
            }
        }
    }

    /// Puts the last golden snapshot back as `state_dir`, if there is one.
    async fn try_restore(&mut self) -> Option<Next> {
        let state_dir = self.cfg.state_dir.clone()?;
        let (dir, unit) = (self.app.dir("snapshots"), self.name.clone());
        let restored = tokio::task::spawn_blocking(move || {
            let golden = snapshot::last_golden(&dir, &unit)?;
            Some(snapshot::restore(&golden, &state_dir).map(|()| golden))
        })
        .await
        .ok()
        .flatten()?;
        match restored {
            Ok(golden) => {
                tracing::warn!(unit = %self.name, snapshot = %golden.path.display(), "restored the last golden snapshot; trying once more");
                self.emit(
                    "unit_restored",
                    json!({ "snapshot": golden.path.display().to_string(), "taken_at": crate::clock::rfc3339_ms(golden.taken_ms) }),
                );
                Some(self.second_chance(Attempt::Restored))
            }
            Err(e) => {
                tracing::error!(unit = %self.name, "cannot restore the golden snapshot: {e}");
                None
            }
        }
    }

    async fn backoff(&mut self, d: Duration) -> Next {
        if d.is_zero() {
            return Next::Start { restarted: true };
        }
        let sleep = tokio::time::sleep(d);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return Next::Start { restarted: true },
                c = self.control.recv() => match c {
                    Some(Control::Stop(reply)) => {
                        self.set(UnitState::Stopped, None).await;
                        let _ = reply.send(());
                        return Next::Idle;
                    }
                    Some(Control::Release(reply)) => { let _ = reply.send(()); }
                    Some(Control::Start) => return Next::Start { restarted: true },
                    None => return Next::Exit,
                }
            }
        }
    }

    async fn idle(&mut self) -> Next {
        loop {
            match self.control.recv().await {
                None => return Next::Exit,
                Some(Control::Stop(reply)) => {
                    let _ = reply.send(());
                }
                Some(Control::Start) => {
                    let state = self.status.borrow().state;
                    if disabled(state) {
                        tracing::warn!(unit = %self.name, "{state}: release it first");
                    } else {
                        return Next::Start { restarted: false };
                    }
                }
                Some(Control::Release(reply)) => {
                    self.release().await;
                    let _ = reply.send(());
                    return Next::Start { restarted: false };
                }
            }
        }
    }

    async fn release(&mut self) {
        self.attempt = None;
        self.unhealthy = false;
        self.policy.reset();
        self.rec.restarts.clear();
        self.rec.total_restarts = 0;
        self.rec.bundle = None;
        self.status.send_modify(|s| {
            s.total_restarts = 0;
            s.bundle = None;
        });
        self.set(UnitState::Stopped, None).await;
    }

    /// Output lines written before now are in the ring (and the log) when this returns.
    async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.flush.send(tx).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }

    async fn stop_processes(&self, leader: Option<i32>, marker: String) {
        let sig = self.cfg.stop.signal.0;
        let timeout = self.cfg.stop_timeout();
        let name = self.name.clone();
        let cgroup = self.cgroup.clone();
        let stopped = tokio::task::spawn_blocking(move || {
            process::stop_unit(leader, &marker, sig, timeout, cgroup.as_deref())
        })
        .await
        .unwrap_or_default();
        if stopped.killed > 0 {
            tracing::warn!(unit = %name, killed = stopped.killed, "processes outlived the stop timeout and were killed");
        }
    }

    fn emit(&self, kind: &str, data: Value) {
        let mut data = match data {
            Value::Object(m) => m,
            _ => Data::new(),
        };
        data.insert("unit".into(), self.name.clone().into());
        let ev = Event::new(SOURCE, kind, self.now(), data);
        // Bounded: a full pipeline drops the event (counted by the daemon's metrics elsewhere)
        // rather than holding up a restart.
        if let Err(e) = self.events.try_send(ev) {
            tracing::warn!(unit = %self.name, "event {kind} dropped: {e}");
        }
    }

    /// Moves to `state`: keeps it in the store, then publishes it.
    async fn set(&mut self, state: UnitState, pid: Option<i32>) {
        self.set_state(state, pid, false).await
    }

    /// [`Self::set`]; with `keep_since` the stored since stays (a quarantine found again after
    /// a daemon restart is as old as it was).
    async fn set_state(&mut self, state: UnitState, pid: Option<i32>, keep_since: bool) {
        let now = if keep_since && self.rec.since_ms > 0 {
            self.rec.since_ms
        } else {
            self.now()
        };
        self.rec.state = state.as_str().into();
        self.rec.pid = pid;
        if pid.is_none() {
            self.rec.start_ticks = None;
        }
        self.rec.since_ms = now;
        let degraded = state.is_disabled();
        self.app
            .metrics
            .degraded
            .set(&[&self.name], if degraded { 1.0 } else { 0.0 });
        self.app.metrics.degraded_since_seconds.set(
            &[&self.name],
            if degraded { now as f64 / 1000.0 } else { 0.0 },
        );
        let rec = self.rec.clone();
        let app = self.app.clone();
        let r = tokio::task::spawn_blocking(move || app.store().and_then(|s| s.put_unit(&rec)))
            .await
            .expect("store writes do not panic");
        if let Err(e) = r {
            tracing::error!(unit = %self.name, "cannot record state {state}: {e}");
        }
        // Published after the store has it: whoever sees the state finds it stored too.
        let count = std::mem::take(&mut self.count_start);
        self.status.send_modify(|s| {
            if count {
                s.starts += 1;
            }
            s.state = state;
            s.pid = pid;
            s.since_ms = now;
        });
        self.app.changes.publish(
            "unit",
            json!({"unit": self.name, "state": state.as_str(), "pid": pid}),
        );
    }
}
