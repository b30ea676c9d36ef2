//! The orchestrator's task loop: workers that claim and handle intents, recovery every few
//! seconds, metrics, pruning and lease renewal; in a dry run, only the plan.

use super::{blocking, status, Options, Orchestrator};
use crate::app::App;
use crate::store::{AuditStore, EscalationStore, RunStore, StoreError};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const RECOVER_EVERY: Duration = Duration::from_secs(5);
const METRICS_EVERY: Duration = Duration::from_secs(5);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const IDLE_POLL: Duration = Duration::from_secs(1);

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
                if !crate::outage::confirm(&app).await {
                    tracing::warn!("cannot refresh orchestrator metrics: {e}");
                }
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
                    Err(e) if crate::outage::confirm(&app).await => {
                        tracing::debug!("cannot prune the orchestrator's state: {e}")
                    }
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
                    // While the store is away nothing can be recovered; said once, by the outage.
                    Err(e) if crate::outage::confirm(&app).await => {
                        tracing::debug!("recovery: {e}")
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

/// Takes intents one at a time until shutdown; wakes when one is stored or a run of this
/// orchestrator released a lock (intents deferred for it can run), or every second for what
/// other processes did. Intents waiting for a held lock are not claimed, so this never spins.
async fn worker(orch: Arc<Orchestrator>, mut shutdown: watch::Receiver<bool>) {
    let mut stored = orch.app.stored.subscribe();
    while !*shutdown.borrow() {
        let worked = match orch.step().await {
            Ok(w) => w,
            // While the store is away nothing is claimed, so nothing acts: said once, by the
            // outage, not every second by every worker.
            Err(e) if crate::outage::confirm(&orch.app).await => {
                tracing::debug!("orchestrator: {e}; retrying");
                false
            }
            Err(e) => {
                tracing::error!("orchestrator: {e}; retrying");
                false
            }
        };
        if !worked {
            tokio::select! {
                _ = stored.recv() => {}
                _ = orch.lock_freed.notified() => {}
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
    let store = app.store()?;
    Ok(store.prune_symptoms(before)? + store.prune_runs(before)? + store.prune_audit(before)?)
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
            if !crate::outage::confirm(&app).await {
                tracing::warn!("cannot renew leases: {e}");
            }
        }
    }
}
