//! One run of a playbook, from the claim that started it to its settling. A `Run` is started
//! when the gates pass (or resumed by recovery from its stored record), runs its steps, and
//! ends in `settle`: the one place that ends a run (downtime, final status, audit entry,
//! metrics, the store's settle, the restore alert). The first ending of a run wins; a later
//! one (recovery raced the original holder) is audited as `run_end_ignored` and changes
//! nothing.
//!
//! Every run acts under a `Fence`: its intent's lease and its lock, each with the epoch it
//! got them at. The fence is checked with each progress record (before every step), watched
//! while a step runs, and checked in the settle's transaction. A holder that lost it (it was
//! stopped and another vigil took the run over) stops: the step in progress is cancelled,
//! which kills its process group, no further step runs, nothing more is written for the run,
//! and `lease_lost` is audited.

use super::actions::{self, StepContext};
use super::config::{Playbook, Step};
use super::{blocking, orphans};
use crate::app::App;
use crate::audit::Audit;
use crate::intent::{queue, Intent, IntentStatus, NewIntent};
use crate::store::{Fence, LeaseFence, LockFence, RunEnd, RunStore, Settled, StoreError};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::store::RunRecord;

/// Step numbers from here on are on_failure steps (in progress records and the audit trail).
const CLEANUP: usize = 1000;

/// How a run came to its end, before `settle` turns it into a final status.
#[derive(Debug, Clone)]
pub enum Ending {
    /// The playbook's steps ran; `failure` says which one failed, if any.
    Steps {
        failure: Option<String>,
        steps: usize,
    },
    /// Recovery took over a run whose holder stopped; `note` says what it found and did.
    Recovered { note: String },
    /// Its handler failed (a store error) and could not go on.
    Abandoned { note: String },
}

/// Downtime and restore bookkeeping of a run in progress.
#[derive(Debug, Default)]
struct Progress {
    down_since: Option<i64>,
    downtime_ms: i64,
    sla_missed: bool,
}

/// One run of a playbook for one intent.
pub struct Run {
    app: Arc<App>,
    http: reqwest::Client,
    intent: Intent,
    /// `None` when a recovered run's playbook is no longer configured.
    playbook: Option<Playbook>,
    record: RunRecord,
    /// Started in the escalated mode by an armed flag: a success clears it.
    escalated: bool,
    progress: Progress,
    /// What this run acts under.
    fence: Fence,
    /// Set once the fence was found broken: nothing more is run or written.
    lost: bool,
}

impl Run {
    /// A run the gates have just recorded.
    pub(super) fn start(
        app: Arc<App>,
        http: reqwest::Client,
        intent: Intent,
        playbook: Playbook,
        record: RunRecord,
        escalated: bool,
        lease: LeaseFence,
    ) -> Run {
        let lock = record.lock_name.clone().map(|name| LockFence {
            name,
            holder: record.holder.clone(),
            epoch: record.lock_epoch,
        });
        Run {
            app,
            http,
            intent,
            playbook: Some(playbook),
            record,
            escalated,
            progress: Progress::default(),
            fence: Fence { lease, lock },
            lost: false,
        }
    }

    /// A run recorded by another holder (or by this one before a failure), resumed from its
    /// stored record to be recovered or settled under `lease` (the take-over's). Its lock
    /// is the old holder's, not part of the fence: the settle releases it.
    pub(super) fn resume(
        app: Arc<App>,
        http: reqwest::Client,
        intent: Intent,
        record: RunRecord,
        lease: LeaseFence,
    ) -> Run {
        let playbook = app
            .config
            .orchestrator
            .playbooks
            .get(&record.playbook)
            .cloned();
        Run {
            progress: Progress {
                down_since: record.downtime_since,
                ..Default::default()
            },
            app,
            http,
            intent,
            playbook,
            record,
            escalated: false,
            fence: Fence { lease, lock: None },
            lost: false,
        }
    }

    /// The run as stored.
    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    /// Runs the steps of the run's mode, then `on_failure` if one failed. Downtime runs from a
    /// `downtime` step until a `restore` step succeeds.
    pub(super) async fn execute(&mut self) -> Ending {
        let Some(pb) = self.playbook.clone() else {
            return Ending::Abandoned {
                note: format!("playbook {} is not configured", self.record.playbook),
            };
        };
        let mode = self.record.mode.clone();
        let steps: Vec<&Step> = pb.steps_for(&pb.steps, &mode).collect();
        let mut failure = None;
        for (i, step) in steps.iter().enumerate() {
            if let Err(e) = self.run_step(&pb, i, step).await {
                failure = Some(format!("step {} ({}) failed: {e}", i + 1, step.action));
                break;
            }
        }
        // A holder that lost the run leaves its cleanup to the one that took it over.
        if failure.is_some() && !self.lost {
            self.cleanup(&pb).await;
        }
        Ending::Steps {
            failure,
            steps: steps.len(),
        }
    }

    /// Recovers a run whose holder `old` stopped: kills what its step left running and, when
    /// production was down, runs `on_failure` to restore it. Never runs its steps again.
    pub(super) async fn recover(&mut self, old: &str) -> Ending {
        let run = &self.record;
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
                json!({"run": self.record.id, "pids": killed}),
            )
            .await;
        }
        if let (Some(pb), Some(_)) = (self.playbook.clone(), self.record.downtime_since) {
            note.push_str("; production was down: ran on_failure");
            self.cleanup(&pb).await;
        }
        Ending::Recovered { note }
    }

    /// Runs `on_failure`; it keeps going past a failed step: the next may be the one that
    /// restores production.
    async fn cleanup(&mut self, pb: &Playbook) {
        let mode = self.record.mode.clone();
        let cleanup: Vec<&Step> = pb.steps_for(&pb.on_failure, &mode).collect();
        for (i, step) in cleanup.iter().enumerate() {
            if self.lost {
                break;
            }
            let _ = self.run_step(pb, CLEANUP + i, step).await;
        }
    }

    fn restore_sla(&self, pb: &Playbook) -> Duration {
        pb.restore_sla
            .unwrap_or(self.app.config.orchestrator.settings.restore_sla.0)
    }

    async fn run_step(&mut self, pb: &Playbook, index: usize, step: &Step) -> Result<(), String> {
        let app = self.app.clone();
        let settings = &app.config.orchestrator.settings;
        let run = self.record.id;
        let going_down = step.downtime && self.progress.down_since.is_none();
        if going_down {
            self.progress.down_since = Some(app.clock.now_ms());
        }
        // Before anything of the step, in the progress record's transaction: is the run still
        // ours?
        if !self.save_progress(index as i64).await {
            return Err(self.lose());
        }
        if going_down {
            self.audit(
                "downtime_start",
                json!({"run": run, "step": index + 1, "action": step.action.to_string()}),
            )
            .await;
        }
        let mut timeout = step.timeout.unwrap_or(settings.step_timeout.0);
        let restoring = step.restore && self.progress.down_since.is_some();
        if restoring {
            timeout = timeout.min(self.restore_sla(pb));
        }
        let mut capped = false;
        // Bounded downtime: production stays down no longer than the run reserved. A step that
        // would overrun the reservation is cut short, the run fails and on_failure restores.
        if let (Some(since), false, false) =
            (self.progress.down_since, step.restore, index >= CLEANUP)
        {
            let left = since + self.record.reserved_ms - app.clock.now_ms();
            if left <= 0 {
                let e = format!(
                    "the downtime reservation of {:.1}s is used up; not starting it",
                    self.record.reserved_ms as f64 / 1000.0
                );
                self.audit("step_failed", json!({"run": run, "step": index + 1, "action": step.action.kind(), "error": e})).await;
                return Err(e);
            }
            let cap = Duration::from_millis(left as u64);
            if cap < timeout {
                timeout = cap;
                capped = true;
            }
        }
        let ctx = StepContext {
            app: &app,
            http: &self.http,
            intent: &self.intent,
            playbook: &pb.name,
            mode: &self.record.mode,
            run,
            holder: &self.record.holder,
        };
        let started = Instant::now();
        // The step races the fence: when the run is lost mid-step, dropping the step's future
        // kills its process group (crate::exec) or abandons its request.
        let outcome = tokio::select! {
            r = actions::execute(step, timeout, &ctx) => Some(r),
            () = watch_fence(&app, &self.fence) => None,
        };
        let Some(outcome) = outcome else {
            return Err(self.lose());
        };
        match outcome {
            Ok(details) => {
                self.audit("step_ok", json!({"run": run, "step": index + 1, "action": step.action.kind(), "details": details})).await;
                if restoring {
                    let since = self
                        .progress
                        .down_since
                        .take()
                        .expect("restoring means down");
                    let ms = app.clock.now_ms() - since;
                    self.progress.downtime_ms += ms;
                    if !self.save_progress(index as i64).await {
                        return Err(self.lose());
                    }
                    self.audit("restored", json!({"run": run, "downtime_s": ms as f64 / 1000.0, "restore_s": started.elapsed().as_secs_f64()})).await;
                }
                Ok(())
            }
            Err(mut e) => {
                if restoring {
                    self.progress.sla_missed = true;
                }
                if capped {
                    e.push_str(&format!(
                        " (cut short: production may stay down only the {:.1}s the run reserved)",
                        self.record.reserved_ms as f64 / 1000.0
                    ));
                }
                self.audit("step_failed", json!({"run": run, "step": index + 1, "action": step.action.kind(), "error": e, "timeout_s": timeout.as_secs_f64()})).await;
                Err(e)
            }
        }
    }

    async fn audit(&self, event: &'static str, details: serde_json::Value) {
        let app = self.app.clone();
        let (intent, pb) = (self.intent.id, self.record.playbook.clone());
        blocking(move || crate::audit::record(&app, event, Some(intent), Some(&pb), details)).await
    }

    /// Records progress under the fence; false when the fence no longer holds (a store
    /// error is logged and counts as held: the settle checks again).
    async fn save_progress(&self, step: i64) -> bool {
        let app = self.app.clone();
        let (run, down_since) = (self.record.id, self.progress.down_since);
        let fence = self.fence.clone();
        let r = blocking(move || {
            app.store()?
                .run_progress(run, step, down_since, &fence, app.clock.now_ms())
        })
        .await;
        r.unwrap_or_else(|e| {
            tracing::warn!("cannot record progress of run {run}: {e}");
            true
        })
    }

    /// Marks the run lost: nothing more runs or is written for it.
    fn lose(&mut self) -> String {
        self.lost = true;
        "the run's lease was lost (another vigil took it over); stopped".to_string()
    }

    /// The final status, note, audit event and downtime (ms) an ending comes to.
    fn conclude(&self, ending: Ending) -> (IntentStatus, String, &'static str, i64) {
        let mut downtime_ms = self.progress.downtime_ms;
        let still_down = self.progress.down_since.is_some();
        if let Some(s) = self.progress.down_since {
            downtime_ms += self.app.clock.now_ms() - s;
        }
        // A run that stopped before its end failed, or failed to restore if still down.
        let after_stop = |mut note: String, event: &'static str| {
            let status = if still_down {
                note.push_str("; production is still down");
                IntentStatus::RestoreFailed
            } else {
                IntentStatus::Failed
            };
            (status, note, event, downtime_ms)
        };
        match ending {
            Ending::Steps { failure, steps } => {
                let (status, note) = if still_down || self.progress.sla_missed {
                    let why = if still_down {
                        "production was not restored".to_string()
                    } else {
                        let sla = self.playbook.as_ref().map(|pb| self.restore_sla(pb));
                        format!(
                            "a restore step failed or missed the restore SLA of {:.1}s",
                            sla.unwrap_or_default().as_secs_f64()
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
                    let r = &self.record;
                    (
                        IntentStatus::Done,
                        format!(
                            "playbook {} ran {steps} steps in mode {}",
                            r.playbook, r.mode
                        ),
                    )
                };
                (status, note, "playbook_end", downtime_ms)
            }
            Ending::Recovered { note } => after_stop(note, "run_recovered"),
            Ending::Abandoned { note } => after_stop(note, "playbook_end"),
        }
    }

    /// Ends the run: its downtime and final status, the flag cleared after a successful
    /// escalated run, metrics, budget and lock settled with the intent's status and the audit
    /// entry in one transaction, and an alert when production was not restored. The first
    /// ending of a run wins: when it had already ended, this one is audited as
    /// `run_end_ignored` and changes nothing else. Returns whether this ending was the one.
    pub(super) async fn settle(self, ending: Ending) -> Result<bool, StoreError> {
        let (status, note, event, downtime_ms) = self.conclude(ending);
        if self.lost {
            super::lease_lost(
                &self.app,
                &self.fence.lease,
                Some(&self.record.playbook),
                event,
            )
            .await;
            return Ok(false);
        }
        let Run {
            app,
            intent,
            playbook,
            record,
            escalated,
            fence,
            ..
        } = self;
        let escalate_on = playbook.and_then(|pb| pb.mode.escalate_on);
        let (app2, fence2, playbook2) = (app.clone(), fence.clone(), record.playbook.clone());
        let settled = blocking(move || -> Result<Option<bool>, StoreError> {
            let store = app.store()?;
            let audit = app.audit()?;
            // What follows from the run comes first, so whoever sees the intent ended sees it
            // too; a run another ending got to first has nothing to follow.
            let open = store.run(record.id)?.is_some_and(|r| r.ended_at.is_none())
                && store.check_fence(&fence, app.clock.now_ms())?;
            if open {
                app.metrics
                    .observe_run(&record.playbook, record.started_at, app.clock.now_ms());
                app.metrics.playbook_runs_total.inc(&[
                    &record.playbook,
                    status.as_str(),
                    &record.mode,
                ]);
                if status == IntentStatus::Done && escalated {
                    if let Some(kind) = &escalate_on {
                        let why = format!(
                            "escalated run of playbook {} succeeded (intent {})",
                            record.playbook, intent.id
                        );
                        // The run succeeded either way; a flag left armed only escalates once
                        // more.
                        if let Err(e) = crate::escalation::clear(&app, kind, &why) {
                            tracing::error!("cannot clear escalation {kind} after {why}: {e}");
                        }
                    }
                }
            }
            let entry = audit.entry(
                event,
                Some(intent.id),
                Some(&record.playbook),
                json!({"run": record.id, "result": status, "mode": record.mode, "note": note,
                       "downtime_s": downtime_ms as f64 / 1000.0}),
            );
            let end = RunEnd {
                run_id: record.id,
                downtime_ms,
                intent_id: intent.id,
                status,
                note: &note,
                now_ms: app.clock.now_ms(),
                fence: Some(&fence),
            };
            match store.settle_run(&end, &entry)? {
                Settled::Ended => {}
                Settled::AlreadyEnded => {
                    ignored(&audit, &record, &entry);
                    return Ok(Some(false));
                }
                Settled::LeaseLost => return Ok(None),
            }
            audit.write_file(&entry);
            if status == IntentStatus::RestoreFailed {
                raise_restore_alert(&app, &record.playbook, intent.id, &note);
            }
            Ok(Some(true))
        })
        .await;
        match settled? {
            Some(ended) => Ok(ended),
            None => {
                super::lease_lost(&app2, &fence2.lease, Some(&playbook2), event).await;
                Ok(false)
            }
        }
    }
}

/// How often a running step checks that its run is still its holder's: a few times per
/// lease, so a lost run is stopped well before another could have done much under it.
fn fence_poll(app: &App) -> Duration {
    let lease = app.config.orchestrator.settings.lease.0;
    (lease / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
}

/// Returns once `fence` no longer holds (never, while it does).
async fn watch_fence(app: &Arc<App>, fence: &Fence) {
    let every = fence_poll(app);
    loop {
        tokio::time::sleep(every).await;
        let (a, f) = (app.clone(), fence.clone());
        let holds = blocking(move || a.store()?.check_fence(&f, a.clock.now_ms())).await;
        if let Ok(false) = holds {
            return;
        }
    }
}

/// Audits an ending that came after the run had already ended.
fn ignored(audit: &Audit, record: &RunRecord, entry: &crate::audit::AuditEntry) {
    tracing::warn!(
        run = record.id,
        "run {} of playbook {} had already ended; its {} is ignored",
        record.id,
        record.playbook,
        entry.event
    );
    audit.record(
        "run_end_ignored",
        entry.intent,
        Some(&record.playbook),
        json!({"run": record.id, "ignored": entry.event, "details": entry.details}),
    );
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
