//! Restores a dead daemon left pending: production stopped for a quiesced canary when the
//! daemon died. The next start finishes them before anything else.

use super::{blocking, candidate, lock_name, restore, Outcome};
use crate::app::App;
use crate::store::{CanaryEnd, CanaryStore, RunStore};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Finishes the restores a dead daemon left pending: kills the candidate it left running,
/// starts production and checks it healthy within the restore SLA (from now), charges the
/// downtime and ends the run. Called once at daemon start.
pub async fn finish_pending(app: Arc<App>) {
    let a = app.clone();
    let pending = match blocking(move || a.store()?.pending_restores()).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("cannot read pending canary restores: {e}");
            return;
        }
    };
    let http = crate::http::client(crate::http::DEFAULT_TIMEOUT);
    for run in pending {
        let started = Instant::now();
        let mark = candidate::mark(&run.canary, run.id);
        let killed = blocking({
            let mark = mark.clone();
            move || crate::orchestrator::orphans::kill_marked(&mark)
        })
        .await;
        let detail = |restored: bool| json!({"canary": run.canary, "canary_run": run.id, "after_restart": true, "candidate_killed": killed, "restored": restored});
        let (result, reason, restore_s) = match app.config.canaries.get(&run.canary) {
            None => (
                Outcome::RestoreFailed,
                format!("vigil stopped while production was down for canary {}, which is no longer configured: restore production by hand", run.canary),
                None,
            ),
            Some(cfg) => {
                if cfg.production.unit.is_some() {
                    // The supervisor starts with the daemon; wait for it (bounded).
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while app.supervisor.get().is_none() && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                let sla = cfg.restore_sla(&app.config.orchestrator);
                match restore::restore(&app, &http, cfg, sla).await {
                    Ok(_) => (
                        Outcome::Failed,
                        "vigil stopped while production was down for this canary; production was restored at the next start".to_string(),
                        Some(started.elapsed()),
                    ),
                    Err(e) => (
                        Outcome::RestoreFailed,
                        format!("vigil stopped while production was down for this canary, and the next start could not restore it: {e}"),
                        None,
                    ),
                }
            }
        };
        let now = app.clock.now_ms();
        let downtime_ms = run.down_since.map_or(0, |d| (now - d).max(0));
        let a = app.clone();
        let audit = if restore_s.is_some() {
            let mut d = detail(true);
            d["restore_s"] = json!(restore_s.map(|r| r.as_secs_f64()));
            d["downtime_s"] = json!(downtime_ms as f64 / 1000.0);
            Some(d)
        } else {
            None
        };
        let end = CanaryEnd {
            result: result.as_str().into(),
            reason: reason.clone(),
            duration_ms: (now - run.started_at).max(0),
            downtime_ms,
            report: json!({"result": result.as_str(), "reason": reason, "after_restart": true}),
            now_ms: now,
        };
        let (id, canary) = (run.id, run.canary.clone());
        blocking(move || {
            if let Some(d) = audit {
                crate::audit::record(&a, "production_restored", None, None, d);
            }
            crate::audit::record(&a, "canary_end", None, None, json!({"canary": canary, "canary_run": id, "result": result.as_str(), "reason": reason}));
            if let Ok(store) = a.store() {
                if let Err(e) = store.end_canary(id, &end) {
                    tracing::error!("cannot end canary run {id}: {e}");
                }
                let _ = store.release_lock(&lock_name(&canary), &mark);
            }
            a.metrics.canary_runs_total.inc(&[&canary, result.as_str(), "canary"]);
            a.changes.publish(
                "canary",
                json!({"canary": canary, "result": result.as_str(), "mode": "canary"}),
            );
            a.metrics.canary_downtime_seconds_total.add(&[&canary], downtime_ms as f64 / 1000.0);
            if result == Outcome::RestoreFailed {
                restore::alert(&a, &canary, Some(id), &reason);
            }
        })
        .await;
    }
}
