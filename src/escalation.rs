//! Symptoms and escalation. A rolling ledger of symptoms by kind; when a kind reaches the
//! threshold within the window (default 3 in 24 h) its flag is armed with a TTL (default 4 h).
//! An armed flag switches the playbooks that name it to their escalated mode; a successful
//! escalated run clears it, and symptoms before the clear stop counting.

use crate::app::App;
use crate::clock::{ms_as_rfc3339, rfc3339_ms};
use crate::event::Data;
use crate::store::{EscalationStore, StoreError};
use serde::Serialize;
use serde_json::json;

/// One recorded symptom.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Symptom {
    pub id: i64,
    pub kind: String,
    /// When it was recorded (ms since the epoch; RFC 3339 in JSON).
    #[serde(serialize_with = "ms_as_rfc3339::ser")]
    pub ts: i64,
    pub meta: Data,
    /// The host that saw it ('' before hosts).
    pub host: String,
}

/// How symptoms arm flags (from `[escalation]`).
#[derive(Debug, Clone, Copy)]
pub struct SymptomPolicy {
    /// Symptoms older than this (ms) stop counting.
    pub window_ms: i64,
    /// Symptoms in the window that arm the flag.
    pub threshold: u32,
    /// How long (ms) an armed flag stays armed unless cleared.
    pub ttl_ms: i64,
    /// Whose symptoms count, and whose flag they arm: this host's or the fleet's.
    pub scope: crate::store::Scope,
}

impl SymptomPolicy {
    /// Whether `s` counts towards `host`'s flags: every host's do in the fleet scope; in the
    /// host scope its own and those from before hosts.
    pub fn counts(&self, s: &Symptom, host: &str) -> bool {
        self.scope == crate::store::Scope::Fleet || s.host == host || s.host.is_empty()
    }

    /// The flag this policy arms when `count` symptoms of `kind` are in the window at `now_ms`,
    /// or `None` below the threshold.
    pub fn arm(&self, kind: &str, count: u32, now_ms: i64) -> Option<Flag> {
        (count >= self.threshold).then(|| Flag {
            kind: kind.to_string(),
            reason: format!(
                "{count} {kind} in last {} (threshold: {})",
                window_words(self.window_ms),
                self.threshold
            ),
            symptom_count: count,
            armed_at: now_ms,
            expires_at: now_ms + self.ttl_ms,
            cleared_at: None,
        })
    }
}

/// "24h" rather than "1d": how people state an escalation window.
fn window_words(ms: i64) -> String {
    if ms > 0 && ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else {
        crate::config::Dur(std::time::Duration::from_millis(ms.max(0) as u64)).to_string()
    }
}

/// An escalation flag as stored. Whether it is armed is decided against the clock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flag {
    pub kind: String,
    pub reason: String,
    pub symptom_count: u32,
    #[serde(serialize_with = "ms_as_rfc3339::ser")]
    pub armed_at: i64,
    #[serde(serialize_with = "ms_as_rfc3339::ser")]
    pub expires_at: i64,
    #[serde(serialize_with = "ms_as_rfc3339::ser_opt")]
    pub cleared_at: Option<i64>,
}

impl Flag {
    /// Armed: not cleared and not expired at `now_ms`.
    pub fn is_armed(&self, now_ms: i64) -> bool {
        self.cleared_at.is_none() && now_ms < self.expires_at
    }
}

/// What recording one symptom did.
#[derive(Debug, Clone, PartialEq)]
pub struct SymptomRecorded {
    pub id: i64,
    /// Symptoms of this kind in the window (since the last clear), this one included.
    pub count: u32,
    /// Set when this symptom armed the flag.
    pub armed: Option<Flag>,
}

/// The policy of the config's `[escalation]`.
pub fn policy(app: &App) -> SymptomPolicy {
    let e = &app.config.orchestrator.escalation;
    SymptomPolicy {
        window_ms: e.window.as_ms(),
        threshold: e.threshold,
        ttl_ms: e.flag_ttl.as_ms(),
        scope: e.scope,
    }
}

/// Records a symptom (blocking); arms the flag at the threshold, with audit and metrics.
pub fn record(app: &App, kind: &str, meta: Data) -> Result<SymptomRecorded, StoreError> {
    let now = app.clock.now_ms();
    let rec = app.store()?.record_symptom(kind, &meta, now, policy(app))?;
    app.metrics.symptoms_total.inc(&[kind]);
    crate::audit::record(
        app,
        "symptom_recorded",
        None,
        None,
        json!({"kind": kind, "count": rec.count, "meta": meta}),
    );
    if let Some(flag) = &rec.armed {
        app.metrics.escalation_flag.set(&[kind], 1.0);
        tracing::warn!(kind, "escalation armed: {}", flag.reason);
        crate::audit::record(
            app,
            "escalation_armed",
            None,
            None,
            json!({"kind": kind, "reason": flag.reason, "symptom_count": flag.symptom_count,
                   "expires_at": rfc3339_ms(flag.expires_at)}),
        );
    }
    Ok(rec)
}

/// Clears a flag (blocking); returns it when it was armed.
pub fn clear(app: &App, kind: &str, why: &str) -> Result<Option<Flag>, StoreError> {
    let scope = app.config.orchestrator.escalation.scope;
    let was = app.store()?.clear_flag(kind, scope, app.clock.now_ms())?;
    app.metrics.escalation_flag.set(&[kind], 0.0);
    if was.is_some() {
        tracing::info!(kind, "escalation cleared: {why}");
        crate::audit::record(
            app,
            "escalation_cleared",
            None,
            None,
            json!({"kind": kind, "why": why}),
        );
    }
    Ok(was)
}

/// What recording a symptom of `kind` now would do, without recording it (a dry run, which
/// only reads): the symptoms of that kind the window would then hold, and the flag it would
/// arm, if any.
pub fn preview(app: &App, kind: &str) -> Result<(u32, Option<Flag>), StoreError> {
    let now = app.clock.now_ms();
    let store = app.store()?;
    let p = policy(app);
    let flag = store.flags()?.into_iter().find(|f| f.kind == kind);
    let since =
        (now - p.window_ms).max(flag.as_ref().and_then(|f| f.cleared_at).unwrap_or(i64::MIN));
    let host = app.config.host();
    let seen = store.symptoms(Some(kind), since, 100_000)?;
    let count = seen.iter().filter(|s| p.counts(s, &host)).count() as u32 + 1;
    let active = flag.is_some_and(|f| f.is_armed(now));
    Ok((
        count,
        if active {
            None
        } else {
            p.arm(kind, count, now)
        },
    ))
}

/// The armed, unexpired flag of `kind`, if any.
pub fn armed(app: &App, kind: &str) -> Result<Option<Flag>, StoreError> {
    let now = app.clock.now_ms();
    Ok(app
        .store()?
        .flags()?
        .into_iter()
        .find(|f| f.kind == kind && f.is_armed(now)))
}

/// One line of `vigil escalation status`.
#[derive(Debug, Clone, Serialize)]
pub struct FlagStatus {
    pub kind: String,
    pub armed: bool,
    /// Symptoms in the window (since the last clear) now, or when the flag was armed.
    pub symptom_count: u32,
    pub reason: Option<String>,
    pub armed_at: Option<String>,
    pub expires_at: Option<String>,
    /// Seconds until an armed flag expires.
    pub expires_in_s: Option<f64>,
}

/// Every kind with a flag or with symptoms in the window.
pub fn status(app: &App) -> Result<Vec<FlagStatus>, StoreError> {
    let now = app.clock.now_ms();
    let store = app.store()?;
    let p = policy(app);
    let host = app.config.host();
    let flags = store.flags()?;
    let counts = store.symptom_counts(now - p.window_ms)?;
    let mut kinds: Vec<String> = flags.iter().map(|f| f.kind.clone()).collect();
    kinds.extend(counts.iter().map(|(k, _)| k.clone()));
    kinds.sort();
    kinds.dedup();
    let mut out = Vec::new();
    for kind in kinds {
        let flag = flags.iter().find(|f| f.kind == kind);
        let since = flag
            .and_then(|f| f.cleared_at)
            .unwrap_or(i64::MIN)
            .max(now - p.window_ms);
        let seen = store.symptoms(Some(&kind), since, 100_000)?;
        let count = seen.iter().filter(|s| p.counts(s, &host)).count() as u32;
        match flag.filter(|f| f.is_armed(now)) {
            Some(f) => out.push(FlagStatus {
                kind,
                armed: true,
                symptom_count: f.symptom_count.max(count),
                reason: Some(f.reason.clone()),
                armed_at: Some(rfc3339_ms(f.armed_at)),
                expires_at: Some(rfc3339_ms(f.expires_at)),
                expires_in_s: Some((f.expires_at - now) as f64 / 1000.0),
            }),
            None => out.push(FlagStatus {
                kind,
                armed: false,
                symptom_count: count,
                reason: None,
                armed_at: None,
                expires_at: None,
                expires_in_s: None,
            }),
        }
    }
    Ok(out)
}
