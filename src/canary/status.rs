//! What `GET /api/canaries`, `vigil canary list` and the dashboard show of each canary: its
//! last run and the time until a quiesced run is allowed again.

use super::CanaryConfig;
use crate::app::App;
use crate::orchestrator::gates::window_tz;
use crate::orchestrator::window;
use crate::store::{CanaryStore, StoreError};
use serde::Serialize;

/// Seconds until canary `name` may take the quiesced path again: the cooldown left, or the
/// time until its window opens, whichever is longer (blocking: reads the store).
pub fn next_allowed_in(app: &App, name: &str, cfg: &CanaryConfig) -> Result<f64, StoreError> {
    if !cfg.may_quiesce() {
        return Ok(0.0);
    }
    let now = app.clock.now();
    let now_ms = now.as_millisecond();
    let cooldown = match (cfg.cooldown, app.store()?.last_quiesced(name)?) {
        (Some(c), Some(last)) => (last.min(now_ms) + c.as_ms() - now_ms).max(0),
        _ => 0,
    };
    let window = cfg.window.as_ref().map_or(0, |w| {
        let span = app.config.orchestrator.windows[w].at;
        window::opens_in(
            span,
            window_tz(app, w),
            now.checked_add(jiff::SignedDuration::from_millis(cooldown))
                .unwrap_or(now),
        )
        .as_millis()
        .max(0) as i64
    });
    Ok((cooldown + window) as f64 / 1000.0)
}

/// A canary's last run, as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub result: Option<String>,
    pub mode: String,
    pub path: Option<String>,
    pub port: Option<u16>,
    pub duration_s: f64,
    pub downtime_s: f64,
    pub reason: Option<String>,
}

/// One canary in `GET /api/canaries`.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryStatus {
    pub name: String,
    pub last_run: Option<LastRun>,
    /// Seconds until a quiesced run is allowed again (cooldown and window); 0 now.
    pub next_allowed_in_s: f64,
}

/// Every configured canary with its last run (blocking).
pub fn list(app: &App) -> Result<Vec<CanaryStatus>, StoreError> {
    let store = app.store()?;
    let mut out = Vec::new();
    for (name, cfg) in &app.config.canaries {
        let last = store.canary_runs(Some(name), 1)?.into_iter().next();
        let next = next_allowed_in(app, name, cfg)?;
        app.metrics.canary_cooldown_seconds.set(&[name], next);
        out.push(CanaryStatus {
            name: name.clone(),
            last_run: last.map(|r| LastRun {
                result: r.result,
                mode: r.mode,
                path: r.path,
                port: r.port,
                duration_s: r.duration_ms as f64 / 1000.0,
                downtime_s: r.downtime_ms as f64 / 1000.0,
                reason: r.reason,
            }),
            next_allowed_in_s: next,
        });
    }
    Ok(out)
}
