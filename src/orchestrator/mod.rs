//! The orchestrator: the one component that acts. It takes pending intents by priority then
//! age, claims each with a lease, maps it to a playbook, runs the playbook only when its gates
//! pass, and ends every intent in exactly one of done, denied, failed, restore_failed, expired
//! or unmatched. A claim whose holder died is recovered: never silently lost, never run twice.

pub mod actions;
pub mod api;
pub mod cli;
pub mod config;
pub mod gates;
pub mod ledger;
pub mod orphans;
pub mod status;
pub mod window;

use crate::app::App;
use crate::intent::{queue, Intent, IntentStatus, NewIntent};
use crate::store::{Store, StoreError};
use actions::StepContext;
use config::{Playbook, Step};
use gates::Decision;
use ledger::{RunEnd, RunRecord};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Evaluate gates and log what would run; claim, reserve and run nothing.
    pub dry_run: bool,
}

const RECOVER_EVERY: Duration = Duration::from_secs(5);
const METRICS_EVERY: Duration = Duration::from_secs(5);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Step numbers from here on are on_failure steps (in progress records and the audit trail).
const CLEANUP: usize = 1000;

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub status: IntentStatus,
    pub note: String,
    pub downtime_ms: i64,
}

pub struct Orchestrator {
    app: Arc<App>,
    holder: String,
    http: reqwest::Client,
    /// Intents this orchestrator's workers are handling now. Recovery treats its own running
    /// intents that are not in here as leftovers (of a handler that failed on a store error).
    inflight: std::sync::Mutex<HashSet<i64>>,
    /// Claiming (claim + note in `inflight`) takes it shared; recovery's scan exclusively, so
    /// it never sees an intent claimed but not yet noted.
    claiming: tokio::sync::RwLock<()>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task panicked")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// A holder whose process is gone on this host: its claims can be taken over at once instead
/// of after the lease runs out.
fn holder_dead(holder: &str) -> bool {
    let mut parts = holder.split(':');
    let (Some(host), Some(pid)) = (
        parts.next(),
        parts.next().and_then(|p| p.parse::<i32>().ok()),
    ) else {
        return false;
    };
    if host != hostname() || pid == std::process::id() as i32 || pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

impl Orchestrator {
    pub fn new(app: Arc<App>) -> Self {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let holder = format!("{}:{}:{}", hostname(), std::process::id(), n);
        Self {
            app,
            holder,
            http: reqwest::Client::new(),
            inflight: std::sync::Mutex::new(HashSet::new()),
            claiming: tokio::sync::RwLock::new(()),
        }
    }

    /// Who this orchestrator is in locks and leases: `host:pid:n`.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn lease_ms(&self) -> i64 {
        self.app.config.orchestrator.settings.lease.as_ms()
    }

    /// Claims and handles the next pending intent; false when there was none.
    pub async fn step(&self) -> Result<bool, StoreError> {
        let claiming = self.claiming.read().await;
        let app = self.app.clone();
        let holder = self.holder.clone();
        let lease = self.lease_ms();
        let claimed = blocking(move || {
            let now = app.clock.now_ms();
            app.store()?.claim_intent(&holder, lease, now)
        })
        .await?;
        let Some(intent) = claimed else {
            return Ok(false);
        };
        let _noted = Inflight::note(&self.inflight, intent.id);
        drop(claiming);
        let id = intent.id;
        if let Err(e) = self.handle(intent).await {
            // Leave nothing half-done: end the run (settling budget and lock) and the intent.
            let app = self.app.clone();
            let note = format!("store error while handling it: {e}");
            let _ = blocking(move || -> Result<(), StoreError> {
                let store = app.store()?;
                let now = app.clock.now_ms();
                for run in store
                    .runs(None, i64::MIN, true)?
                    .into_iter()
                    .filter(|r| r.intent_id == id)
                {
                    store.finish_run(run.id, "failed", 0, now)?;
                }
                store.set_intent_status(id, IntentStatus::Failed, Some(&note), now)
            })
            .await;
            return Err(e);
        }
        Ok(true)
    }

    /// Handles every pending intent, then returns how many it handled (tests, benches).
    pub async fn drain(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        while self.step().await? {
            n += 1;
        }
        Ok(n)
    }

    /// Decides and, when the gates pass, runs the playbook for a claimed intent.
    async fn handle(&self, intent: Intent) -> Result<(), StoreError> {
        let app = self.app.clone();
        let holder = self.holder.clone();
        let i2 = intent.clone();
        let decision = blocking(move || gates::evaluate(&app, &i2, &holder, true)).await?;
        let app = self.app.clone();
        let id = intent.id;
        match decision {
            Decision::Expired { reason } => {
                self.end(
                    id,
                    IntentStatus::Expired,
                    reason.clone(),
                    None,
                    "intent_expired",
                    json!({"reason": reason}),
                )
                .await
            }
            Decision::Unmatched => {
                let note = format!("no playbook matches intent type {:?}", intent.intent_type);
                self.end(
                    id,
                    IntentStatus::Unmatched,
                    note.clone(),
                    None,
                    "intent_unmatched",
                    json!({"reason": note}),
                )
                .await
            }
            Decision::Denied {
                playbook,
                mode,
                denial,
            } => {
                app.metrics.gate_denials_total.inc(&[denial.gate.as_str()]);
                let note = format!("{} gate: {}", denial.gate.as_str(), denial.reason);
                self.end(
                    id,
                    IntentStatus::Denied,
                    note,
                    Some(&playbook),
                    "gate_denied",
                    json!({"gate": denial.gate, "reason": denial.reason, "mode": mode}),
                )
                .await
            }
            Decision::Run {
                playbook,
                mode,
                run,
                escalation,
            } => {
                let pb = app.config.orchestrator.playbooks[&playbook].clone();
                let a = app.clone();
                let details = json!({
                    "run": run.id, "mode": mode, "reserved_s": run.reserved_ms as f64 / 1000.0,
                    "budget": run.budget, "budget_day": run.budget_day, "lock": run.lock_name,
                    "escalated_by": escalation.as_ref().map(|f| f.reason.clone()),
                });
                let pbn = playbook.clone();
                blocking(move || {
                    crate::audit::record(&a, "playbook_start", Some(id), Some(&pbn), details)
                })
                .await;
                let outcome = self.execute(&intent, &pb, &mode, &run).await;
                self.settle(&intent, &pb, &mode, &run, &outcome, escalation.is_some())
                    .await
            }
        }
    }

    async fn end(
        &self,
        id: i64,
        status: IntentStatus,
        note: String,
        playbook: Option<&str>,
        event: &'static str,
        details: serde_json::Value,
    ) -> Result<(), StoreError> {
        let app = self.app.clone();
        let playbook = playbook.map(str::to_string);
        blocking(move || {
            crate::audit::record(&app, event, Some(id), playbook.as_deref(), details);
            app.store()?
                .set_intent_status(id, status, Some(&note), app.clock.now_ms())
        })
        .await
    }

    /// Runs the steps of `mode`, then `on_failure` if one failed. Downtime runs from a
    /// `downtime` step until a `restore` step succeeds; a restore that misses the SLA, or a run
    /// that ends with production still down, is `restore_failed`.
    pub async fn execute(
        &self,
        intent: &Intent,
        pb: &Playbook,
        mode: &str,
        run: &RunRecord,
    ) -> RunOutcome {
        let mut state = Progress::default();
        let steps: Vec<&Step> = pb.steps_for(&pb.steps, mode).collect();
        let mut failure = None;
        for (i, step) in steps.iter().enumerate() {
            if let Err(e) = self
                .run_step(intent, pb, mode, run, i, step, &mut state)
                .await
            {
                failure = Some(format!("step {} ({}) failed: {e}", i + 1, step.action));
                break;
            }
        }
        if failure.is_some() {
            let cleanup: Vec<&Step> = pb.steps_for(&pb.on_failure, mode).collect();
            for (i, step) in cleanup.iter().enumerate() {
                // Cleanup keeps going: the next step may be the one that restores production.
                let _ = self
                    .run_step(intent, pb, mode, run, CLEANUP + i, step, &mut state)
                    .await;
            }
        }
        let mut downtime_ms = state.downtime_ms;
        let still_down = state.down_since.is_some();
        if let Some(s) = state.down_since {
            downtime_ms += self.app.clock.now_ms() - s;
        }
        let (status, note) = if still_down || state.sla_missed {
            let why = if still_down {
                "production was not restored".to_string()
            } else {
                format!(
                    "a restore step failed or missed the restore SLA of {:.1}s",
                    self.restore_sla(pb).as_secs_f64()
                )
            };
            (
                IntentStatus::RestoreFailed,
                match &failure {
                    Some(f) => format!("{why}; {f}"),
                    None => why,
                },
            )
        } else if let Some(f) = failure {
            (IntentStatus::Failed, f)
        } else {
            (
                IntentStatus::Done,
                format!(
                    "playbook {} ran {} steps in mode {mode}",
                    pb.name,
                    steps.len()
                ),
            )
        };
        RunOutcome {
            status,
            note,
            downtime_ms,
        }
    }

    fn restore_sla(&self, pb: &Playbook) -> Duration {
        pb.restore_sla
            .unwrap_or(self.app.config.orchestrator.settings.restore_sla.0)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_step(
        &self,
        intent: &Intent,
        pb: &Playbook,
        mode: &str,
        run: &RunRecord,
        index: usize,
        step: &Step,
        state: &mut Progress,
    ) -> Result<(), String> {
        let app = &self.app;
        let settings = &app.config.orchestrator.settings;
        if step.downtime && state.down_since.is_none() {
            state.down_since = Some(app.clock.now_ms());
            self.audit(
                "downtime_start",
                intent.id,
                &pb.name,
                json!({"run": run.id, "step": index + 1, "action": step.action.to_string()}),
            )
            .await;
        }
        self.progress(run.id, index as i64, state.down_since).await;
        let mut timeout = step.timeout.unwrap_or(settings.step_timeout.0);
        let restoring = step.restore && state.down_since.is_some();
        if restoring {
            timeout = timeout.min(self.restore_sla(pb));
        }
        let mut capped = false;
        // Bounded downtime: production stays down no longer than the run reserved. A step that
        // would overrun the reservation is cut short, the run fails and on_failure restores.
        if let (Some(since), false, false) = (state.down_since, step.restore, index >= CLEANUP) {
            let left = since + run.reserved_ms - app.clock.now_ms();
            if left <= 0 {
                let e = format!(
                    "the downtime reservation of {:.1}s is used up; not starting it",
                    run.reserved_ms as f64 / 1000.0
                );
                self.audit("step_failed", intent.id, &pb.name, json!({"run": run.id, "step": index + 1, "action": step.action.kind(), "error": e})).await;
                return Err(e);
            }
            let cap = Duration::from_millis(left as u64);
            if cap < timeout {
                timeout = cap;
                capped = true;
            }
        }
        let ctx = StepContext {
            app,
            http: &self.http,
            intent,
            playbook: &pb.name,
            mode,
            run: run.id,
            holder: &run.holder,
        };
        let started = Instant::now();
        match actions::execute(step, timeout, &ctx).await {
            Ok(details) => {
                self.audit("step_ok", intent.id, &pb.name, json!({"run": run.id, "step": index + 1, "action": step.action.kind(), "details": details})).await;
                if restoring {
                    let since = state.down_since.take().expect("restoring means down");
                    let ms = app.clock.now_ms() - since;
                    state.downtime_ms += ms;
                    self.progress(run.id, index as i64, None).await;
                    self.audit("restored", intent.id, &pb.name, json!({"run": run.id, "downtime_s": ms as f64 / 1000.0, "restore_s": started.elapsed().as_secs_f64()})).await;
                }
                Ok(())
            }
            Err(mut e) => {
                if restoring {
                    state.sla_missed = true;
                }
                if capped {
                    e.push_str(&format!(
                        " (cut short: production may stay down only the {:.1}s the run reserved)",
                        run.reserved_ms as f64 / 1000.0
                    ));
                }
                self.audit("step_failed", intent.id, &pb.name, json!({"run": run.id, "step": index + 1, "action": step.action.kind(), "error": e, "timeout_s": timeout.as_secs_f64()})).await;
                Err(e)
            }
        }
    }

    async fn audit(
        &self,
        event: &'static str,
        intent: i64,
        playbook: &str,
        details: serde_json::Value,
    ) {
        let app = self.app.clone();
        let pb = playbook.to_string();
        blocking(move || crate::audit::record(&app, event, Some(intent), Some(&pb), details)).await
    }

    async fn progress(&self, run: i64, step: i64, down_since: Option<i64>) {
        let app = self.app.clone();
        let r = blocking(move || app.store()?.run_progress(run, step, down_since)).await;
        if let Err(e) = r {
            tracing::warn!("cannot record progress of run {run}: {e}");
        }
    }

    /// Records the end of a run: budget and lock settled, intent status, flag cleared after a
    /// successful escalated run, metrics, and an alert when production was not restored.
    async fn settle(
        &self,
        intent: &Intent,
        pb: &Playbook,
        mode: &str,
        run: &RunRecord,
        outcome: &RunOutcome,
        escalated: bool,
    ) -> Result<(), StoreError> {
        let app = self.app.clone();
        let (intent, pb, mode, run, outcome) = (
            intent.clone(),
            pb.clone(),
            mode.to_string(),
            run.clone(),
            outcome.clone(),
        );
        blocking(move || {
            let store = app.store()?;
            // What follows from the run comes first: whoever sees the intent ended sees it.
            app.metrics
                .playbook_runs_total
                .inc(&[&pb.name, outcome.status.as_str(), &mode]);
            if outcome.status == IntentStatus::Done && escalated {
                if let Some(kind) = &pb.mode.escalate_on {
                    let why = format!(
                        "escalated run of playbook {} succeeded (intent {})",
                        pb.name, intent.id
                    );
                    // The run succeeded either way; a flag left armed only escalates once more.
                    if let Err(e) = crate::escalation::clear(&app, kind, &why) {
                        tracing::error!("cannot clear escalation {kind} after {why}: {e}");
                    }
                }
            }
            let now = app.clock.now_ms();
            let audit = crate::audit::entry(
                &app,
                "playbook_end",
                Some(intent.id),
                Some(&pb.name),
                json!({"run": run.id, "result": outcome.status, "mode": mode, "note": outcome.note,
                       "downtime_s": outcome.downtime_ms as f64 / 1000.0}),
            );
            crate::audit::write_file(&app, &audit);
            let end = RunEnd {
                run_id: run.id,
                downtime_ms: outcome.downtime_ms,
                intent_id: intent.id,
                status: outcome.status,
                note: &outcome.note,
                now_ms: now,
            };
            store.settle_run(&end, &audit)?;
            if outcome.status == IntentStatus::RestoreFailed {
                raise_restore_alert(&app, &pb.name, intent.id, &outcome.note);
            }
            Ok(())
        })
        .await
    }

    /// Takes over intents whose holder died or whose lease ran out: one never started is put
    /// back to pending; one that was running is ended as failed (never re-run), its budget and
    /// lock settled, and, when it stopped with production down, `on_failure` runs to restore it.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        let scanning = self.claiming.write().await;
        let inflight: HashSet<i64> = self.inflight.lock().unwrap().clone();
        let app = self.app.clone();
        let me = self.holder.clone();
        let lease = self.lease_ms();
        let taken = blocking(move || -> Result<Vec<(i64, Option<String>)>, StoreError> {
            let store = app.store()?;
            let now = app.clock.now_ms();
            let mut taken = Vec::new();
            for ledger::Lease {
                intent: id,
                holder,
                expires_at: expires,
            } in store.running_intents()?
            {
                // Our own but no worker has it: its handler failed and could not end it.
                let mine = holder.as_deref() == Some(me.as_str());
                if mine && inflight.contains(&id) {
                    continue;
                }
                let stale = mine
                    || expires.is_none_or(|e| e < now)
                    || holder.as_deref().is_some_and(holder_dead);
                if stale && store.take_over_intent(id, holder.as_deref(), &me, lease, now)? {
                    taken.push((id, holder));
                }
            }
            Ok(taken)
        })
        .await?;
        drop(scanning);
        let n = taken.len();
        for (id, old) in taken {
            self.recover_one(id, old.unwrap_or_default()).await?;
        }
        Ok(n)
    }

    async fn recover_one(&self, id: i64, old: String) -> Result<(), StoreError> {
        let app = self.app.clone();
        let (intent, run) = blocking(move || -> Result<_, StoreError> {
            let store = app.store()?;
            let intent = store.intent(id)?;
            let run = store
                .runs(None, i64::MIN, true)?
                .into_iter()
                .find(|r| r.intent_id == id);
            Ok((intent, run))
        })
        .await?;
        let Some(intent) = intent else { return Ok(()) };
        let Some(run) = run else {
            // Claimed but no run recorded: nothing happened yet, so it can simply run later.
            let app = self.app.clone();
            return blocking(move || {
                crate::audit::record(
                    &app,
                    "intent_resumed",
                    Some(id),
                    None,
                    json!({"previous_holder": old}),
                );
                app.store()?.set_intent_status(
                    id,
                    IntentStatus::Pending,
                    Some("resumed after its claimant stopped"),
                    app.clock.now_ms(),
                )
            })
            .await;
        };
        let pb = self
            .app
            .config
            .orchestrator
            .playbooks
            .get(&run.playbook)
            .cloned();
        let mut state = Progress {
            down_since: run.downtime_since,
            ..Default::default()
        };
        let mut note = format!(
            "vigil stopped during step {} of playbook {} (holder {old}); not run again",
            run.step + 1,
            run.playbook
        );
        // A command the dead vigil started may still be running (it has its own process
        // group): stop it before anything else, so a restore never races it.
        let token = orphans::token(&run.holder, run.id);
        let killed = blocking(move || orphans::kill_marked(&token)).await;
        if !killed.is_empty() {
            note.push_str(&format!(
                "; killed the {} processes its step left running",
                killed.len()
            ));
            self.audit(
                "orphan_killed",
                id,
                &run.playbook,
                json!({"run": run.id, "pids": killed}),
            )
            .await;
        }
        if let (Some(pb), Some(_)) = (&pb, run.downtime_since) {
            note.push_str("; production was down: ran on_failure");
            let cleanup: Vec<&Step> = pb.steps_for(&pb.on_failure, &run.mode).collect();
            for (i, step) in cleanup.iter().enumerate() {
                let _ = self
                    .run_step(&intent, pb, &run.mode, &run, CLEANUP + i, step, &mut state)
                    .await;
            }
        }
        let mut downtime_ms = state.downtime_ms;
        let still_down = state.down_since.is_some();
        if let Some(s) = state.down_since {
            downtime_ms += self.app.clock.now_ms() - s;
        }
        let status = if still_down {
            note.push_str("; production is still down");
            IntentStatus::RestoreFailed
        } else {
            IntentStatus::Failed
        };
        let app = self.app.clone();
        blocking(move || -> Result<(), StoreError> {
            let store = app.store()?;
            let now = app.clock.now_ms();
            let audit = crate::audit::entry(
                &app,
                "run_recovered",
                Some(id),
                Some(&run.playbook),
                json!({"run": run.id, "result": status, "note": note, "downtime_s": downtime_ms as f64 / 1000.0}),
            );
            crate::audit::write_file(&app, &audit);
            let end = RunEnd {
                run_id: run.id,
                downtime_ms,
                intent_id: id,
                status,
                note: &note,
                now_ms: now,
            };
            app.metrics.playbook_runs_total.inc(&[&run.playbook, status.as_str(), &run.mode]);
            store.settle_run(&end, &audit)?;
            if status == IntentStatus::RestoreFailed {
                raise_restore_alert(&app, &run.playbook, id, &note);
            }
            Ok(())
        })
        .await
    }

    /// Dry run: what would happen to each pending intent, without claiming or reserving.
    pub async fn plan_pending(&self, seen: &mut HashSet<i64>) -> Result<Vec<Plan>, StoreError> {
        let app = self.app.clone();
        let holder = self.holder.clone();
        let fresh: Vec<i64> = seen.iter().copied().collect();
        let plans = blocking(move || -> Result<Vec<Plan>, StoreError> {
            let pending = app.store()?.intents(&crate::store::IntentQuery {
                status: Some(IntentStatus::Pending),
                ..Default::default()
            })?;
            let mut out = Vec::new();
            for i in pending.into_iter().rev() {
                if fresh.contains(&i.id) {
                    continue;
                }
                out.push(plan(&app, &i, &holder)?);
            }
            Ok(out)
        })
        .await?;
        seen.extend(plans.iter().map(|p| p.intent));
        Ok(plans)
    }
}

/// What a dry run says about one intent.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub intent: i64,
    pub intent_type: String,
    #[serde(flatten)]
    pub decision: Decision,
    /// The steps that would run, in order.
    pub steps: Vec<String>,
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "intent {} ({}): ", self.intent, self.intent_type)?;
        match &self.decision {
            Decision::Expired { reason } => write!(f, "would expire: {reason}"),
            Decision::Unmatched => write!(f, "unmatched: no playbook"),
            Decision::Denied {
                playbook,
                mode,
                denial,
            } => write!(
                f,
                "playbook {playbook} (mode {mode}) would be denied by the {} gate: {}",
                denial.gate.as_str(),
                denial.reason
            ),
            Decision::Run { playbook, mode, .. } => {
                write!(
                    f,
                    "playbook {playbook} (mode {mode}) would run: {}",
                    self.steps.join("; ")
                )
            }
        }
    }
}

/// Evaluates the gates for one intent without acting (blocking).
pub fn plan(app: &App, intent: &Intent, holder: &str) -> Result<Plan, StoreError> {
    let decision = gates::evaluate(app, intent, holder, false)?;
    let steps = match &decision {
        Decision::Run { playbook, mode, .. } => {
            let pb = &app.config.orchestrator.playbooks[playbook];
            pb.steps_for(&pb.steps, mode)
                .map(|s| s.action.to_string())
                .collect()
        }
        _ => Vec::new(),
    };
    Ok(Plan {
        intent: intent.id,
        intent_type: intent.intent_type.clone(),
        decision,
        steps,
    })
}

/// Notes an intent as handled by this orchestrator until dropped.
struct Inflight<'a>(&'a std::sync::Mutex<HashSet<i64>>, i64);

impl<'a> Inflight<'a> {
    fn note(set: &'a std::sync::Mutex<HashSet<i64>>, id: i64) -> Self {
        set.lock().unwrap().insert(id);
        Inflight(set, id)
    }
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap().remove(&self.1);
    }
}

#[derive(Debug, Default)]
struct Progress {
    down_since: Option<i64>,
    downtime_ms: i64,
    sla_missed: bool,
}

fn raise_restore_alert(app: &App, playbook: &str, intent: i64, note: &str) {
    app.metrics.restore_failures_total.inc(&[playbook]);
    let mut data = crate::event::Data::new();
    data.insert("playbook".into(), playbook.into());
    data.insert("intent".into(), intent.into());
    let alert = NewIntent {
        intent_type: "alert_restore_failed".into(),
        priority: 10,
        reason: format!("playbook {playbook} did not restore production (intent {intent}): {note}"),
        data,
        dedup_key: Some(format!("{playbook}:{intent}")),
        origin: "orchestrator".into(),
    };
    if let Err(e) = queue::submit(app, &alert) {
        tracing::error!("cannot raise the restore alert for playbook {playbook}: {e}");
    }
}

/// The orchestrator task the daemon spawns: runs until `shutdown` turns true. Runs in
/// progress finish first (stopping mid-downtime would leave production down).
pub async fn run(app: Arc<App>, opts: Options, mut shutdown: watch::Receiver<bool>) {
    if !app.config.orchestrator.settings.enabled {
        tracing::info!("orchestrator disabled ([orchestrator] enabled = false)");
        return;
    }
    if app.config.orchestrator.playbooks.is_empty() {
        // An alert-only config: intents stay pending for whoever reads them (API, dashboard,
        // another vigil) instead of all ending `unmatched`.
        tracing::info!("no [playbooks.*] configured: intents are stored, not acted on");
        return;
    }
    let orch = Arc::new(Orchestrator::new(app.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    // Leases are renewed until the last run has finished, which may be after shutdown.
    let (stop_heartbeat, heartbeat_stop) = watch::channel(false);
    let heartbeat = (!opts.dry_run)
        .then(|| tokio::spawn(heartbeat(app.clone(), orch.holder.clone(), heartbeat_stop)));
    if !opts.dry_run {
        for _ in 0..app.config.orchestrator.settings.workers {
            tasks.spawn(worker(orch.clone(), shutdown.clone()));
        }
    }
    let mut stored = app.stored.subscribe();
    let mut seen = HashSet::new();
    let mut last_recover: Option<Instant> = None;
    let mut last_metrics: Option<Instant> = None;
    let mut last_prune: Option<Instant> = None;
    tracing::info!(holder = %orch.holder, dry_run = opts.dry_run, playbooks = app.config.orchestrator.playbooks.len(), workers = app.config.orchestrator.settings.workers, "orchestrator running");
    while !*shutdown.borrow() {
        if last_metrics.is_none_or(|t| t.elapsed() >= METRICS_EVERY) {
            last_metrics = Some(Instant::now());
            let a = app.clone();
            if let Err(e) = blocking(move || status::refresh_metrics(&a)).await {
                tracing::warn!("cannot refresh orchestrator metrics: {e}");
            }
        }
        if opts.dry_run {
            match orch.plan_pending(&mut seen).await {
                Ok(plans) => plans.iter().for_each(|p| tracing::info!("dry run: {p}")),
                Err(e) => tracing::error!("dry run: {e}"),
            }
        } else {
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                let a = app.clone();
                match blocking(move || prune(&a)).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("pruned {n} old symptoms, runs and audit rows"),
                    Err(e) => tracing::warn!("cannot prune the orchestrator's state: {e}"),
                }
            }
            if last_recover.is_none_or(|t| t.elapsed() >= RECOVER_EVERY) {
                last_recover = Some(Instant::now());
                match orch.recover().await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::warn!("recovered {n} intents left running by a stopped vigil")
                    }
                    Err(e) => tracing::error!("recovery: {e}"),
                }
            }
        }
        tokio::select! {
            _ = stored.recv() => {}
            _ = tokio::time::sleep(IDLE_POLL) => {}
            _ = shutdown.changed() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
    let _ = stop_heartbeat.send(true);
    if let Some(h) = heartbeat {
        let _ = h.await;
    }
}

/// Takes intents one at a time until shutdown; wakes when one is stored, or every second for
/// intents other processes stored.
async fn worker(orch: Arc<Orchestrator>, mut shutdown: watch::Receiver<bool>) {
    let mut stored = orch.app.stored.subscribe();
    while !*shutdown.borrow() {
        let worked = match orch.step().await {
            Ok(w) => w,
            Err(e) => {
                tracing::error!("orchestrator: {e}; retrying");
                false
            }
        };
        if !worked {
            tokio::select! {
                _ = stored.recv() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

/// Drops what no gate or flag can need any more (blocking).
pub fn prune(app: &App) -> Result<usize, StoreError> {
    let cfg = &app.config.orchestrator;
    let mut keep = cfg.settings.retention.0.max(cfg.escalation.window.0);
    for pb in cfg.playbooks.values() {
        keep = keep.max(pb.cooldown.unwrap_or_default());
        keep = keep.max(pb.max_runs.map(|m| m.within.0).unwrap_or_default());
    }
    let before = app.clock.now_ms() - keep.as_millis() as i64;
    app.store()?.prune_orchestrator(before)
}

/// Renews this orchestrator's leases (intents and locks) well before they run out.
async fn heartbeat(app: Arc<App>, holder: String, mut shutdown: watch::Receiver<bool>) {
    let lease = app.config.orchestrator.settings.lease;
    let every = (lease.0 / 3).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let a = app.clone();
        let h = holder.clone();
        let r =
            blocking(move || a.store()?.renew_leases(&h, lease.as_ms(), a.clock.now_ms())).await;
        if let Err(e) = r {
            tracing::warn!("cannot renew leases: {e}");
        }
    }
}
