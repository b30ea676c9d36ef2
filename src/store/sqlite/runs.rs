//! Claims, runs, budgets and locks in SQLite. Every check-and-reserve is one IMMEDIATE
//! transaction.

use super::intents::{row_to_intent, set_status, INTENT_COLUMNS};
use super::{Cached, SqliteStore};
use crate::audit::AuditEntry;
use crate::intent::IntentStatus;
use crate::store::{
    BudgetRequest, BudgetUsage, Claim, Fence, Lease, LeaseFence, LockRecord, Refusal, RunEnd,
    RunRecord, RunRequest, RunStore, Scope, Settled, StoreError, FLEET,
};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

const RUN_COLUMNS: &str = "id, intent_id, playbook, mode, holder, started_at, ended_at, result, budget, budget_day, reserved_ms, downtime_ms, lock_name, step, downtime_since, lock_epoch, budget_scope, host";

const LOCK_COLUMNS: &str = "name, scope, holder, acquired_at, expires_at, epoch";

/// The next value of the named sequence (1, 2, ...): epochs that only grow, even across
/// deleted rows (a released lock's row is gone, its epoch must not come back).
fn next_seq(conn: &Connection, name: &str) -> rusqlite::Result<i64> {
    conn.row(
        "INSERT INTO sequences (name, value) VALUES (?1, 1)
         ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
        [name],
        |r| r.get(0),
    )
}

/// Whether `lease` still holds at `now_ms`: the intent is running under the same holder and
/// epoch, and the lease has not run out.
fn holds_lease(conn: &Connection, lease: &LeaseFence, now_ms: i64) -> rusqlite::Result<bool> {
    conn.row(
        "SELECT EXISTS (SELECT 1 FROM intents WHERE id = ?1 AND status = 'running'
                AND lease_holder = ?2 AND lease_epoch = ?3 AND lease_expires >= ?4)",
        params![lease.intent, lease.holder, lease.epoch, now_ms],
        |r| r.get(0),
    )
}

/// Whether all of `fence` holds at `now_ms`.
fn holds(conn: &Connection, fence: &Fence, now_ms: i64) -> rusqlite::Result<bool> {
    if !holds_lease(conn, &fence.lease, now_ms)? {
        return Ok(false);
    }
    let Some(lock) = &fence.lock else {
        return Ok(true);
    };
    conn.row(
        "SELECT EXISTS (SELECT 1 FROM locks WHERE name = ?1 AND holder = ?2 AND epoch = ?3
                AND expires_at >= ?4)",
        params![lock.name, lock.holder, lock.epoch, now_ms],
        |r| r.get(0),
    )
}

/// Sets run starts of `playbook` stamped after `now_ms` to `now_ms`: the clock was ahead when
/// they were stamped. A start a year ahead would otherwise hold the cooldown for a year and
/// fill the rate-limit window until then. Returns how many were corrected.
fn correct_future_starts(
    conn: &Connection,
    playbook: &str,
    now_ms: i64,
) -> rusqlite::Result<usize> {
    conn.exec(
        "UPDATE runs SET started_at = ?2 WHERE playbook = ?1 AND started_at > ?2",
        params![playbook, now_ms],
    )
}

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
        lock_epoch: r.get(15)?,
        budget_scope: r.get(16)?,
        host: r.get(17)?,
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
        scope: r.get(1)?,
        holder: r.get(2)?,
        acquired_at: r.get(3)?,
        expires_at: r.get(4)?,
        epoch: r.get(5)?,
    })
}

/// A budget's day: the rows `host` sees (its own, the fleet's and those from before scopes),
/// or every host's with `host` `None` (what a fleet budget counts).
fn budget_usage(
    conn: &Connection,
    budget: &str,
    day: &str,
    host: Option<&str>,
) -> rusqlite::Result<BudgetUsage> {
    conn.row(
        "SELECT coalesce(sum(used_ms), 0), coalesce(sum(reserved_ms), 0) FROM budget_ledger
         WHERE budget = ?1 AND day = ?2 AND (?3 IS NULL OR scope IN (?3, '*', ''))",
        params![budget, day, host],
        |r| {
            Ok(BudgetUsage {
                used_ms: r.get(0)?,
                reserved_ms: r.get(1)?,
            })
        },
    )
}

/// Reserves `b.want_ms` under `b`'s scope unless its day cannot cover it (a fleet budget
/// counts every host's downtime, a host budget this host's); returns the scope key reserved
/// under, or the usage that refused it. Inside the caller's transaction.
pub(super) fn reserve_budget(
    conn: &Connection,
    b: &BudgetRequest,
    host: &str,
) -> rusqlite::Result<Result<String, BudgetUsage>> {
    let seen = (b.scope == Scope::Host).then_some(host);
    let usage = budget_usage(conn, &b.name, &b.day, seen)?;
    if usage.used_ms + usage.reserved_ms + b.want_ms > b.limit_ms {
        return Ok(Err(usage));
    }
    let key = b.scope.key(host);
    conn.exec(
        "INSERT INTO budget_ledger (budget, day, scope, used_ms, reserved_ms) VALUES (?1, ?2, ?3, 0, ?4)
         ON CONFLICT (budget, day, scope) DO UPDATE SET reserved_ms = reserved_ms + ?4",
        params![b.name, b.day, key, b.want_ms],
    )?;
    Ok(Ok(key.to_string()))
}

/// Releases a reservation of `reserved_ms` and charges `downtime_ms`, on the ledger row of
/// `scope` (the key `reserve_budget` returned). Inside the caller's transaction.
pub(super) fn settle_budget(
    conn: &Connection,
    budget: &str,
    day: &str,
    scope: &str,
    downtime_ms: i64,
    reserved_ms: i64,
) -> rusqlite::Result<()> {
    conn.exec(
        "INSERT INTO budget_ledger (budget, day, scope, used_ms, reserved_ms) VALUES (?1, ?2, ?3, ?4, 0)
         ON CONFLICT (budget, day, scope) DO UPDATE SET reserved_ms = max(0, reserved_ms - ?5), used_ms = used_ms + ?4",
        params![budget, day, scope, downtime_ms, reserved_ms],
    )?;
    Ok(())
}

/// Takes `name` in `scope` (a key: the host, or `*`) for `holder` with a new epoch, which it
/// returns, unless another holds it.
fn acquire_lock(
    conn: &Connection,
    name: &str,
    scope: &str,
    holder: &str,
    lease_ms: i64,
    now_ms: i64,
) -> rusqlite::Result<Result<i64, LockRecord>> {
    let current = conn
        .row(
            // A lock taken before scopes ('') is the same lock for every host.
            &format!(
                "SELECT {LOCK_COLUMNS} FROM locks WHERE name = ?1 AND scope IN (?2, '')
                 ORDER BY scope DESC LIMIT 1"
            ),
            params![name, scope],
            row_to_lock,
        )
        .optional()?;
    if let Some(cur) = current {
        // On a host lock an expired lease means the holder died or stalled: the lock is free
        // again (the stalled holder finds out through its fence: the epoch changes here). A
        // fleet lock's holder may be a host that is still acting, cut off from the store: it
        // stays held until that host settles its run or an operator frees it.
        if cur.holder != holder && (cur.expires_at > now_ms || scope == FLEET) {
            return Ok(Err(cur));
        }
    }
    let epoch = next_seq(conn, "lock")?;
    conn.exec("DELETE FROM locks WHERE name = ?1 AND scope = ''", [name])?;
    conn.exec(
        "INSERT OR REPLACE INTO locks (name, scope, holder, acquired_at, expires_at, epoch) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![name, scope, holder, now_ms, now_ms + lease_ms, epoch],
    )?;
    Ok(Ok(epoch))
}

/// The checks of `begin_run` and, when they pass, the reservations, inside `tx`.
fn check_and_reserve(
    tx: &Connection,
    req: &RunRequest,
    host: &str,
    now_ms: i64,
) -> rusqlite::Result<Result<RunRecord, Refusal>> {
    if let Some(lease) = &req.lease {
        if !holds_lease(tx, lease, now_ms)? {
            return Ok(Err(Refusal::LeaseLost));
        }
    }
    if let Some(cooldown) = req.cooldown_ms {
        let last: Option<i64> = tx.row(
            "SELECT max(started_at) FROM runs WHERE playbook = ?1 AND (?2 IS NULL OR host IN (?2, ''))",
            params![req.playbook, (req.cooldown_scope == Scope::Host).then_some(host)],
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
            "SELECT started_at FROM runs WHERE playbook = ?1 AND started_at > ?2
               AND (?3 IS NULL OR host IN (?3, '')) ORDER BY started_at",
        )?;
        let own = (req.max_runs_scope == Scope::Host).then_some(host);
        let starts: Vec<i64> = stmt
            .query_map(params![req.playbook, now_ms - within_ms, own], |r| r.get(0))?
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
    let mut lock_epoch = 0;
    if let Some(lock) = &req.lock {
        match acquire_lock(
            tx,
            lock,
            req.lock_scope.key(host),
            &req.holder,
            req.lease_ms,
            now_ms,
        )? {
            Ok(epoch) => lock_epoch = epoch,
            Err(held) => {
                return Ok(Err(Refusal::Lock {
                    name: lock.clone(),
                    holder: held.holder,
                    remaining_ms: held.expires_at - now_ms,
                    acquired_at: held.acquired_at,
                }))
            }
        }
    }
    let mut budget_scope = String::new();
    if let Some(b) = &req.budget {
        match reserve_budget(tx, b, host)? {
            Ok(key) => budget_scope = key,
            Err(usage) => {
                return Ok(Err(Refusal::Budget {
                    request: b.clone(),
                    usage,
                }))
            }
        }
    }
    let (budget, day, want) = match &req.budget {
        Some(b) => (Some(b.name.clone()), Some(b.day.clone()), b.want_ms),
        None => (None, None, 0),
    };
    tx.exec(
        "INSERT INTO runs (intent_id, playbook, mode, holder, started_at, budget, budget_day, reserved_ms, lock_name, lock_epoch, host, budget_scope)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![req.intent_id, req.playbook, req.mode, req.holder, now_ms, budget, day, want, req.lock, lock_epoch, host, budget_scope],
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
        budget_scope,
        reserved_ms: want,
        downtime_ms: 0,
        lock_name: req.lock.clone(),
        lock_epoch,
        step: 0,
        downtime_since: None,
        host: host.to_string(),
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
        settle_budget(
            tx,
            b,
            day,
            &run.budget_scope,
            end.downtime_ms,
            run.reserved_ms,
        )?;
    }
    if let Some(lock) = &run.lock_name {
        // Only the acquisition this run made: the same holder name may hold it again later
        // (an intent resumed and claimed again by the same orchestrator).
        tx.exec(
            "DELETE FROM locks WHERE name = ?1 AND holder = ?2 AND (epoch = ?3 OR ?3 = 0)",
            params![lock, run.holder, run.lock_epoch],
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
        intent_ttl_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Claim>, StoreError> {
        // One statement, so two claimers never take the same intent. Every intent is this
        // host's: a SQLite store is one host's (a fleet shares PostgreSQL), so an intent whose
        // data happens to name a `host` is not left unclaimed here. An intent waiting for a
        // lock someone holds is left alone, so workers do not spin on it; once the lock is
        // free (released, or its lease ran out) or the intent outlived its TTL, it is taken.
        self.with_conn(|c| {
            c.row(
                &format!(
                    "UPDATE intents SET status = 'running', lease_holder = ?1, lease_expires = ?2, updated_at = ?3,
                            lease_epoch = lease_epoch + 1
                     WHERE id = (SELECT id FROM intents i WHERE status = 'pending'
                                   AND (wait_lock IS NULL OR created_at < ?3 - ?4
                                        OR NOT EXISTS (SELECT 1 FROM locks l
                                                       WHERE l.name = i.wait_lock
                                                         AND l.scope IN (?5, '*', '')
                                                         AND (l.expires_at > ?3 OR l.scope = '*')))
                                 ORDER BY priority DESC, created_at, id LIMIT 1)
                     RETURNING {INTENT_COLUMNS}, lease_epoch"
                ),
                params![holder, now_ms + lease_ms, now_ms, intent_ttl_ms, self.host],
                |r| {
                    Ok(Claim {
                        intent: row_to_intent(r)?,
                        epoch: r.get(12)?,
                    })
                },
            )
            .optional()
        })
    }

    fn running_intents(&self) -> Result<Vec<Lease>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, lease_holder, lease_expires, lease_epoch FROM intents WHERE status = 'running' ORDER BY id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(Lease {
                    intent: r.get(0)?,
                    holder: r.get(1)?,
                    expires_at: r.get(2)?,
                    epoch: r.get(3)?,
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
    ) -> Result<Option<i64>, StoreError> {
        self.with_conn(|c| {
            c.row(
                "UPDATE intents SET lease_holder = ?3, lease_expires = ?4, lease_epoch = lease_epoch + 1
                 WHERE id = ?1 AND status = 'running' AND lease_holder IS ?2
                 RETURNING lease_epoch",
                params![id, old, new, now_ms + lease_ms],
                |r| r.get(0),
            )
            .optional()
        })
    }

    fn set_intent_status_fenced(
        &self,
        lease: &LeaseFence,
        status: IntentStatus,
        note: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !holds_lease(&tx, lease, now_ms)? {
                return Ok(false);
            }
            set_status(&tx, lease.intent, status, Some(note), now_ms)?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn check_fence(&self, fence: &Fence, now_ms: i64) -> Result<bool, StoreError> {
        self.with_conn(|c| holds(c, fence, now_ms))
    }

    fn defer_intent(
        &self,
        lease: &LeaseFence,
        lock: &str,
        note: &str,
        now_ms: i64,
    ) -> Result<Option<bool>, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !holds_lease(&tx, lease, now_ms)? {
                return Ok(None);
            }
            let waited: Option<String> = tx.row(
                "SELECT wait_lock FROM intents WHERE id = ?1",
                [lease.intent],
                |r| r.get(0),
            )?;
            tx.exec(
                "UPDATE intents SET status = 'pending', lease_holder = NULL, lease_expires = NULL,
                        wait_lock = ?2, note = ?3, updated_at = ?4
                 WHERE id = ?1",
                params![lease.intent, lock, note, now_ms],
            )?;
            tx.commit()?;
            Ok(Some(waited.is_none()))
        })
    }

    fn begin_run(
        &self,
        req: &RunRequest,
        now_ms: i64,
        commit: bool,
    ) -> Result<Result<RunRecord, Refusal>, StoreError> {
        let (r, corrected) = self.with_conn(|c| {
            let mut tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let corrected = correct_future_starts(&tx, &req.playbook, now_ms)?;
            // The checks and reservations in a savepoint: a refusal undoes a lock taken before
            // the budget said no, but keeps the correction of future stamps.
            let sp = tx.savepoint()?;
            let r = check_and_reserve(&sp, req, &self.host, now_ms)?;
            if r.is_ok() {
                sp.commit()?;
            } else {
                drop(sp);
            }
            // Without `commit` the transaction rolls back as it drops: a dry run reserves (and
            // corrects) nothing.
            if commit && (r.is_ok() || corrected > 0) {
                tx.commit()?;
            }
            Ok((r, corrected))
        })?;
        if commit && corrected > 0 {
            tracing::warn!(
                playbook = %req.playbook,
                "{corrected} runs of playbook {} were stamped in the future (the clock was ahead); counted as started now",
                req.playbook
            );
        }
        Ok(r)
    }

    fn run_progress(
        &self,
        run_id: i64,
        step: i64,
        downtime_since: Option<i64>,
        fence: &Fence,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !holds(&tx, fence, now_ms)? {
                return Ok(false);
            }
            tx.exec(
                "UPDATE runs SET step = ?2, downtime_since = ?3 WHERE id = ?1",
                params![run_id, step, downtime_since],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn settle_run(&self, end: &RunEnd<'_>, audit: &AuditEntry) -> Result<Settled, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Already ended first: a recovery that ended it also took the lease, and "already
            // ended" is the truer word for what happened.
            if run(&tx, end.run_id)?.is_none_or(|r| r.ended_at.is_some()) {
                return Ok(Settled::AlreadyEnded);
            }
            if let Some(fence) = end.fence {
                if !holds(&tx, fence, end.now_ms)? {
                    return Ok(Settled::LeaseLost);
                }
            }
            if !end_run(&tx, end)? {
                return Ok(Settled::AlreadyEnded);
            }
            set_status(&tx, end.intent_id, end.status, Some(end.note), end.now_ms)?;
            super::audit::append(&tx, &self.host, audit)?;
            tx.commit()?;
            Ok(Settled::Ended)
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
        self.with_conn(|c| budget_usage(c, budget, day, Some(&self.host)))
    }

    fn acquire_lock(
        &self,
        name: &str,
        scope: Scope,
        holder: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Result<(), LockRecord>, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let r = acquire_lock(&tx, name, scope.key(&self.host), holder, lease_ms, now_ms)?;
            tx.commit()?;
            Ok(r.map(drop))
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
                "UPDATE intents SET lease_expires = ?2
                 WHERE status = 'running' AND lease_holder = ?1 AND lease_expires >= ?3",
                params![holder, now_ms + lease_ms, now_ms],
            )?;
            // The orchestrator's heartbeat: this host is alive.
            c.exec(
                "INSERT INTO hosts (host, last_seen_ms) VALUES (?1, ?2)
                 ON CONFLICT (host) DO UPDATE SET last_seen_ms = max(last_seen_ms, ?2)",
                params![self.host, now_ms],
            )?;
            // Runs hold locks as `HOLDER/INTENT`.
            c.exec(
                "UPDATE locks SET expires_at = ?2
                 WHERE (holder = ?1 OR substr(holder, 1, length(?1) + 1) = ?1 || '/')
                   AND expires_at >= ?3",
                params![holder, now_ms + lease_ms, now_ms],
            )
        })
    }

    fn locks(&self) -> Result<Vec<LockRecord>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {LOCK_COLUMNS} FROM locks ORDER BY name, scope"
            ))?;
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
