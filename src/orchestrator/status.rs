//! What `vigil status` shows of the orchestrator: per playbook its mode, cooldown and runs in
//! the last 24 h; escalation flags; each budget tonight; locks; intents by state. The same
//! numbers feed the gauges.

use super::gates;
use crate::app::App;
use crate::clock::rfc3339_ms;
use crate::escalation::{self, FlagStatus};
use crate::store::{EscalationStore, IntentStore, RunStore, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;

const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Serialize)]
pub struct OrchestratorStatus {
    pub playbooks: Vec<PlaybookStatus>,
    pub flags: Vec<FlagStatus>,
    pub budgets: Vec<BudgetStatus>,
    pub locks: Vec<LockStatus>,
    pub intents: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlaybookStatus {
    pub name: String,
    pub on: String,
    /// The mode it would run in now.
    pub mode: String,
    pub escalated: bool,
    pub cooldown_remaining_s: f64,
    pub runs_24h: usize,
    pub last_result: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BudgetStatus {
    pub name: String,
    /// The window day "tonight" refers to.
    pub day: String,
    pub limit_s: f64,
    pub used_s: f64,
    pub reserved_s: f64,
    pub remaining_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockStatus {
    pub name: String,
    pub holder: String,
    pub acquired_at: String,
    pub expires_in_s: f64,
}

pub fn collect(app: &App) -> Result<OrchestratorStatus, StoreError> {
    let store = app.store()?;
    let now = app.clock.now();
    let now_ms = now.as_millisecond();
    let cfg = &app.config.orchestrator;
    let flags = store.flags()?;
    let mut playbooks = Vec::new();
    for pb in cfg.playbooks.values() {
        let runs = store.runs(
            Some(&pb.name),
            now_ms - DAY_MS.max(pb.cooldown.map_or(0, |c| c.as_millis() as i64)),
            false,
        )?;
        let (mode, flag) = gates::mode_for(pb, &flags, now_ms);
        let cooldown_remaining = match (pb.cooldown, runs.first()) {
            (Some(c), Some(last)) => (last.started_at + c.as_millis() as i64 - now_ms).max(0),
            _ => 0,
        };
        playbooks.push(PlaybookStatus {
            name: pb.name.clone(),
            on: pb.on.join(","),
            mode,
            escalated: flag.is_some(),
            cooldown_remaining_s: cooldown_remaining as f64 / 1000.0,
            runs_24h: runs
                .iter()
                .filter(|r| r.started_at > now_ms - DAY_MS)
                .count(),
            last_result: runs
                .first()
                .map(|r| r.result.clone().unwrap_or_else(|| "running".into())),
        });
    }
    let mut budgets = Vec::new();
    for (name, b) in &cfg.budgets {
        let day = cfg
            .playbooks
            .values()
            .find(|p| p.budget.as_deref() == Some(name.as_str()))
            .map(|p| gates::budget_day(app, p, now))
            .unwrap_or_else(|| {
                now.to_zoned(app.config.timezone.0.clone())
                    .date()
                    .to_string()
            });
        let u = store.budget_usage(name, &day)?;
        let limit = b.seconds as f64;
        let used = u.used_ms as f64 / 1000.0;
        let reserved = u.reserved_ms as f64 / 1000.0;
        budgets.push(BudgetStatus {
            name: name.clone(),
            day,
            limit_s: limit,
            used_s: used,
            reserved_s: reserved,
            remaining_s: (limit - used - reserved).max(0.0),
        });
    }
    let locks = store
        .locks()?
        .into_iter()
        .filter(|l| l.expires_at > now_ms)
        .map(|l| LockStatus {
            name: l.name,
            holder: l.holder,
            acquired_at: rfc3339_ms(l.acquired_at),
            expires_in_s: (l.expires_at - now_ms) as f64 / 1000.0,
        })
        .collect();
    let intents = store
        .intent_counts()?
        .into_iter()
        .map(|(s, n)| (s.to_string(), n))
        .collect();
    Ok(OrchestratorStatus {
        playbooks,
        flags: escalation::status(app)?,
        budgets,
        locks,
        intents,
    })
}

/// Sets the gauges from the store (they change with time, not only with events).
pub fn refresh_metrics(app: &App) -> Result<(), StoreError> {
    let s = collect(app)?;
    let m = &app.metrics;
    m.set_intents_by_status(&s.intents);
    for b in &s.budgets {
        m.budget_seconds_remaining.set(&[&b.name], b.remaining_s);
    }
    for p in &s.playbooks {
        m.init_playbook(&p.name);
        m.cooldown_seconds.set(&[&p.name], p.cooldown_remaining_s);
    }
    for f in &s.flags {
        m.escalation_flag
            .set(&[&f.kind], if f.armed { 1.0 } else { 0.0 });
    }
    Ok(())
}
