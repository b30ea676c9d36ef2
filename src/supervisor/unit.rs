//! One unit's task: start, watch (a crash is noticed at once: `Child::wait` is woken by
//! SIGCHLD, an adopted process's pidfd by the kernel), restart with backoff, and escalate when
//! the restarts run out. Every state change is kept in the store and every step is an event.

use super::config::UnitConfig;
use super::output::{open_fifo_writer, Ring};
use super::policy::{Decision, RestartPolicy};
use super::process::{self, start_time};
use super::quarantine::{self, Failure};
use super::state::{ExitStatus, UnitState};
use crate::app::App;
use crate::event::{Data, Event};
use crate::intent::NewIntent;
use crate::store::{UnitRecord, UnitStore};
use serde_json::{json, Value};
use std::path::PathBuf;
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
}

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

    /// What the store says the last daemon left: a quarantine stays, a live leader with the
    /// same start time is adopted (or stopped, with `adopt = false`).
    async fn recover(&mut self) -> Next {
        self.policy = self.policy.clone().with_history(&self.rec.restarts);
        match UnitState::parse(&self.rec.state) {
            Some(UnitState::Quarantined) | Some(UnitState::Exhausted) => {
                self.set(UnitState::Quarantined, None).await;
                return Next::Idle;
            }
            Some(UnitState::FailedOver) => {
                self.set(UnitState::FailedOver, None).await;
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
        self.set(UnitState::Adopted, Some(pid)).await;
        let started = self.now();
        tokio::select! {
            r = process::wait_exit(pid) => {
                if let Err(e) = r {
                    tracing::warn!(unit = %self.name, pid, "cannot watch adopted process: {e}");
                }
                self.stop_processes(None, marker).await;
                let exit = ExitStatus { code: None, signal: None };
                self.exited(pid, exit, started).await
            }
            c = self.control.recv() => match c {
                Some(Control::Stop(reply)) => {
                    self.stop_processes(Some(pid), marker).await;
                    self.set(UnitState::Stopped, None).await;
                    let _ = reply.send(());
                    Next::Idle
                }
                Some(Control::Release(reply)) => { let _ = reply.send(()); Next::Idle }
                Some(Control::Start) => Next::Idle,
                None => Next::Exit,
            }
        }
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
        let spawned = open_fifo_writer(&fifo).and_then(|out| {
            let err = out.try_clone()?;
            let mut cmd = process::command(
                &self.cfg.command,
                &self.cfg.env,
                self.cfg.cwd.as_deref(),
                &marker,
            );
            cmd.stdout(out).stderr(err);
            cmd.spawn()
        });
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let line = format!("vigil: cannot start {:?}: {e}", self.cfg.command[0]);
                tracing::error!(unit = %self.name, "{line}");
                self.ring.push(line);
                let exit = ExitStatus {
                    code: Some(-1),
                    signal: None,
                };
                return self.exited(0, exit, started).await;
            }
        };
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        self.rec.marker = Some(marker.clone());
        self.rec.start_ticks = start_time(pid);
        self.status.send_modify(|s| s.starts += 1);
        self.emit("unit_started", json!({ "pid": pid }));
        if restarted {
            let in_window = self.policy.restarts_in_window(self.now());
            self.emit(
                "unit_restarted",
                json!({ "pid": pid, "restarts": in_window, "total_restarts": self.rec.total_restarts }),
            );
        }
        // Events first: whoever sees the state change also finds them already sent.
        self.set(UnitState::Running, Some(pid)).await;
        loop {
            tokio::select! {
                r = child.wait() => {
                    let exit = match r {
                        Ok(s) => ExitStatus::from_std(s),
                        Err(e) => {
                            tracing::error!(unit = %self.name, "cannot wait for pid {pid}: {e}");
                            ExitStatus { code: None, signal: None }
                        }
                    };
                    // The rest of the instance (daemonized children) goes with its leader.
                    self.stop_processes(None, marker).await;
                    return self.exited(pid, exit, started).await;
                }
                c = self.control.recv() => match c {
                    Some(Control::Stop(reply)) => {
                        self.stop_processes(Some(pid), marker).await;
                        let _ = child.wait().await;
                        self.flush().await;
                        self.set(UnitState::Stopped, None).await;
                        let _ = reply.send(());
                        return Next::Idle;
                    }
                    Some(Control::Release(reply)) => { let _ = reply.send(()); }
                    Some(Control::Start) => {}
                    None => return Next::Exit,
                }
            }
        }
    }

    async fn exited(&mut self, pid: i32, exit: ExitStatus, started_ms: i64) -> Next {
        self.flush().await;
        let now = self.now();
        let ran = Duration::from_millis(now.saturating_sub(started_ms).max(0) as u64);
        self.rec.last_exit = Some(exit.describe());
        self.rec.last_error = self.last_error();
        self.emit(
            "unit_exited",
            json!({ "pid": pid, "code": exit.code, "signal": exit.signal, "exit": exit.describe(), "ran_ms": ran.as_millis() as u64 }),
        );
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
            Decision::Exhausted => {
                self.escalate(&exit).await;
                Next::Idle
            }
        }
    }

    fn last_error(&self) -> Option<String> {
        self.ring
            .last(20)
            .into_iter()
            .rev()
            .find(|l| !l.trim().is_empty())
    }

    /// Restarts ran out: stop, bundle, escalate, quarantine.
    async fn escalate(&mut self, exit: &ExitStatus) {
        let now = self.now();
        let restarts = self.policy.history(now);
        self.set(UnitState::Exhausted, None).await;
        self.emit(
            "unit_exhausted",
            json!({ "restarts": restarts.len(), "last_error": self.rec.last_error, "exit": exit.describe(), "tier": self.cfg.tier }),
        );
        let lines = self.ring.last(quarantine::BUNDLE_LINES);
        let dir = self.app.dir("quarantine");
        let (name, cfg, exit2, hist) = (
            self.name.clone(),
            self.cfg.clone(),
            exit.clone(),
            restarts.clone(),
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
        let key = format!("{}:{now}", self.name);
        let intents = [
            NewIntent {
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
            },
            NewIntent {
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
            },
        ];
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
        self.rec.bundle = bundle_text.clone();
        self.status.send_modify(|s| s.bundle = bundle.clone());
        // Tier 1 keeps serving through its replica; every tier is disabled until released.
        let failover = match (&self.replica, &self.cfg.replica) {
            (Some(control), Some(name)) if self.cfg.tier == 1 => {
                let _ = control.send(Control::Start).await;
                tracing::warn!(unit = %self.name, replica = %name, "failed over to the replica");
                Some(name.clone())
            }
            _ => None,
        };
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
        let stopped =
            tokio::task::spawn_blocking(move || process::stop_unit(leader, &marker, sig, timeout))
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
        let now = self.now();
        self.rec.state = state.as_str().into();
        self.rec.pid = pid;
        if pid.is_none() {
            self.rec.start_ticks = None;
        }
        self.rec.since_ms = now;
        let rec = self.rec.clone();
        let app = self.app.clone();
        let r = tokio::task::spawn_blocking(move || app.store().and_then(|s| s.put_unit(&rec)))
            .await
            .expect("store writes do not panic");
        if let Err(e) = r {
            tracing::error!(unit = %self.name, "cannot record state {state}: {e}");
        }
        // Published after the store has it: whoever sees the state finds it stored too.
        self.status.send_modify(|s| {
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
