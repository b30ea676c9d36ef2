//! The supervisor: starts the `[units.NAME]` it is given, restarts them with backoff and a
//! restart-intensity limit, and when a unit exhausts its restarts stops the loop and
//! escalates (diagnostics bundle, critical intent, quarantine). Its events (`unit_started`,
//! `unit_exited`, `unit_restarted`, `unit_exhausted`, `unit_quarantined`) and the events of
//! its units' output (`[[units.NAME.match]]`) go to the rule engine like any source's.
//!
//! - `config`: the `[units.NAME]` section.
//! - `policy`: backoff and the restart window, on the injected clock.
//! - `process`: sessions, the subreaper, finding and stopping every process of a unit.
//! - `output`: the FIFO, the rotating log and the ring buffer of last lines.
//! - `quarantine`: the diagnostics bundle.
//! - `state`: unit states and exit statuses.
//! - `unit`: one unit's task.
//! - the command line (`vigil units list|show|logs|release`) lives in `src/cli/units.rs`.

pub mod config;
pub mod output;
pub mod policy;
pub mod process;
pub mod quarantine;
pub mod state;
mod unit;

pub use config::UnitConfig;
pub use state::{ExitStatus, UnitState};
pub use unit::{Control, Status};

use crate::app::App;
use crate::event::Event;
use crate::store::{UnitRecord, UnitStore};
use output::{Ring, RotatingLog, Sink};
use policy::RestartPolicy;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// A running unit as the supervisor holds it.
struct Handle {
    control: mpsc::Sender<Control>,
    status: watch::Receiver<Status>,
    ring: Ring,
}

/// The units of one daemon. Dropping it (or `detach`) leaves the units' processes running,
/// for the next daemon to adopt; `stop_all` stops them.
pub struct Supervisor {
    units: BTreeMap<String, Handle>,
    /// The units' and output readers' tasks; taken by `stop_all` or `detach`.
    tasks: std::sync::Mutex<Option<tokio::task::JoinSet<()>>>,
}

/// The supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("no unit named {0:?} is configured")]
    NoSuchUnit(String),
}

impl Supervisor {
    /// Starts every configured unit (each waits for its `after` units), resuming what the
    /// store says about them: quarantined units stay quarantined, running ones are adopted.
    pub async fn start(
        app: Arc<App>,
        events: mpsc::Sender<Event>,
    ) -> Result<Supervisor, SupervisorError> {
        let units = app.config.units.clone();
        if !units.is_empty() {
            if let Err(e) = process::become_subreaper() {
                tracing::warn!("cannot become a child subreaper ({e}): descendants of units that double-fork may escape a stop");
            }
        }
        let store = app.store()?;
        let records = tokio::task::spawn_blocking(move || store.units())
            .await
            .expect("store reads do not panic")?;
        let mut records: BTreeMap<String, UnitRecord> =
            records.into_iter().map(|r| (r.name.clone(), r)).collect();
        let now = app.clock.now_ms();
        let mut statuses = BTreeMap::new();
        let mut senders = BTreeMap::new();
        let mut controls = BTreeMap::new();
        let replicas: std::collections::BTreeSet<String> =
            units.values().filter_map(|u| u.replica.clone()).collect();
        for name in units.keys() {
            controls.insert(name.clone(), mpsc::channel::<Control>(8));
            let (tx, rx) = watch::channel(Status {
                state: UnitState::Stopped,
                pid: None,
                since_ms: now,
                total_restarts: 0,
                starts: 0,
                bundle: None,
            });
            statuses.insert(name.clone(), rx);
            senders.insert(name.clone(), tx);
        }
        let mut sup = Supervisor {
            units: BTreeMap::new(),
            tasks: std::sync::Mutex::new(None),
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (name, cfg) in units {
            let rec = records.remove(&name).unwrap_or_else(|| UnitRecord {
                name: name.clone(),
                state: UnitState::Stopped.as_str().into(),
                tier: cfg.tier,
                pid: None,
                start_ticks: None,
                marker: None,
                restarts: Vec::new(),
                total_restarts: 0,
                last_exit: None,
                last_error: None,
                bundle: None,
                since_ms: now,
            });
            let status = senders.remove(&name).expect("made above");
            status.send_modify(|s| {
                s.total_restarts = rec.total_restarts;
                s.bundle = rec.bundle.as_ref().map(Into::into);
            });
            let ring = Ring::default();
            let (control_tx, control_rx) = controls.remove(&name).expect("made above");
            let replica = cfg.replica.as_ref().and_then(|r| {
                controls
                    .get(r)
                    .map(|(tx, _)| tx.clone())
                    .or_else(|| sup.units.get(r).map(|h| h.control.clone()))
            });
            let (flush_tx, flush_rx) = mpsc::channel(1);
            let dir = app.dir("units").join(&name);
            let log = match RotatingLog::open(dir.join("unit.log"), cfg.log.max_size, cfg.log.keep)
            {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!(unit = %name, "cannot open {}: {e}; output goes to memory only", dir.join("unit.log").display());
                    None
                }
            };
            let sink = Sink {
                unit: name.clone(),
                ring: ring.clone(),
                log,
                matches: cfg.matches.clone(),
                events: events.clone(),
                clock: app.clock.clone(),
            };
            tasks.spawn(output::read_fifo(dir.join("output.fifo"), sink, flush_rx));
            let deps = cfg
                .after
                .iter()
                .filter_map(|d| statuses.get(d).map(|rx| (d.clone(), rx.clone())))
                .collect();
            let policy = RestartPolicy::new(
                cfg.restart,
                cfg.backoff,
                cfg.max_restarts,
                cfg.restart_window.as_ms(),
            );
            let task = unit::UnitTask {
                name: name.clone(),
                cfg,
                app: app.clone(),
                events: events.clone(),
                ring: ring.clone(),
                status,
                control: control_rx,
                flush: flush_tx,
                deps,
                rec,
                policy,
                replica,
                standby: replicas.contains(&name),
            };
            tasks.spawn(task.run());
            sup.units.insert(
                name.clone(),
                Handle {
                    control: control_tx,
                    status: statuses[&name].clone(),
                    ring,
                },
            );
        }
        *sup.tasks.get_mut().expect("not shared yet") = Some(tasks);
        Ok(sup)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.units.keys().map(String::as_str)
    }

    fn handle(&self, name: &str) -> Result<&Handle, SupervisorError> {
        self.units
            .get(name)
            .ok_or_else(|| SupervisorError::NoSuchUnit(name.into()))
    }

    /// The unit's state now.
    pub fn status(&self, name: &str) -> Option<Status> {
        self.units.get(name).map(|h| h.status.borrow().clone())
    }

    /// Waits (without polling) until the unit's status satisfies `pred`; returns it.
    pub async fn wait_for(
        &self,
        name: &str,
        pred: impl FnMut(&Status) -> bool,
    ) -> Result<Status, SupervisorError> {
        let mut rx = self.handle(name)?.status.clone();
        let s = rx
            .wait_for(pred)
            .await
            .map_err(|_| SupervisorError::NoSuchUnit(name.into()))?;
        Ok(s.clone())
    }

    /// The unit's last `n` output lines, oldest first.
    pub fn lines(&self, name: &str, n: usize) -> Vec<String> {
        self.units.get(name).map_or(Vec::new(), |h| h.ring.last(n))
    }

    /// Stops every process of the unit; returns once none is left.
    pub async fn stop(&self, name: &str) -> Result<(), SupervisorError> {
        let (tx, rx) = oneshot::channel();
        let h = self.handle(name)?;
        let _ = h.control.send(Control::Stop(tx)).await;
        let _ = rx.await;
        Ok(())
    }

    /// Starts a stopped unit.
    pub async fn start_unit(&self, name: &str) -> Result<(), SupervisorError> {
        let _ = self.handle(name)?.control.send(Control::Start).await;
        Ok(())
    }

    /// Lifts a quarantine and starts the unit again.
    pub async fn release(&self, name: &str) -> Result<(), SupervisorError> {
        let (tx, rx) = oneshot::channel();
        let _ = self.handle(name)?.control.send(Control::Release(tx)).await;
        let _ = rx.await;
        Ok(())
    }

    /// Stops every unit (dependents first would be nicer; all at once is what this does).
    pub async fn stop_all(&self) {
        for name in self.units.keys() {
            let _ = self.stop(name).await;
        }
        self.detach().await;
    }

    /// Ends the supervisor's tasks and leaves the units running, for the next daemon to adopt.
    /// Controls sent afterwards go nowhere.
    pub async fn detach(&self) {
        let tasks = self.tasks.lock().expect("not poisoned").take();
        if let Some(mut tasks) = tasks {
            tasks.shutdown().await;
        }
    }
}

/// The daemon's supervisor task: starts the units and, when the daemon stops, leaves them
/// running (a restart of vigil does not restart production; the next daemon adopts them).
pub async fn run(app: Arc<App>, events: mpsc::Sender<Event>, mut stopping: watch::Receiver<bool>) {
    if app.config.units.is_empty() {
        return;
    }
    let sup = match Supervisor::start(app.clone(), events).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!("supervisor: {e}; no units are supervised");
            return;
        }
    };
    let _ = app.supervisor.set(sup.clone());
    let _ = stopping.wait_for(|s| *s).await;
    sup.detach().await;
}
