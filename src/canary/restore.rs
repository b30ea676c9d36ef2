//! Production, as the quiesced path stops it and puts it back: a systemd unit (through
//! `[orchestrator] systemctl`) or a unit the daemon's supervisor runs. Restoring means started
//! *and healthy* within the restore SLA: the health URL answers 2xx on production's port, or,
//! without a port, the supervised unit is running / `systemctl is-active` says so.

use super::config::{CanaryConfig, Production};
use crate::app::App;
use crate::intent::{queue, NewIntent};
use crate::supervisor::{Supervisor, UnitState};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Stops for systemd get this long (a unit's own stop timeout governs the rest).
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(120);

fn supervisor(app: &App, unit: &str) -> Result<Arc<Supervisor>, String> {
    app.supervisor.get().cloned().ok_or_else(|| {
        format!("production unit {unit:?} is supervised by the daemon, and no daemon supervises it here; run the canary through the running daemon (`vigil run`)")
    })
}

async fn systemctl(app: &App, verb: &str, unit: &str, timeout: Duration) -> Result<(), String> {
    let mut argv = app.config.orchestrator.settings.systemctl.clone();
    argv.push(verb.into());
    argv.push(unit.into());
    let out = crate::exec::Cmd::new(argv.clone(), timeout)
        .run()
        .await
        .map_err(|e| e.to_string())?;
    if out.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` {}: {}",
            argv.join(" "),
            out.describe(),
            out.stderr.trim()
        ))
    }
}

/// Whether production can be controlled from here (the supervisor of a `unit` runs in this
/// process); the reason when not.
pub fn controllable(app: &App, p: &Production) -> Result<(), String> {
    match &p.unit {
        Some(u) => supervisor(app, u).map(drop),
        None => Ok(()),
    }
}

/// Stops production; returns once it is down.
pub async fn stop(app: &App, p: &Production) -> Result<(), String> {
    match (&p.systemd, &p.unit) {
        (Some(s), _) => systemctl(app, "stop", s, SYSTEMCTL_TIMEOUT).await,
        (_, Some(u)) => supervisor(app, u)?.stop(u).await.map_err(|e| e.to_string()),
        _ => Err("production names neither systemd nor unit".into()),
    }
}

/// Starts production and waits until it is healthy, within `sla` of this call; Ok with how
/// long that took.
pub async fn restore(
    app: &App,
    http: &reqwest::Client,
    cfg: &CanaryConfig,
    sla: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let p = &cfg.production;
    let in_time = |what: String| format!("{what} (restore SLA {})", crate::config::human(sla));
    let left = || sla.saturating_sub(started.elapsed());
    match (&p.systemd, &p.unit) {
        (Some(s), _) => systemctl(app, "start", s, sla).await.map_err(in_time)?,
        (_, Some(u)) => {
            let sup = supervisor(app, u)?;
            sup.start_unit(u).await.map_err(|e| e.to_string())?;
            let running = sup.wait_for(u, |s| {
                matches!(s.state, UnitState::Running | UnitState::Adopted)
            });
            match tokio::time::timeout(left(), running).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => {
                    let state = sup
                        .status(u)
                        .map(|s| s.state.to_string())
                        .unwrap_or_default();
                    return Err(in_time(format!("unit {u} is {state}, not running")));
                }
            }
        }
        _ => return Err("production names neither systemd nor unit".into()),
    }
    match p.port {
        Some(port) => {
            let url = cfg.health.http.replace("{port}", &port.to_string());
            super::health::wait_healthy(http, &url, left(), cfg.health.interval.0, None)
                .await
                .map_err(|e| in_time(format!("production {e}")))?;
        }
        None => {
            if let Some(s) = &p.systemd {
                // Without a port, systemd's word: active.
                loop {
                    if systemctl(app, "is-active", s, left().max(Duration::from_millis(1)))
                        .await
                        .is_ok()
                    {
                        break;
                    }
                    if left().is_zero() {
                        return Err(in_time(format!("{s} is not active")));
                    }
                    tokio::time::sleep(cfg.health.interval.0.min(left())).await;
                }
            }
        }
    }
    Ok(started.elapsed())
}

/// The restore failure counted and raised as a critical intent, as a playbook's is.
pub(super) fn alert(app: &App, canary: &str, run: Option<i64>, why: &str) {
    app.metrics
        .restore_failures_total
        .inc(&[&format!("canary:{canary}")]);
    let mut data = crate::event::Data::new();
    data.insert("canary".into(), canary.into());
    data.insert("run".into(), run.unwrap_or_default().into());
    let alert = NewIntent {
        intent_type: "alert_restore_failed".into(),
        priority: 10,
        reason: format!("canary {canary} did not restore production: {why}"),
        data,
        dedup_key: Some(format!("canary:{canary}:{}", run.unwrap_or_default())),
        origin: "canary".into(),
    };
    if let Err(e) = queue::submit(app, &alert) {
        tracing::error!("cannot raise the restore alert for canary {canary}: {e}");
    }
}
