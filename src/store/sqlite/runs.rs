//! Claims, runs, budgets and locks in SQLite. Every check-and-reserve is one IMMEDIATE
//! transaction.

use super::intents::{row_to_intent, set_status, INTENT_COLUMNS};
use super::{Cached, SqliteStore};
use crate::audit::AuditEntry;
use crate::intent::Intent;
use crate::store::{
    BudgetUsage, Lease, LockRecord, Refusal, RunEnd, RunRecord, RunRequest, RunStore, StoreError,
};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

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

fn run(conn: &Connection, id: i64) -> rusqlite::Result<Option<RunRecord>> {
    conn.row(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
        [id],
        row_to_run,
    )
    .optional()
}

fn row_to_lock(r: &rusqlite::Row) -> rusqlite::Result<LockRecord> {
    Ok(LockRecord {
        name: r.get(0)?,
        holder: r.get(1)?,
        acquired_at: r.get(2)?,
        expires_at: r.get(3)?,
    })
}

fn budget_usage(conn: &Connection, budget: &str, day: &str) -> rusqlite::Result<BudgetUsage> {
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

fn acquire_lock(
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
            row_to_lock,
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

/// The checks of `begin_run` and, when they pass, the reservations, inside `tx`.
fn check_and_reserve(
    tx: &Connection,
    req: &RunRequest,
    now_ms: i64,
) -> rusqlite::Result<Result<RunRecord, Refusal>> {
    if let Some(cooldown) = req.cooldown_ms {
        let last: Option<i64> = tx.row(
            "SELECT max(started_at) FROM runs WHERE playbook = ?1",
            [&req.playbook],
            |r| r.get(0),
        )?;
        if let Some(last) = last {
            let remaining_ms = last + cooldown - now_ms;
            if remaining_ms > 0 {
                return Ok(Err(Refusal::Cooldown { remaining_ms }));
            }
        }
    }
    if let Some((max, within_ms)) = req.max_runs {
        let mut stmt = tx.prepare_cached(
            "SELECT started_at FROM runs WHERE playbook = ?1 AND started_at > ?2 ORDER BY started_at",
        )?;
        let starts: Vec<i64> = stmt
            .query_map(params![req.playbook, now_ms - within_ms], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        drop(stmt);
        if starts.len() as u32 >= max {
            let next = starts[starts.len() - max as usize] + within_ms - now_ms;
            return Ok(Err(Refusal::RateLimit {
                runs: starts.len() as u32,
                max,
                within_ms,
                next_in_ms: next.max(0),
            }));
        }
    }
    if let Some(lock) = &req.lock {
        if let Err(held) = acquire_lock(tx, lock, &req.holder, req.lease_ms, now_ms)? {
            return Ok(Err(Refusal::Lock {
                name: lock.clone(),
                holder: held.holder,
                remaining_ms: held.expires_at - now_ms,
            }));
        }
    }
    if let Some(b) = &req.budget {
        let usage = budget_usage(tx, &b.name, &b.day)?;
        if usage.used_ms + usage.reserved_ms + b.want_ms > b.limit_ms {
            return Ok(Err(Refusal::Budget {
                request: b.clone(),
                usage,
            }));
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
    Ok(Ok(RunRecord {
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
    }))
}

/// Ends a run inside the caller's transaction: budget and lock settled, result recorded;
/// false when it had already ended (then nothing is written).
fn end_run(tx: &Connection, end: &RunEnd<'_>) -> rusqlite::Result<bool> {
    let Some(run) = run(tx, end.run_id)? else {
        return Ok(false);
    };
    if run.ended_at.is_some() {
        return Ok(false);
    }
    if let (Some(b), Some(day)) = (&run.budget, &run.budget_day) {
        tx.exec(
            "INSERT INTO budget_ledger (budget, day, used_ms, reserved_ms) VALUES (?1, ?2, ?3, 0)
             ON CONFLICT (budget, day) DO UPDATE SET reserved_ms = max(0, reserved_ms - ?4), used_ms = used_ms + ?3",
            params![b, day, end.downtime_ms, run.reserved_ms],
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
        params![end.run_id, end.now_ms, end.status.as_str(), end.downtime_ms],
    )?;
    Ok(true)
}

impl RunStore for SqliteStore {
    fn claim_intent(
        &self,
        holder: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Intent>, StoreError> {
        // One statement, so two claimers never take the same intent.
        self.with_conn(|c| {
            c.row(
                &format!(
                    "UPDATE intents SET status = 'running', lease_holder = ?1, lease_expires = ?2, updated_at = ?3
                     WHERE id = (SELECT id FROM intents WHERE status = 'pending'
                                 ORDER BY priority DESC, created_at, id LIMIT 1)
                     RETURNING {INTENT_COLUMNS}"
                ),
                params![holder, now_ms + lease_ms, now_ms],
                row_to_intent,
            )
            .optional()
        })
    }

    fn running_intents(&self) -> Result<Vec<Lease>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
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
        })
    }

    fn take_over_intent(
        &self,
        id: i64,
        old: Option<&str>,
        new: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            c.exec(
                "UPDATE intents SET lease_holder = ?3, lease_expires = ?4
                 WHERE id = ?1 AND status = 'running' AND lease_holder IS ?2",
                params![id, old, new, now_ms + lease_ms],
            )
            .map(|n| n == 1)
        })
    }

    fn begin_run(
        &self,
        req: &RunRequest,
        now_ms: i64,
        commit: bool,
    ) -> Result<Result<RunRecord, Refusal>, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let r = check_and_reserve(&tx, req, now_ms)?;
            // Without `commit` the transaction rolls back as it drops: a dry run reserves
            // nothing.
            if commit && r.is_ok() {
                tx.commit()?;
            }
            Ok(r)
        })
    }

    fn run_progress(
        &self,
        run_id: i64,
        step: i64,
        downtime_since: Option<i64>,
    ) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.exec(
                "UPDATE runs SET step = ?2, downtime_since = ?3 WHERE id = ?1",
                params![run_id, step, downtime_since],
            )
            .map(drop)
        })
    }

    fn settle_run(&self, end: &RunEnd<'_>, audit: &AuditEntry) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !end_run(&tx, end)? {
                return Ok(false);
            }
            set_status(&tx, end.intent_id, end.status, Some(end.note), end.now_ms)?;
            super::audit::append(&tx, audit)?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn run(&self, id: i64) -> Result<Option<RunRecord>, StoreError> {
        self.with_conn(|c| run(c, id))
    }

    fn runs(
        &self,
        playbook: Option<&str>,
        since_ms: i64,
        open_only: bool,
    ) -> Result<Vec<RunRecord>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR playbook = ?1) AND started_at > ?2
                 AND (?3 = 0 OR ended_at IS NULL) ORDER BY started_at DESC, id DESC"
            ))?;
            let rows = stmt.query_map(params![playbook, since_ms, open_only], row_to_run)?;
            rows.collect()
        })
    }

    fn budget_usage(&self, budget: &str, day: &str) -> Result<BudgetUsage, StoreError> {
        self.with_conn(|c| budget_usage(c, budget, day))
    }

    fn acquire_lock(
        &self,
        name: &str,
        holder: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Result<(), LockRecord>, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let r = acquire_lock(&tx, name, holder, lease_ms, now_ms)?;
            tx.commit()?;
            Ok(r)
        })
    }

    fn release_lock(&self, name: &str, holder: &str) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            c.exec(
                "DELETE FROM locks WHERE name = ?1 AND holder = ?2",
                params![name, holder],
            )
            .map(|n| n > 0)
        })
    }

    fn renew_leases(&self, holder: &str, lease_ms: i64, now_ms: i64) -> Result<usize, StoreError> {
        self.with_conn(|c| {
            c.exec(
                "UPDATE intents SET lease_expires = ?2 WHERE status = 'running' AND lease_holder = ?1",
                params![holder, now_ms + lease_ms],
            )?;
            // Runs hold locks as `HOLDER/INTENT`.
            c.exec(
                "UPDATE locks SET expires_at = ?2
                 WHERE holder = ?1 OR substr(holder, 1, length(?1) + 1) = ?1 || '/'",
                params![holder, now_ms + lease_ms],
            )
        })
    }

    fn locks(&self) -> Result<Vec<LockRecord>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT name, holder, acquired_at, expires_at FROM locks ORDER BY name",
            )?;
            let rows = stmt.query_map([], row_to_lock)?;
            rows.collect()
        })
    }

    fn prune_runs(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.with_conn(|c| {
            let mut n = c.exec(
                "DELETE FROM runs WHERE ended_at IS NOT NULL AND started_at < ?1",
                [before_ms],
            )?;
            n += c.exec(
                "DELETE FROM budget_ledger WHERE reserved_ms = 0 AND day < date(?1 / 1000, 'unixepoch')",
                [before_ms],
            )?;
            Ok(n)
        })
    }
}
