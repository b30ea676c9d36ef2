//! Gates: what must hold before a playbook runs. Mode and window are pure functions of the
//! config, the flags and the clock; cooldown, rate limit, lock and budget are checked and
//! reserved in one store transaction (`Store::begin_run`).

use super::config::Playbook;
use super::window;
use crate::app::App;
use crate::config::human;
use crate::escalation::Flag;
use crate::intent::Intent;
use crate::store::{
    BudgetRequest, EscalationStore, LeaseFence, Refusal, RunRecord, RunRequest, RunStore,
    StoreError,
};
use serde::Serialize;
use std::time::Duration;

/// Which gate said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    Mode,
    Window,
    Budget,
    Cooldown,
    RateLimit,
    Lock,
}

impl Gate {
    /// The gate's name in metrics, notes and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Mode => "mode",
            Gate::Window => "window",
            Gate::Budget => "budget",
            Gate::Cooldown => "cooldown",
            Gate::RateLimit => "rate_limit",
            Gate::Lock => "lock",
        }
    }
}

/// A gate's no, and why in words.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Denial {
    pub gate: Gate,
    /// In words, e.g. "Cooldown active: 4.2h remaining".
    pub reason: String,
}

/// A span in milliseconds as people read it (`6.0h`); negative spans read as none.
fn span(ms: i64) -> String {
    human(Duration::from_millis(ms.max(0) as u64))
}

fn secs(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

impl From<Refusal> for Denial {
    /// The store's refusal in the words the audit trail and the intent's note show.
    fn from(r: Refusal) -> Self {
        match r {
            // Not a gate: `evaluate` turns it into `Decision::LeaseLost` before words are
            // needed; said here for completeness.
            Refusal::LeaseLost => Denial {
                gate: Gate::Lock,
                reason: "The lease on the intent was lost: another vigil took it over".into(),
            },
            Refusal::Cooldown { remaining_ms } => Denial {
                gate: Gate::Cooldown,
                reason: format!("Cooldown active: {} remaining", span(remaining_ms)),
            },
            Refusal::RateLimit {
                runs,
                max,
                within_ms,
                next_in_ms,
            } => Denial {
                gate: Gate::RateLimit,
                reason: format!(
                    "Rate limit: {runs} runs in the last {} (max {max}); next allowed in {}",
                    span(within_ms),
                    span(next_in_ms)
                ),
            },
            Refusal::Lock {
                name,
                holder,
                remaining_ms,
                acquired_at,
            } => Denial {
                gate: Gate::Lock,
                reason: if remaining_ms > 0 {
                    format!(
                        "Lock {name:?} held by {holder} for {} more",
                        span(remaining_ms)
                    )
                } else {
                    format!(
                        "Fleet lock {name:?} held by {holder} since {}, whose host {} stopped renewing it {} ago; it is not taken over while that host may still act: it frees when the host settles its run, or `vigil locks release {name}`",
                        crate::clock::rfc3339_ms(acquired_at),
                        crate::store::holder_host(&holder),
                        span(-remaining_ms)
                    )
                },
            },
            Refusal::Budget { request: b, usage } => Denial {
                gate: Gate::Budget,
                reason: format!(
                    "Budget {:?} for {} cannot cover {}: {} used, {} reserved of {}",
                    b.name,
                    b.day,
                    secs(b.want_ms),
                    secs(usage.used_ms),
                    secs(usage.reserved_ms),
                    secs(b.limit_ms)
                ),
            },
        }
    }
}

/// What the orchestrator decided for one intent.
// Short-lived and rarely moved: boxing the run would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Pending for longer than `intent_ttl`.
    Expired { reason: String },
    /// No playbook's `on` matches the intent type.
    Unmatched,
    Denied {
        playbook: String,
        mode: String,
        #[serde(flatten)]
        denial: Denial,
    },
    /// The playbook's lock is held: the intent waits (pending) until it frees or the
    /// intent's `intent_ttl` runs out. `reason` says who holds it, in words.
    Deferred {
        playbook: String,
        mode: String,
        lock: String,
        reason: String,
    },
    /// The claim's lease was taken over (or ran out) before the run was recorded: this
    /// holder must not act on the intent.
    LeaseLost,
    /// Gates passed; with `commit` the run is recorded, its lock held and its budget reserved.
    Run {
        playbook: String,
        mode: String,
        run: RunRecord,
        /// The armed flag that chose the escalated mode.
        escalation: Option<Flag>,
    },
}

/// The first playbook (by name) whose `on` matches.
pub fn playbook_for<'a>(app: &'a App, intent_type: &str) -> Option<&'a Playbook> {
    app.config
        .orchestrator
        .playbooks
        .values()
        .find(|p| p.matches(intent_type))
}

/// The mode a playbook runs in now, and the flag that escalated it.
pub fn mode_for(pb: &Playbook, flags: &[Flag], now_ms: i64) -> (String, Option<Flag>) {
    let flag = pb
        .mode
        .escalate_on
        .as_ref()
        .and_then(|k| flags.iter().find(|f| &f.kind == k && f.is_armed(now_ms)));
    match flag {
        Some(f) => (pb.mode.escalated.clone(), Some(f.clone())),
        None => (pb.mode.default.clone(), None),
    }
}

/// The time zone a window is read in.
pub fn window_tz<'a>(app: &'a App, name: &str) -> &'a jiff::tz::TimeZone {
    app.config
        .orchestrator
        .windows
        .get(name)
        .and_then(|w| w.timezone.as_ref())
        .map_or(&app.config.timezone.0, |tz| &tz.0)
}

/// The day a playbook's downtime is charged to: its window's day, else the local date.
pub fn budget_day(app: &App, pb: &Playbook, now: jiff::Timestamp) -> String {
    match pb
        .window
        .as_ref()
        .and_then(|w| Some((w, app.config.orchestrator.windows.get(w)?)))
    {
        Some((name, w)) => window::window_day(w.at, window_tz(app, name), now).to_string(),
        None => now
            .to_zoned(app.config.timezone.0.clone())
            .date()
            .to_string(),
    }
}

/// Evaluates every gate for `intent` (blocking). With `commit` a passing run is recorded and
/// its lock and budget taken; without, nothing changes (dry run).
pub fn evaluate(
    app: &App,
    intent: &Intent,
    holder: &str,
    commit: bool,
) -> Result<Decision, StoreError> {
    evaluate_fenced(app, intent, holder, None, commit)
}

/// `evaluate` for a claimed intent: the run is recorded only while `lease` holds, checked in
/// the same transaction (`Decision::LeaseLost` when it does not).
pub fn evaluate_fenced(
    app: &App,
    intent: &Intent,
    holder: &str,
    lease: Option<&LeaseFence>,
    commit: bool,
) -> Result<Decision, StoreError> {
    let settings = &app.config.orchestrator.settings;
    let now = app.clock.now();
    let now_ms = now.as_millisecond();
    if now_ms - intent.created_at > settings.intent_ttl.as_ms() {
        return Ok(Decision::Expired {
            reason: format!(
                "pending for {} without being run (intent_ttl {})",
                human(Duration::from_millis((now_ms - intent.created_at) as u64)),
                settings.intent_ttl
            ),
        });
    }
    let Some(pb) = playbook_for(app, &intent.intent_type) else {
        return Ok(Decision::Unmatched);
    };
    let store = app.store()?;
    let (mode, escalation) = mode_for(pb, &store.flags()?, now_ms);
    let denied = |denial: Denial| {
        Ok(Decision::Denied {
            playbook: pb.name.clone(),
            mode: mode.clone(),
            denial,
        })
    };
    if pb.steps_for(&pb.steps, &mode).next().is_none() {
        return denied(Denial {
            gate: Gate::Mode,
            reason: format!("Mode {mode:?} has no steps in playbook {}", pb.name),
        });
    }
    if let Some(name) = &pb.window {
        let w = &app.config.orchestrator.windows[name];
        let tz = window_tz(app, name);
        if !window::contains(w.at, tz, now) {
            let opens = window::opens_in(w.at, tz, now);
            return denied(Denial {
                gate: Gate::Window,
                reason: format!(
                    "Outside maintenance window {name} ({} {}): opens in {}",
                    w.at,
                    tz.iana_name().unwrap_or("local"),
                    human(opens.unsigned_abs())
                ),
            });
        }
    }
    let budget = match (&pb.budget, pb.has_downtime(&mode)) {
        (Some(name), true) => Some(BudgetRequest {
            name: name.clone(),
            day: budget_day(app, pb, now),
            limit_ms: app.config.orchestrator.budgets[name].seconds as i64 * 1000,
            want_ms: pb.expected_downtime.as_millis() as i64,
            scope: app.config.orchestrator.budgets[name].scope,
        }),
        _ => None,
    };
    let req = RunRequest {
        intent_id: intent.id,
        playbook: pb.name.clone(),
        mode: mode.clone(),
        // Per run, not per orchestrator: its own workers must exclude each other too.
        holder: format!("{holder}/{}", intent.id),
        cooldown_ms: pb.cooldown.map(|d| d.as_millis() as i64),
        cooldown_scope: pb.cooldown_scope,
        max_runs: pb.max_runs.map(|m| (m.count, m.within.as_ms())),
        max_runs_scope: pb.max_runs.map(|m| m.scope).unwrap_or_default(),
        lock: pb.lock.clone(),
        lock_scope: pb.lock_scope,
        lease_ms: settings.lease.as_ms(),
        budget,
        lease: lease.cloned(),
    };
    Ok(match store.begin_run(&req, now_ms, commit)? {
        Ok(run) => Decision::Run {
            playbook: pb.name.clone(),
            mode,
            run,
            escalation,
        },
        Err(Refusal::LeaseLost) => Decision::LeaseLost,
        // Contention is not a reason to drop the intent: it waits for the lock.
        Err(Refusal::Lock {
            name,
            holder,
            remaining_ms,
            acquired_at,
        }) => Decision::Deferred {
            playbook: pb.name.clone(),
            mode,
            lock: name.clone(),
            reason: Denial::from(Refusal::Lock {
                name,
                holder,
                remaining_ms,
                acquired_at,
            })
            .reason,
        },
        Err(refusal) => return denied(refusal.into()),
    })
}
