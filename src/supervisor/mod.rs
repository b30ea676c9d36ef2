//! The supervisor: starts the `[units.NAME]` it is given, restarts them with backoff and a
//! restart-intensity limit, probes their readiness and health, and when a unit exhausts its
//! restarts stops the loop and escalates (diagnostics bundle, critical intent, then a learned
//! playbook, a replica or a golden snapshot for a second chance, else quarantine and a repair
//! intent). Its events (`unit_started`, `unit_ready`, `unit_exited`, `unit_unhealthy`,
//! `unit_recovered`, `unit_restarted`, `unit_exhausted`, `unit_quarantined`, `unit_restored`,
//! `unit_playbook`) and the events of its units' output (`[[units.NAME.match]]`) go to the rule
//! engine like any source's.
//!
//! - `config`: the `[units.NAME]` section.
//! - `policy`: backoff and the restart window, on the injected clock.
//! - `probe`: the `ready` and `health` probes.
//! - `process`: sessions, the subreaper, finding and stopping every process of a unit.
//! - `cgroup`: a cgroup v2 subtree per unit, where one is delegated to vigil.
//! - `output`: the FIFO, the rotating log and the ring buffer of last lines.
//! - `quarantine`: the diagnostics bundle.
//! - `snapshot`: golden snapshots of `state_dir`, and restoring one.
//! - `learned`: failure fingerprints and the playbooks learned from fixes.
//! - `state`: unit states and exit statuses.
//! - `unit`: one unit's task.
//! - `view`: units as the CLI, the API and `vigil status` show them.
//! - `api`: `GET /api/units`, `POST /api/units/{name}/{verb}`; [`act`] is what the API, the CLI
//!   and playbook steps (`src/orchestrator/actions/unit.rs`) call.
//! - the command line (`vigil units ...`) lives in `src/cli/units.rs`.

pub mod api;
pub mod cgroup;
pub mod config;
pub mod learned;
pub mod output;
pub mod policy;
pub mod probe;
pub mod process;
pub mod quarantine;
pub mod snapshot;
pub mod state;
mod unit;
pub mod view;

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
    cgroup: Option<std::path::PathBuf>,
}

/// The units of one daemon. Dropping it (or `detach`) leaves the units' processes running,
/// for the next daemon to adopt; `stop_all` stops them.
pub struct Supervisor {
    app: Arc<App>,
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
    #[error("{unit} is {state}; `vigil units release {unit}` first")]
    Disabled { unit: String, state: UnitState },
    #[error("{unit} did not {what} within {}", crate::config::human(*.within))]
    Timeout {
        unit: String,
        what: &'static str,
        within: std::time::Duration,
    },
    #[error("{0} has no state_dir to snapshot; set `state_dir = \"/path\"` in [units.{0}]")]
    NoStateDir(String),
    #[error("cannot snapshot {unit}: {error}")]
    Snapshot { unit: String, error: String },
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
        // A cgroup per unit where vigil may make them; else the subreaper path alone.
        let cgroups = if units.is_empty() {
            None
        } else {
            cgroup::delegated()
        };
        let tag = cgroup::tag(&app.data_dir);
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
            // Every configured unit has its series from the start (alerts see 0 -> 1).
            app.metrics.degraded.set(&[name], 0.0);
            controls.insert(name.clone(), mpsc::channel::<Control>(8));
            let (tx, rx) = watch::channel(Status {
                state: UnitState::Stopped,
                pid: None,
                since_ms: now,
                total_restarts: 0,
                starts: 0,
                bundle: None,
                healthy_since_ms: None,
            });
            statuses.insert(name.clone(), rx);
            senders.insert(name.clone(), tx);
        }
        let mut sup = Supervisor {
            app: app.clone(),
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
            let unit_cgroup = cgroups.as_ref().and_then(|root| {
                cgroup::for_unit(root, &tag, &name)
                    .map_err(|e| tracing::warn!(unit = %name, "no cgroup for the unit ({e}); its processes are found through its session and marker"))
                    .ok()
            });
            let mut task = unit::UnitTask::new(
                name.clone(),
                cfg,
                app.clone(),
                events.clone(),
                ring.clone(),
                status,
                control_rx,
                flush_tx,
                deps,
                rec,
                policy,
                replica,
                replicas.contains(&name),
            );
            task.cgroup = unit_cgroup.clone();
            tasks.spawn(task.run());
            sup.units.insert(
                name.clone(),
                Handle {
                    control: control_tx,
                    status: statuses[&name].clone(),
                    ring,
                    cgroup: unit_cgroup,
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

    /// How long a start may take before a caller stops waiting: the `ready` timeout (300 s
    /// when `ready` gives none; 0 without a probe), the stop timeout, and 30 s.
    pub fn start_timeout(cfg: &UnitConfig) -> std::time::Duration {
        let ready = cfg.ready.as_ref().map_or(std::time::Duration::ZERO, |r| {
            r.timeout.map_or(probe::READY_TIMEOUT, |d| d.0)
        });
        ready + cfg.stop_timeout() + std::time::Duration::from_secs(30)
    }

    fn config(&self, name: &str) -> Result<&UnitConfig, SupervisorError> {
        self.app
            .config
            .units
            .get(name)
            .ok_or_else(|| SupervisorError::NoSuchUnit(name.into()))
    }

    /// Waits until a start after `before` starts has an outcome: the process is running
    /// (ready, with a `ready` probe), or it already ended (backoff, stopped, disabled).
    async fn wait_started(&self, name: &str, before: u64) -> Result<Status, SupervisorError> {
        let within = Self::start_timeout(self.config(name)?);
        tokio::time::timeout(
            within,
            self.wait_for(name, |s| {
                (s.starts > before && s.state != UnitState::Starting) || s.state.is_disabled()
            }),
        )
        .await
        .map_err(|_| SupervisorError::Timeout {
            unit: name.into(),
            what: "start",
            within,
        })?
    }

    /// Starts a stopped unit and answers once it runs (or failed to); a live unit is left as
    /// it is; a disabled one must be released first.
    pub async fn start_and_wait(&self, name: &str) -> Result<Status, SupervisorError> {
        let h = self.handle(name)?;
        let now = h.status.borrow().clone();
        if now.state.is_disabled() {
            return Err(SupervisorError::Disabled {
                unit: name.into(),
                state: now.state,
            });
        }
        if now.state == UnitState::Starting {
            return self.wait_started(name, now.starts.saturating_sub(1)).await;
        }
        if now.state.is_live() || now.state == UnitState::Backoff {
            return Ok(now);
        }
        let _ = h.control.send(Control::Start).await;
        self.wait_started(name, now.starts).await
    }

    /// Stops the unit, then starts it and answers once it runs (a restart asked for, not a
    /// failure: it does not count against `max_restarts`).
    pub async fn restart(&self, name: &str) -> Result<Status, SupervisorError> {
        if let Some(s) = self.status(name).filter(|s| s.state.is_disabled()) {
            return Err(SupervisorError::Disabled {
                unit: name.into(),
                state: s.state,
            });
        }
        self.stop(name).await?;
        self.start_and_wait(name).await
    }

    /// Lifts a quarantine and answers once the unit runs again (or failed to); a unit that
    /// is not disabled is left as it is.
    pub async fn release_and_wait(&self, name: &str) -> Result<Status, SupervisorError> {
        let now = self.handle(name)?.status.borrow().clone();
        if !now.state.is_disabled() {
            return Ok(now);
        }
        self.release(name).await?;
        self.wait_started(name, now.starts).await
    }

    /// Copies the unit's `state_dir` into `DATA_DIR/snapshots/NAME/` (atomically). It is
    /// golden at once when the unit has been healthy for `snapshot.golden_after`, else it
    /// becomes golden when the unit has been healthy that long, counted from the snapshot or
    /// from when the unit became healthy, whichever is later, without a break; a break (a
    /// failed check, an exit) leaves it not golden.
    pub async fn snapshot(&self, name: &str) -> Result<snapshot::SnapshotInfo, SupervisorError> {
        let cfg = self.config(name)?;
        let state_dir = cfg
            .state_dir
            .clone()
            .ok_or_else(|| SupervisorError::NoStateDir(name.into()))?;
        let golden_after = cfg.snapshot.golden_after.as_ms();
        let mut rx = self.handle(name)?.status.clone();
        let (dir, unit, now) = (
            self.app.dir("snapshots"),
            name.to_string(),
            self.app.clock.now_ms(),
        );
        let mut info =
            tokio::task::spawn_blocking(move || snapshot::take(&dir, &unit, &state_dir, now))
                .await
                .expect("snapshots do not panic")
                .map_err(|e| SupervisorError::Snapshot {
                    unit: name.into(),
                    error: e.to_string(),
                })?;
        let healthy_since = rx.borrow().healthy_since_ms;
        if healthy_since.is_some_and(|t| t <= now - golden_after) {
            let (mut i, now) = (info.clone(), self.app.clock.now_ms());
            info =
                tokio::task::spawn_blocking(move || snapshot::mark_golden(&mut i, now).map(|()| i))
                    .await
                    .expect("snapshots do not panic")
                    .map_err(|e| SupervisorError::Snapshot {
                        unit: name.into(),
                        error: e.to_string(),
                    })?;
            return Ok(info);
        }
        let clock = self.app.clock.clone();
        let pending = info.clone();
        let promote = async move {
            let taken = pending.taken_ms;
            let mut seen = rx.borrow_and_update().healthy_since_ms;
            loop {
                let due = seen.map(|since| since.max(taken) + golden_after);
                let wait = due.map(|d| (d - clock.now_ms()).max(0) as u64);
                if wait == Some(0) {
                    let mut i = pending;
                    let now = clock.now_ms();
                    let r = tokio::task::spawn_blocking(move || snapshot::mark_golden(&mut i, now))
                        .await;
                    if let Ok(Err(e)) = r {
                        tracing::warn!("cannot mark snapshot golden: {e}");
                    }
                    return;
                }
                let sleep = tokio::time::sleep(std::time::Duration::from_millis(
                    wait.unwrap_or(u64::MAX / 4),
                ));
                tokio::select! {
                    _ = sleep => {}
                    changed = rx.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let now = rx.borrow_and_update().healthy_since_ms;
                        match (seen, now) {
                            // Healthy since the same time: nothing changed for this snapshot.
                            (Some(a), Some(b)) if a == b => {}
                            // It was healthy and is not (or became healthy anew): a break.
                            (Some(_), _) => return,
                            (None, n) => seen = n,
                        }
                    }
                }
            }
        };
        if let Some(tasks) = self.tasks.lock().expect("not poisoned").as_mut() {
            tasks.spawn(promote);
        }
        Ok(info)
    }

    /// Stops every unit (dependents first would be nicer; all at once is what this does).
    pub async fn stop_all(&self) {
        for name in self.units.keys() {
            let _ = self.stop(name).await;
        }
        self.detach().await;
        // Empty now: the units' cgroups (and their parent, once empty) go too.
        for h in self.units.values() {
            if let Some(cg) = &h.cgroup {
                let _ = std::fs::remove_dir(cg);
                if let Some(parent) = cg.parent() {
                    let _ = std::fs::remove_dir(parent);
                }
            }
        }
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
    // The units' records say what the last vigil left running (to adopt, not start twice):
    // while the store is away (PostgreSQL down at start), wait for it rather than guess.
    let mut wait = std::time::Duration::from_millis(500);
    let sup = loop {
        match Supervisor::start(app.clone(), events.clone()).await {
            Ok(s) => break Arc::new(s),
            Err(SupervisorError::Store(e)) => {
                if wait == std::time::Duration::from_millis(500) {
                    tracing::warn!("supervisor: {e}; units start once the store answers (their records say what the last vigil left running)");
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopping.wait_for(|s| *s) => return,
                }
                wait = (wait * 2).min(std::time::Duration::from_secs(10));
            }
            Err(e) => {
                tracing::error!("supervisor: {e}; no units are supervised");
                return;
            }
        }
    };
    let _ = app.supervisor.set(sup.clone());
    let _ = stopping.wait_for(|s| *s).await;
    sup.detach().await;
}

/// What can be asked of a unit, by the CLI, the API and playbook steps alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Start,
    Stop,
    Restart,
    Release,
    Snapshot,
}

impl Verb {
    pub const ALL: [Verb; 5] = [
        Verb::Start,
        Verb::Stop,
        Verb::Restart,
        Verb::Release,
        Verb::Snapshot,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
            Verb::Release => "release",
            Verb::Snapshot => "snapshot",
        }
    }

    pub fn parse(s: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// `verb` cannot be done here: it needs the daemon that supervises the units.
#[derive(Debug, thiserror::Error)]
#[error("`{verb}` of unit {unit} needs the running daemon that supervises it; start `vigil run`")]
pub struct NeedsDaemon {
    pub unit: String,
    pub verb: &'static str,
}

/// Does `verb` to unit `name` and answers once it is done, with the unit's state (or, for a
/// snapshot, the snapshot). Through this process's supervisor when it has one (the daemon);
/// else on the store and files where that makes sense: `release` lifts the quarantine in the
/// store (a daemon starting later starts the unit), `snapshot` copies `state_dir` (not marked
/// golden: nobody watches the unit's health); `start`, `stop` and `restart` need the daemon.
pub async fn act(app: &Arc<App>, name: &str, verb: Verb) -> Result<serde_json::Value, ActError> {
    use serde_json::json;
    let Some(sup) = app.supervisor.get() else {
        return match verb {
            Verb::Release => {
                let app = app.clone();
                let name = name.to_string();
                tokio::task::spawn_blocking(move || view::release_stored(&app, &name))
                    .await
                    .expect("store writes do not panic")
            }
            Verb::Snapshot => {
                let cfg = app
                    .config
                    .units
                    .get(name)
                    .ok_or_else(|| SupervisorError::NoSuchUnit(name.into()))?;
                let state_dir = cfg
                    .state_dir
                    .clone()
                    .ok_or_else(|| SupervisorError::NoStateDir(name.into()))?;
                let (dir, unit, now) = (app.dir("snapshots"), name.to_string(), app.clock.now_ms());
                let info = tokio::task::spawn_blocking(move || {
                    snapshot::take(&dir, &unit, &state_dir, now)
                })
                .await
                .expect("snapshots do not panic")
                .map_err(|e| SupervisorError::Snapshot {
                    unit: name.into(),
                    error: e.to_string(),
                })?;
                Ok(json!({ "unit": name, "verb": "snapshot", "snapshot": info, "golden": false }))
            }
            _ => Err(ActError::NeedsDaemon(NeedsDaemon {
                unit: name.into(),
                verb: verb.as_str(),
            })),
        };
    };
    let status = match verb {
        Verb::Start => sup.start_and_wait(name).await?,
        Verb::Stop => {
            sup.stop(name).await?;
            sup.status(name)
                .ok_or_else(|| SupervisorError::NoSuchUnit(name.into()))?
        }
        Verb::Restart => sup.restart(name).await?,
        Verb::Release => sup.release_and_wait(name).await?,
        Verb::Snapshot => {
            let info = sup.snapshot(name).await?;
            let golden = info.golden();
            return Ok(
                json!({ "unit": name, "verb": "snapshot", "snapshot": info, "golden": golden }),
            );
        }
    };
    Ok(json!({
        "unit": name,
        "verb": verb.as_str(),
        "state": status.state,
        "pid": status.pid,
        "since": crate::clock::rfc3339_ms(status.since_ms),
        "starts": status.starts,
        "bundle": status.bundle,
    }))
}

/// Why [`act`] could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    #[error(transparent)]
    NeedsDaemon(NeedsDaemon),
    #[error(transparent)]
    View(#[from] view::ViewError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}
