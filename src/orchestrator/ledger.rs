//! The orchestrator's durable state and the SQL behind it: symptoms and escalation flags, runs,
//! budget reservations, locks and intent leases. Every check-and-reserve is one IMMEDIATE
//! transaction, so racing threads or processes sharing the store cannot overspend a budget or
//! both hold a lock. The `Store` trait methods call these functions.

use crate::event::Data;
use crate::intent::Intent;
use crate::store::Cached;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

/// Appended to the store's MIGRATIONS.
pub const MIGRATION: &str = r#"
CREATE TABLE symptoms (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    ts   INTEGER NOT NULL,
    meta TEXT NOT NULL
);
CREATE INDEX symptoms_kind_ts ON symptoms (kind, ts);
CREATE TABLE escalation_flags (
    kind          TEXT PRIMARY KEY,
    reason        TEXT NOT NULL,
    symptom_count INTEGER NOT NULL,
    armed_at      INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    cleared_at    INTEGER
);
CREATE TABLE runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    intent_id      INTEGER NOT NULL,
    playbook       TEXT NOT NULL,
    mode           TEXT NOT NULL,
    holder         TEXT NOT NULL,
    started_at     INTEGER NOT NULL,
    ended_at       INTEGER,
    result         TEXT,
    budget         TEXT,
    budget_day     TEXT,
    reserved_ms    INTEGER NOT NULL DEFAULT 0,
    downtime_ms    INTEGER NOT NULL DEFAULT 0,
    lock_name      TEXT,
    step           INTEGER NOT NULL DEFAULT 0,
    downtime_since INTEGER
);
CREATE INDEX runs_playbook ON runs (playbook, started_at);
CREATE INDEX runs_open ON runs (ended_at);
CREATE TABLE budget_ledger (
    budget      TEXT NOT NULL,
    day         TEXT NOT NULL,
    used_ms     INTEGER NOT NULL DEFAULT 0,
    reserved_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, day)
);
CREATE TABLE locks (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    acquired_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE TABLE audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    ts       INTEGER NOT NULL,
    event    TEXT NOT NULL,
    intent   INTEGER,
    playbook TEXT,
    details  TEXT NOT NULL
);
CREATE INDEX audit_ts ON audit (ts);
ALTER TABLE intents ADD COLUMN lease_holder TEXT;
ALTER TABLE intents ADD COLUMN lease_expires INTEGER;
"#;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Symptom {
    pub id: i64,
    pub kind: String,
    #[serde(serialize_with = "ser_ts")]
    pub ts: i64,
    pub meta: Data,
}

/// How symptoms arm flags (from `[escalation]`).
#[derive(Debug, Clone, Copy)]
pub struct SymptomPolicy {
    pub window_ms: i64,
    pub threshold: u32,
    pub ttl_ms: i64,
}

/// An escalation flag as stored. `armed` is decided by the caller against the clock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Flag {
    pub kind: String,
    pub reason: String,
    pub symptom_count: u32,
    #[serde(serialize_with = "ser_ts")]
    pub armed_at: i64,
    #[serde(serialize_with = "ser_ts")]
    pub expires_at: i64,
    #[serde(serialize_with = "ser_opt_ts")]
    pub cleared_at: Option<i64>,
}

impl Flag {
    pub fn is_armed(&self, now_ms: i64) -> bool {
        self.cleared_at.is_none() && now_ms < self.expires_at
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SymptomRecorded {
    pub id: i64,
    /// Symptoms of this kind in the window (since the last clear), this one included.
    pub count: u32,
    /// Set when this symptom armed the flag.
    pub armed: Option<Flag>,
}

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

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Denial {
    pub gate: Gate,
    /// In words, e.g. "Cooldown active: 4.2h remaining".
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct BudgetRequest {
    pub name: String,
    /// The window day the downtime is charged to, e.g. "2026-11-23".
    pub day: String,
    pub limit_ms: i64,
    pub want_ms: i64,
}

/// What a run needs from the store's gates, checked and reserved at once.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub intent_id: i64,
    pub playbook: String,
    pub mode: String,
    /// Who holds the lock: the orchestrator's holder and the intent, `HOST:PID:N/INTENT`.
    pub holder: String,
    pub cooldown_ms: Option<i64>,
    /// (count, within_ms)
    pub max_runs: Option<(u32, i64)>,
    pub lock: Option<String>,
    pub lease_ms: i64,
    pub budget: Option<BudgetRequest>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    pub id: i64,
    pub intent_id: i64,
    pub playbook: String,
    pub mode: String,
    pub holder: String,
    #[serde(serialize_with = "ser_ts")]
    pub started_at: i64,
    #[serde(serialize_with = "ser_opt_ts")]
    pub ended_at: Option<i64>,
    pub result: Option<String>,
    pub budget: Option<String>,
    pub budget_day: Option<String>,
    pub reserved_ms: i64,
    pub downtime_ms: i64,
    pub lock_name: Option<String>,
    /// Index of the step in progress (for crash recovery).
    pub step: i64,
    /// Set while production is down.
    #[serde(serialize_with = "ser_opt_ts")]
    pub downtime_since: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LockRecord {
    pub name: String,
    pub holder: String,
    #[serde(serialize_with = "ser_ts")]
    pub acquired_at: i64,
    #[serde(serialize_with = "ser_ts")]
    pub expires_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct BudgetUsage {
    pub used_ms: i64,
    pub reserved_ms: i64,
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct AuditEntry {
    #[serde(serialize_with = "ser_ts", deserialize_with = "de_ts")]
    pub ts: i64,
    pub event: String,
    pub intent: Option<i64>,
    pub playbook: Option<String>,
    pub details: serde_json::Value,
}

fn ser_ts<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::clock::rfc3339_ms(*ms))
}

fn ser_opt_ts<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_str(&crate::clock::rfc3339_ms(*ms)),
        None => s.serialize_none(),
    }
}

fn de_ts<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(serde::de::Error::custom)
}

/// A span in milliseconds as people read it (`6.0h`); negative spans read as none.
fn hours(ms: i64) -> String {
    crate::daemon::human(std::time::Duration::from_millis(ms.max(0) as u64))
}

/// "24h" rather than "1d": how people state an escalation window.
fn window_words(ms: i64) -> String {
    if ms > 0 && ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else {
        crate::config::Dur(std::time::Duration::from_millis(ms.max(0) as u64)).to_string()
    }
}

fn secs(ms: i64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

pub fn record_symptom(
    conn: &mut Connection,
    kind: &str,
    meta: &Data,
    now_ms: i64,
    p: SymptomPolicy,
) -> rusqlite::Result<SymptomRecorded> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.exec(
        "INSERT INTO symptoms (kind, ts, meta) VALUES (?1, ?2, ?3)",
        params![kind, now_ms, serde_json::to_string(meta).expect("JSON")],
    )?;
    let id = tx.last_insert_rowid();
    let flag = flag_tx(&tx, kind)?;
    // Symptoms before a clear were answered by the run that cleared the flag: they do not count.
    let since =
        (now_ms - p.window_ms).max(flag.as_ref().and_then(|f| f.cleared_at).unwrap_or(i64::MIN));
    let count: u32 = tx.row(
        "SELECT count(*) FROM symptoms WHERE kind = ?1 AND ts > ?2 AND ts <= ?3",
        params![kind, since, now_ms],
        |r| r.get(0),
    )?;
    let active = flag.as_ref().is_some_and(|f| f.is_armed(now_ms));
    let armed = if count >= p.threshold && !active {
        let f = Flag {
            kind: kind.to_string(),
            reason: format!(
                "{count} {kind} in last {} (threshold: {})",
                window_words(p.window_ms),
                p.threshold
            ),
            symptom_count: count,
            armed_at: now_ms,
            expires_at: now_ms + p.ttl_ms,
            cleared_at: None,
        };
        tx.exec(
            "INSERT OR REPLACE INTO escalation_flags (kind, reason, symptom_count, armed_at, expires_at, cleared_at)
             VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
            params![f.kind, f.reason, f.symptom_count, f.armed_at, f.expires_at],
        )?;
        Some(f)
    } else {
        None
    };
    tx.commit()?;
    Ok(SymptomRecorded { id, count, armed })
}

fn row_to_flag(r: &rusqlite::Row) -> rusqlite::Result<Flag> {
    Ok(Flag {
        kind: r.get(0)?,
        reason: r.get(1)?,
        symptom_count: r.get(2)?,
        armed_at: r.get(3)?,
        expires_at: r.get(4)?,
        cleared_at: r.get(5)?,
    })
}

const FLAG_COLUMNS: &str = "kind, reason, symptom_count, armed_at, expires_at, cleared_at";

fn flag_tx(conn: &Connection, kind: &str) -> rusqlite::Result<Option<Flag>> {
    conn.row(
        &format!("SELECT {FLAG_COLUMNS} FROM escalation_flags WHERE kind = ?1"),
        [kind],
        row_to_flag,
    )
    .optional()
}

pub fn flags(conn: &Connection) -> rusqlite::Result<Vec<Flag>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {FLAG_COLUMNS} FROM escalation_flags ORDER BY kind"
    ))?;
    let rows = stmt.query_map([], row_to_flag)?;
    rows.collect()
}

/// Clears `kind`'s flag; returns it when it was armed (so the caller can audit the change).
pub fn clear_flag(
    conn: &mut Connection,
    kind: &str,
    now_ms: i64,
) -> rusqlite::Result<Option<Flag>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let f = flag_tx(&tx, kind)?;
    let was_armed = f.filter(|f| f.is_armed(now_ms));
    // A row is kept (or made) so symptoms before this clear stop counting towards a new flag.
    tx.exec(
        "INSERT INTO escalation_flags (kind, reason, symptom_count, armed_at, expires_at, cleared_at)
         VALUES (?1, 'cleared', 0, ?2, ?2, ?2)
         ON CONFLICT (kind) DO UPDATE SET cleared_at = ?2",
        params![kind, now_ms],
    )?;
    tx.commit()?;
    Ok(was_armed)
}

pub fn symptoms(
    conn: &Connection,
    kind: Option<&str>,
    since_ms: i64,
    limit: usize,
) -> rusqlite::Result<Vec<Symptom>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind, ts, meta FROM symptoms WHERE (?1 IS NULL OR kind = ?1) AND ts > ?2
         ORDER BY ts DESC, id DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![kind, since_ms, limit as i64], |r| {
        let meta: String = r.get(3)?;
        Ok(Symptom {
            id: r.get(0)?,
            kind: r.get(1)?,
            ts: r.get(2)?,
            meta: serde_json::from_str(&meta).unwrap_or_default(),
        })
    })?;
    rows.collect()
}

/// Symptom counts by kind since `since_ms`.
pub fn symptom_counts(conn: &Connection, since_ms: i64) -> rusqlite::Result<Vec<(String, u32)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT kind, count(*) FROM symptoms WHERE ts > ?1 GROUP BY kind ORDER BY kind",
    )?;
    let rows = stmt.query_map([since_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Checks cooldown, rate limit, lock and budget and, when all pass and `commit` is set, takes
/// the lock, reserves the budget and records the run: all in one transaction.
pub fn begin_run(
    conn: &mut Connection,
    req: &RunRequest,
    now_ms: i64,
    commit: bool,
) -> rusqlite::Result<Result<RunRecord, Denial>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let deny = |gate, reason: String| Ok(Err(Denial { gate, reason }));
    if let Some(cooldown) = req.cooldown_ms {
        let last: Option<i64> = tx.row(
            "SELECT max(started_at) FROM runs WHERE playbook = ?1",
            [&req.playbook],
            |r| r.get(0),
        )?;
        if let Some(last) = last {
            let remaining = last + cooldown - now_ms;
            if remaining > 0 {
                return deny(
                    Gate::Cooldown,
                    format!("Cooldown active: {} remaining", hours(remaining)),
                );
            }
        }
    }
    if let Some((count, within)) = req.max_runs {
        let mut stmt = tx.prepare_cached(
            "SELECT started_at FROM runs WHERE playbook = ?1 AND started_at > ?2 ORDER BY started_at",
        )?;
        let starts: Vec<i64> = stmt
            .query_map(params![req.playbook, now_ms - within], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        drop(stmt);
        if starts.len() as u32 >= count {
            let next = starts[starts.len() - count as usize] + within - now_ms;
            return deny(
                Gate::RateLimit,
                format!(
                    "Rate limit: {} runs in the last {} (max {count}); next allowed in {}",
                    starts.len(),
                    hours(within),
                    hours(next.max(0))
                ),
            );
        }
    }
    if let Some(lock) = &req.lock {
        if let Err(held) = acquire_lock_tx(&tx, lock, &req.holder, req.lease_ms, now_ms)? {
            return deny(
                Gate::Lock,
                format!(
                    "Lock {lock:?} held by {} for {} more",
                    held.holder,
                    hours(held.expires_at - now_ms)
                ),
            );
        }
    }
    if let Some(b) = &req.budget {
        let u = budget_usage(&tx, &b.name, &b.day)?;
        if u.used_ms + u.reserved_ms + b.want_ms > b.limit_ms {
            return deny(
                Gate::Budget,
                format!(
                    "Budget {:?} for {} cannot cover {}: {} used, {} reserved of {}",
                    b.name,
                    b.day,
                    secs(b.want_ms),
                    secs(u.used_ms),
                    secs(u.reserved_ms),
                    secs(b.limit_ms)
                ),
            );
        }
        tx.exec(
            "INSERT INTO budget_ledger (budget, day, used_ms, reserved_ms) VALUES (?1, ?2, 0, ?3)
             ON CONFLICT (budget, day) DO UPDATE SET reserved_ms = reserved_ms + ?3",
            params![b.name, b.day, b.want_ms],
        )?;
    }
    let (budget, day, want) = match &req.budget {
        Some(b) => (Some(b.name.clone()), Some(b.day.clone()), b.want_ms),
        None => (None, None, 0),
    };
    tx.exec(
        "INSERT INTO runs (intent_id, playbook, mode, holder, started_at, budget, budget_day, reserved_ms, lock_name)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![req.intent_id, req.playbook, req.mode, req.holder, now_ms, budget, day, want, req.lock],
    )?;
    let run = RunRecord {
        id: tx.last_insert_rowid(),
        intent_id: req.intent_id,
        playbook: req.playbook.clone(),
        mode: req.mode.clone(),
        holder: req.holder.clone(),
        started_at: now_ms,
        ended_at: None,
        result: None,
        budget,
        budget_day: day,
        reserved_ms: want,
        downtime_ms: 0,
        lock_name: req.lock.clone(),
        step: 0,
        downtime_since: None,
    };
    if commit {
        tx.commit()?;
    }
    // Without `commit` the transaction rolls back as it drops: a dry run reserves nothing.
    Ok(Ok(run))
}

/// Records progress, so a successor knows where a crashed run stopped.
pub fn run_progress(
    conn: &Connection,
    run_id: i64,
    step: i64,
    downtime_since: Option<i64>,
) -> rusqlite::Result<()> {
    conn.exec(
        "UPDATE runs SET step = ?2, downtime_since = ?3 WHERE id = ?1",
        params![run_id, step, downtime_since],
    )
    .map(drop)
}

/// Ends a run: settles the budget (releases the reservation, charges the actual downtime) and
/// releases its lock. Ending an ended run does nothing, so recovery can never settle twice.
pub fn finish_run(
    conn: &mut Connection,
    run_id: i64,
    result: &str,
    downtime_ms: i64,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let ended = end_run(&tx, run_id, result, downtime_ms, now_ms)?;
    tx.commit()?;
    Ok(ended)
}

/// Ends a run inside the caller's transaction: budget and lock settled, result recorded;
/// false when it had already ended.
pub fn end_run(
    tx: &Connection,
    run_id: i64,
    result: &str,
    downtime_ms: i64,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    let Some(run) = run_tx(tx, run_id)? else {
        return Ok(false);
    };
    if run.ended_at.is_some() {
        return Ok(false);
    }
    if let (Some(b), Some(day)) = (&run.budget, &run.budget_day) {
        tx.exec(
            "INSERT INTO budget_ledger (budget, day, used_ms, reserved_ms) VALUES (?1, ?2, ?3, 0)
             ON CONFLICT (budget, day) DO UPDATE SET reserved_ms = max(0, reserved_ms - ?4), used_ms = used_ms + ?3",
            params![b, day, downtime_ms, run.reserved_ms],
        )?;
    }
    if let Some(lock) = &run.lock_name {
        tx.exec(
            "DELETE FROM locks WHERE name = ?1 AND holder = ?2",
            params![lock, run.holder],
        )?;
    }
    tx.exec(
        "UPDATE runs SET ended_at = ?2, result = ?3, downtime_ms = ?4, downtime_since = NULL WHERE id = ?1",
        params![run_id, now_ms, result, downtime_ms],
    )?;
    Ok(true)
}

/// The end of a run and of its intent, written together by `Store::settle_run`.
#[derive(Debug, Clone)]
pub struct RunEnd<'a> {
    pub run_id: i64,
    pub downtime_ms: i64,
    pub intent_id: i64,
    /// The run's result is the intent's final status.
    pub status: crate::intent::IntentStatus,
    pub note: &'a str,
    pub now_ms: i64,
}

const RUN_COLUMNS: &str = "id, intent_id, playbook, mode, holder, started_at, ended_at, result, budget, budget_day, reserved_ms, downtime_ms, lock_name, step, downtime_since";

fn row_to_run(r: &rusqlite::Row) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: r.get(0)?,
        intent_id: r.get(1)?,
        playbook: r.get(2)?,
        mode: r.get(3)?,
        holder: r.get(4)?,
        started_at: r.get(5)?,
        ended_at: r.get(6)?,
        result: r.get(7)?,
        budget: r.get(8)?,
        budget_day: r.get(9)?,
        reserved_ms: r.get(10)?,
        downtime_ms: r.get(11)?,
        lock_name: r.get(12)?,
        step: r.get(13)?,
        downtime_since: r.get(14)?,
    })
}

fn run_tx(conn: &Connection, id: i64) -> rusqlite::Result<Option<RunRecord>> {
    conn.row(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
        [id],
        row_to_run,
    )
    .optional()
}

/// Runs started after `since_ms` (all playbooks when `None`), newest first; `open_only` keeps
/// the ones not ended.
pub fn runs(
    conn: &Connection,
    playbook: Option<&str>,
    since_ms: i64,
    open_only: bool,
) -> rusqlite::Result<Vec<RunRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR playbook = ?1) AND started_at > ?2
         AND (?3 = 0 OR ended_at IS NULL) ORDER BY started_at DESC, id DESC"
    ))?;
    let rows = stmt.query_map(params![playbook, since_ms, open_only], row_to_run)?;
    rows.collect()
}

pub fn budget_usage(conn: &Connection, budget: &str, day: &str) -> rusqlite::Result<BudgetUsage> {
    Ok(conn
        .row(
            "SELECT used_ms, reserved_ms FROM budget_ledger WHERE budget = ?1 AND day = ?2",
            params![budget, day],
            |r| {
                Ok(BudgetUsage {
                    used_ms: r.get(0)?,
                    reserved_ms: r.get(1)?,
                })
            },
        )
        .optional()?
        .unwrap_or_default())
}

fn acquire_lock_tx(
    conn: &Connection,
    name: &str,
    holder: &str,
    lease_ms: i64,
    now_ms: i64,
) -> rusqlite::Result<Result<(), LockRecord>> {
    let current = conn
        .row(
            "SELECT name, holder, acquired_at, expires_at FROM locks WHERE name = ?1",
            [name],
            |r| {
                Ok(LockRecord {
                    name: r.get(0)?,
                    holder: r.get(1)?,
                    acquired_at: r.get(2)?,
                    expires_at: r.get(3)?,
                })
            },
        )
        .optional()?;
    if let Some(cur) = current {
        // An expired lease means the holder died or stalled: the lock is free again.
        if cur.holder != holder && cur.expires_at > now_ms {
            return Ok(Err(cur));
        }
    }
    conn.exec(
        "INSERT OR REPLACE INTO locks (name, holder, acquired_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![name, holder, now_ms, now_ms + lease_ms],
    )?;
    Ok(Ok(()))
}

/// Takes `name` for `holder` unless someone else holds an unexpired lease on it.
pub fn acquire_lock(
    conn: &mut Connection,
    name: &str,
    holder: &str,
    lease_ms: i64,
    now_ms: i64,
) -> rusqlite::Result<Result<(), LockRecord>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let r = acquire_lock_tx(&tx, name, holder, lease_ms, now_ms)?;
    tx.commit()?;
    Ok(r)
}

/// Extends the leases `holder` has (locks and intents); returns how many locks it still holds.
pub fn renew_leases(
    conn: &Connection,
    holder: &str,
    lease_ms: i64,
    now_ms: i64,
) -> rusqlite::Result<usize> {
    conn.exec(
        "UPDATE intents SET lease_expires = ?2 WHERE status = 'running' AND lease_holder = ?1",
        params![holder, now_ms + lease_ms],
    )?;
    // Runs hold locks as `HOLDER/INTENT`.
    conn.exec(
        "UPDATE locks SET expires_at = ?2
         WHERE holder = ?1 OR substr(holder, 1, length(?1) + 1) = ?1 || '/'",
        params![holder, now_ms + lease_ms],
    )
}

pub fn release_lock(conn: &Connection, name: &str, holder: &str) -> rusqlite::Result<bool> {
    conn.exec(
        "DELETE FROM locks WHERE name = ?1 AND holder = ?2",
        params![name, holder],
    )
    .map(|n| n > 0)
}

pub fn locks(conn: &Connection) -> rusqlite::Result<Vec<LockRecord>> {
    let mut stmt = conn
        .prepare_cached("SELECT name, holder, acquired_at, expires_at FROM locks ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(LockRecord {
            name: r.get(0)?,
            holder: r.get(1)?,
            acquired_at: r.get(2)?,
            expires_at: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// Claims the next pending intent (highest priority, then oldest) for `holder`.
pub fn claim_intent(
    conn: &Connection,
    holder: &str,
    lease_ms: i64,
    now_ms: i64,
    row: impl FnOnce(&rusqlite::Row) -> rusqlite::Result<Intent>,
    columns: &str,
) -> rusqlite::Result<Option<Intent>> {
    // One statement, so two claimers never take the same intent.
    conn.row(
        &format!(
            "UPDATE intents SET status = 'running', lease_holder = ?1, lease_expires = ?2, updated_at = ?3
             WHERE id = (SELECT id FROM intents WHERE status = 'pending'
                         ORDER BY priority DESC, created_at, id LIMIT 1)
             RETURNING {columns}"
        ),
        params![holder, now_ms + lease_ms, now_ms],
        row,
    )
    .optional()
}

/// A running intent's claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub intent: i64,
    pub holder: Option<String>,
    pub expires_at: Option<i64>,
}

/// Running intents and who holds their lease, with its expiry.
pub fn running_intents(conn: &Connection) -> rusqlite::Result<Vec<Lease>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, lease_holder, lease_expires FROM intents WHERE status = 'running' ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Lease {
            intent: r.get(0)?,
            holder: r.get(1)?,
            expires_at: r.get(2)?,
        })
    })?;
    rows.collect()
}

/// Moves a running intent's lease from `old` to `new`; false when someone else got there first.
pub fn take_over_intent(
    conn: &Connection,
    id: i64,
    old: Option<&str>,
    new: &str,
    lease_ms: i64,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    conn.exec(
        "UPDATE intents SET lease_holder = ?3, lease_expires = ?4
         WHERE id = ?1 AND status = 'running' AND lease_holder IS ?2",
        params![id, old, new, now_ms + lease_ms],
    )
    .map(|n| n == 1)
}

pub fn append_audit(conn: &Connection, e: &AuditEntry) -> rusqlite::Result<()> {
    conn.exec(
        "INSERT INTO audit (ts, event, intent, playbook, details) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![e.ts, e.event, e.intent, e.playbook, e.details.to_string()],
    )
    .map(drop)
}

/// The last `n` audit entries, oldest first.
pub fn audit_tail(conn: &Connection, n: usize) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT ts, event, intent, playbook, details FROM audit ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([n as i64], |r| {
        let details: String = r.get(4)?;
        Ok(AuditEntry {
            ts: r.get(0)?,
            event: r.get(1)?,
            intent: r.get(2)?,
            playbook: r.get(3)?,
            details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
        })
    })?;
    let mut v: Vec<AuditEntry> = rows.collect::<rusqlite::Result<_>>()?;
    v.reverse();
    Ok(v)
}

/// Deletes symptoms, finished runs and audit rows older than `before_ms` (the JSON-lines files
/// stay as the long-term trail); returns how many rows went.
pub fn prune(conn: &Connection, before_ms: i64) -> rusqlite::Result<usize> {
    let mut n = conn.exec("DELETE FROM symptoms WHERE ts < ?1", [before_ms])?;
    n += conn.exec(
        "DELETE FROM runs WHERE ended_at IS NOT NULL AND started_at < ?1",
        [before_ms],
    )?;
    n += conn.exec("DELETE FROM audit WHERE ts < ?1", [before_ms])?;
    n += conn.exec(
        "DELETE FROM budget_ledger WHERE reserved_ms = 0 AND day < date(?1 / 1000, 'unixepoch')",
        [before_ms],
    )?;
    Ok(n)
}
