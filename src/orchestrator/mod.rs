//! The orchestrator: the one component that acts. It takes pending intents by priority then
//! age, claims each with a lease, maps it to a playbook, runs the playbook only when its gates
//! pass, and ends every intent in exactly one of done, denied, failed, restore_failed, expired
//! or unmatched. A claim whose holder died is recovered: never silently lost, never run twice.
//!
//! Here: claiming and deciding. `run` is one run from start to settle, `recovery` takes over
//! stopped runs, `plan` is the dry run, `task` the loop the daemon spawns.

pub mod actions;
pub mod api;
pub mod config;
pub mod gates;
pub mod orphans;
pub mod plan;
mod recovery;
pub mod run;
pub mod status;
mod task;
pub mod window;

pub use plan::{plan, Plan};
pub use task::{prune, run};

use crate::app::App;
use crate::intent::IntentStatus;
use crate::store::{Claim, IntentStore, LeaseFence, RunStore, StoreError};
use gates::Decision;
use run::Run;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Evaluate gates and log what would run; claim, reserve, record and run nothing.
    pub dry_run: bool,
}

pub struct Orchestrator {
    app: Arc<App>,
    /// `HOST:PID:N`: the config's `host`, so hosts sharing a store (and a machine, in tests)
    /// tell their claims apart, and recovery takes over only its own host's.
    holder: String,
    http: reqwest::Client,
    /// Intents this orchestrator's workers are handling now. Recovery treats its own running
    /// intents that are not in here as leftovers (of a handler that failed on a store error).
    inflight: std::sync::Mutex<HashSet<i64>>,
    /// Claiming (claim + note in `inflight`) takes it shared; recovery's scan exclusively, so
    /// it never sees an intent claimed but not yet noted.
    claiming: tokio::sync::RwLock<()>,
    /// Signalled when a run of this orchestrator released a lock, so workers take the
    /// intents deferred for it at once (others' releases are seen on the idle poll).
    lock_freed: tokio::sync::Notify,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task panicked")
}

impl Orchestrator {
    pub fn new(app: Arc<App>) -> Self {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let holder = format!("{}:{}:{}", app.config.host(), std::process::id(), n);
        Self {
            app,
            holder,
            http: crate::http::client(crate::http::DEFAULT_TIMEOUT),
            inflight: std::sync::Mutex::new(HashSet::new()),
            claiming: tokio::sync::RwLock::new(()),
            lock_freed: tokio::sync::Notify::new(),
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
        let ttl = self.app.config.orchestrator.settings.intent_ttl.as_ms();
        let claimed = blocking(move || {
            let now = app.clock.now_ms();
            app.store()?.claim_intent(&holder, lease, ttl, now)
        })
        .await?;
        let Some(intent) = claimed else {
            return Ok(false);
        };
        let _noted = Inflight::note(&self.inflight, intent.id);
        drop(claiming);
        let id = intent.id;
        if let Err(e) = self.handle(intent).await {
            // Leave nothing half-done: settle its run (budget and lock) and end the intent.
            let note = format!("store error while handling it: {e}");
            if !matches!(recovery::abandon(self, id, note.clone()).await, Ok(true)) {
                let app = self.app.clone();
                let _ = blocking(move || {
                    app.store()?.set_intent_status(
                        id,
                        IntentStatus::Failed,
                        Some(&note),
                        app.clock.now_ms(),
                    )
                })
                .await;
            }
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

    /// Decides and, when the gates pass, runs the playbook for a claimed intent. Every write
    /// for it is fenced by the claim's lease: once another holder took it over, this one
    /// audits `lease_lost` and writes nothing more.
    async fn handle(&self, claim: Claim) -> Result<(), StoreError> {
        let Claim { intent, epoch } = claim;
        let lease = LeaseFence {
            intent: intent.id,
            holder: self.holder.clone(),
            epoch,
        };
        let app = self.app.clone();
        let holder = self.holder.clone();
        let (i2, l2) = (intent.clone(), lease.clone());
        let decision =
            blocking(move || gates::evaluate_fenced(&app, &i2, &holder, Some(&l2), true)).await?;
        let app = self.app.clone();
        let id = intent.id;
        match decision {
            Decision::Expired { mut reason } => {
                // One that waited for a lock says so: why it never ran.
                if let Some(waited) = intent.note.as_deref().filter(|n| n.starts_with(DEFERRED)) {
                    reason = format!("{reason}; {waited}");
                }
                self.end(
                    &lease,
                    IntentStatus::Expired,
                    reason.clone(),
                    None,
                    "intent_expired",
                    json!({"reason": reason}),
                )
                .await
            }
            Decision::LeaseLost => {
                lease_lost(&app, &lease, None, "claim").await;
                Ok(())
            }
            Decision::Deferred {
                playbook,
                mode,
                lock,
                reason,
            } => {
                let note = format!("{DEFERRED} {lock:?}: {reason}");
                let (a, l, n) = (app.clone(), lease.clone(), note.clone());
                let deferred =
                    blocking(move || a.store()?.defer_intent(&l, &lock, &n, a.clock.now_ms()))
                        .await?;
                match deferred {
                    None => lease_lost(&app, &lease, Some(&playbook), "deferral").await,
                    Some(true) => {
                        let details = json!({"reason": reason, "mode": mode});
                        blocking(move || {
                            crate::audit::record(
                                &app,
                                "intent_deferred",
                                Some(id),
                                Some(&playbook),
                                details,
                            )
                        })
                        .await
                    }
                    // Deferred before: audited then, not once per retry.
                    Some(false) => {}
                }
                Ok(())
            }
            Decision::Unmatched => {
                let note = format!("no playbook matches intent type {:?}", intent.intent_type);
                self.end(
                    &lease,
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
                    &lease,
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
                let had_lock = run.lock_name.is_some();
                let mut run = Run::start(
                    app,
                    self.http.clone(),
                    intent,
                    pb,
                    run,
                    escalation.is_some(),
                    lease,
                );
                let ending = run.execute().await;
                let r = run.settle(ending).await.map(drop);
                if had_lock {
                    self.lock_freed.notify_waiters();
                }
                r
            }
        }
    }

    /// Ends an intent no run was started for (expired, unmatched, denied), while its lease
    /// holds.
    async fn end(
        &self,
        lease: &LeaseFence,
        status: IntentStatus,
        note: String,
        playbook: Option<&str>,
        event: &'static str,
        details: serde_json::Value,
    ) -> Result<(), StoreError> {
        let app = self.app.clone();
        let playbook = playbook.map(str::to_string);
        let l = lease.clone();
        let ended = blocking(move || {
            let ended =
                app.store()?
                    .set_intent_status_fenced(&l, status, &note, app.clock.now_ms())?;
            if ended {
                crate::audit::record(&app, event, Some(l.intent), playbook.as_deref(), details);
            }
            Ok::<_, StoreError>(ended)
        })
        .await?;
        if !ended {
            lease_lost(&self.app, lease, None, event).await;
        }
        Ok(())
    }
}

/// How a deferred intent's note begins (`... "gpu0": Lock "gpu0" held by ...`).
const DEFERRED: &str = "deferred: waiting for lock";

/// Audits that `lease` was lost before `what` could be written: another holder took the
/// intent over (or its lease ran out while this one was stopped). Nothing else is written.
pub(crate) async fn lease_lost(
    app: &Arc<App>,
    lease: &LeaseFence,
    playbook: Option<&str>,
    what: &str,
) {
    tracing::warn!(
        intent = lease.intent,
        "lost the lease on intent {} (holder {}, epoch {}): another vigil took it over or it ran out; not writing its {what}",
        lease.intent,
        lease.holder,
        lease.epoch
    );
    let app = app.clone();
    let playbook = playbook.map(str::to_string);
    let details = json!({"holder": lease.holder, "epoch": lease.epoch, "ignored": what});
    let id = lease.intent;
    blocking(move || {
        crate::audit::record(&app, "lease_lost", Some(id), playbook.as_deref(), details)
    })
    .await
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
