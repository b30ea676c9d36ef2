//! Claims, runs, budgets and locks in PostgreSQL. Every check-and-reserve is one transaction
//! under the store's write lock; claims take the next intent with `FOR UPDATE SKIP LOCKED`.

use super::intents::{row_to_intent, set_status, INTENT_COLUMNS};
use super::{Conn, PgStore};
use crate::audit::AuditEntry;
use crate::intent::IntentStatus;
use crate::store::{
    BudgetRequest, BudgetUsage, Claim, Fence, Lease, LeaseFence, LockRecord, Refusal, RunEnd,
    RunRecord, RunRequest, RunStore, Scope, Settled, StoreError, FLEET,
};
use tokio_postgres::{Error, Row};

const RUN_COLUMNS: &str = "id, intent_id, playbook, mode, holder, started_at, ended_at, result, budget, budget_day, reserved_ms, downtime_ms, lock_name, step, downtime_since, lock_epoch, budget_scope, host";

const LOCK_COLUMNS: &str = "name, scope, holder, acquired_at, expires_at, epoch";

/// The next value of the named sequence (1, 2, ...): epochs that only grow, even across
/// deleted rows.
fn next_seq(c: &Conn, name: &str) -> Result<i64, Error> {
    Ok(c.one(
        "INSERT INTO sequences (name, value) VALUES ($1, 1)
         ON CONFLICT (name) DO UPDATE SET value = sequences.value + 1 RETURNING value",
        &[&name],
    )?
    .get(0))
}

fn exists(c: &Conn, sql: &str, params: super::Params<'_>) -> Result<bool, Error> {
    Ok(c.one(sql, params)?.get(0))
}

/// Whether `lease` still holds at `now_ms`.
fn holds_lease(c: &Conn, lease: &LeaseFence, now_ms: i64) -> Result<bool, Error> {
    exists(
        c,
        "SELECT EXISTS (SELECT 1 FROM intents WHERE id = $1 AND status = 'running'
                AND lease_holder = $2 AND lease_epoch = $3 AND lease_expires >= $4)",
        &[&lease.intent, &lease.holder, &lease.epoch, &now_ms],
    )
}

/// Whether all of `fence` holds at `now_ms`.
fn holds(c: &Conn, fence: &Fence, now_ms: i64) -> Result<bool, Error> {
    if !holds_lease(c, &fence.lease, now_ms)? {
        return Ok(false);
    }
    let Some(lock) = &fence.lock else {
        return Ok(true);
    };
    exists(
        c,
        "SELECT EXISTS (SELECT 1 FROM locks WHERE name = $1 AND holder = $2 AND epoch = $3
                AND expires_at >= $4)",
        &[&lock.name, &lock.holder, &lock.epoch, &now_ms],
    )
}

fn row_to_run(r: &Row) -> RunRecord {
    RunRecord {
        id: r.get(0),
        intent_id: r.get(1),
        playbook: r.get(2),
        mode: r.get(3),
        holder: r.get(4),
        started_at: r.get(5),
        ended_at: r.get(6),
        result: r.get(7),
        budget: r.get(8),
        budget_day: r.get(9),
        reserved_ms: r.get(10),
        downtime_ms: r.get(11),
        lock_name: r.get(12),
        step: r.get(13),
        downtime_since: r.get(14),
        lock_epoch: r.get(15),
        budget_scope: r.get(16),
        host: r.get(17),
    }
}

fn run(c: &Conn, id: i64) -> Result<Option<RunRecord>, Error> {
    Ok(c.opt(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"),
        &[&id],
    )?
    .as_ref()
    .map(row_to_run))
}

fn row_to_lock(r: &Row) -> LockRecord {
    LockRecord {
        name: r.get(0),
        scope: r.get(1),
        holder: r.get(2),
        acquired_at: r.get(3),
        expires_at: r.get(4),
        epoch: r.get(5),
    }
}

/// A budget's day: the rows `host` sees (its own, the fleet's and those from before scopes),
/// or every host's with `host` `None` (what a fleet budget counts).
fn budget_usage(
    c: &Conn,
    budget: &str,
    day: &str,
    host: Option<&str>,
) -> Result<BudgetUsage, Error> {
    let r = c.one(
        "SELECT coalesce(sum(used_ms), 0)::bigint, coalesce(sum(reserved_ms), 0)::bigint FROM budget_ledger
         WHERE budget = $1 AND day = $2 AND ($3::text IS NULL OR scope IN ($3, '*', ''))",
        &[&budget, &day, &host],
    )?;
    Ok(BudgetUsage {
        used_ms: r.get(0),
        reserved_ms: r.get(1),
    })
}

/// Reserves `b.want_ms` under `b`'s scope unless its day cannot cover it (a fleet budget
/// counts every host's downtime, a host budget this host's); returns the scope key reserved
/// under, or the usage that refused it. Inside the caller's transaction (under the store's
/// write lock, so hosts racing for one fleet budget reserve one at a time).
pub(super) fn reserve_budget(
    c: &Conn,
    b: &BudgetRequest,
    host: &str,
) -> Result<Result<String, BudgetUsage>, Error> {
    let seen = (b.scope == Scope::Host).then_some(host);
    let usage = budget_usage(c, &b.name, &b.day, seen)?;
    if usage.used_ms + usage.reserved_ms + b.want_ms > b.limit_ms {
        return Ok(Err(usage));
    }
    let key = b.scope.key(host);
    c.exec(
        "INSERT INTO budget_ledger (budget, day, scope, used_ms, reserved_ms) VALUES ($1, $2, $3, 0, $4)
         ON CONFLICT (budget, day, scope) DO UPDATE SET reserved_ms = budget_ledger.reserved_ms + $4",
        &[&b.name, &b.day, &key, &b.want_ms],
    )?;
    Ok(Ok(key.to_string()))
}

/// Releases a reservation of `reserved_ms` and charges `downtime_ms`, on the ledger row of
/// `scope` (the key `reserve_budget` returned). Inside the caller's transaction.
pub(super) fn settle_budget(
    c: &Conn,
    budget: &str,
    day: &str,
    scope: &str,
    downtime_ms: i64,
    reserved_ms: i64,
) -> Result<(), Error> {
    c.exec(
        "INSERT INTO budget_ledger (budget, day, scope, used_ms, reserved_ms) VALUES ($1, $2, $3, $4, 0)
         ON CONFLICT (budget, day, scope) DO UPDATE SET reserved_ms = greatest(0, budget_ledger.reserved_ms - $5),
            used_ms = budget_ledger.used_ms + $4",
        &[&budget, &day, &scope, &downtime_ms, &reserved_ms],
    )?;
    Ok(())
}

/// Takes `name` in `scope` (a key: the host, or `*`) for `holder` with a new epoch, which it
/// returns, unless another holds it.
fn acquire_lock(
    c: &Conn,
    name: &str,
    scope: &str,
    holder: &str,
    lease_ms: i64,
    now_ms: i64,
) -> Result<Result<i64, LockRecord>, Error> {
    let current = c
        .opt(
            // A lock taken before scopes ('') is the same lock for every host.
            &format!(
                "SELECT {LOCK_COLUMNS} FROM locks WHERE name = $1 AND scope IN ($2, '')
                 ORDER BY scope DESC LIMIT 1"
            ),
            &[&name, &scope],
        )?
        .as_ref()
        .map(row_to_lock);
    if let Some(cur) = current {
        // On a host lock an expired lease means the holder died or stalled: the lock is free
        // again (the stalled holder finds out through its fence: the epoch changes here). A
        // fleet lock's holder may be a host that is still acting, cut off from the store: it
        // stays held until that host settles its run or an operator frees it.
        if cur.holder != holder && (cur.expires_at > now_ms || scope == FLEET) {
            return Ok(Err(cur));
        }
    }
    let epoch = next_seq(c, "lock")?;
    c.exec("DELETE FROM locks WHERE name = $1 AND scope = ''", &[&name])?;
    c.exec(
        "INSERT INTO locks (name, scope, holder, acquired_at, expires_at, epoch) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (name, scope) DO UPDATE SET holder = $3, acquired_at = $4, expires_at = $5, epoch = $6",
        &[&name, &scope, &holder, &now_ms, &(now_ms + lease_ms), &epoch],
    )?;
    Ok(Ok(epoch))
}

/// The checks of `begin_run` and, when they pass, the reservations, inside the transaction.
fn check_and_reserve(
    c: &Conn,
    req: &RunRequest,
    host: &str,
    now_ms: i64,
) -> Result<Result<RunRecord, Refusal>, Error> {
    if let Some(lease) = &req.lease {
        if !holds_lease(c, lease, now_ms)? {
            return Ok(Err(Refusal::LeaseLost));
        }
    }
    if let Some(cooldown) = req.cooldown_ms {
        let last: Option<i64> = c
            .one(
                "SELECT max(started_at) FROM runs WHERE playbook = $1
                   AND ($2::text IS NULL OR host IN ($2, ''))",
                &[
                    &req.playbook,
                    &(req.cooldown_scope == Scope::Host).then_some(host),
                ],
            )?
            .get(0);
        if let Some(last) = last {
            let remaining_ms = last + cooldown - now_ms;
            if remaining_ms > 0 {
                return Ok(Err(Refusal::Cooldown { remaining_ms }));
            }
        }
    }
    if let Some((max, within_ms)) = req.max_runs {
        let starts: Vec<i64> = c
            .rows(
                "SELECT started_at FROM runs WHERE playbook = $1 AND started_at > $2
                   AND ($3::text IS NULL OR host IN ($3, '')) ORDER BY started_at",
                &[
                    &req.playbook,
                    &(now_ms - within_ms),
                    &(req.max_runs_scope == Scope::Host).then_some(host),
                ],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
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
            c,
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
        match reserve_budget(c, b, host)? {
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
    let id: i64 = c
        .one(
            "INSERT INTO runs (intent_id, playbook, mode, holder, started_at, budget, budget_day, reserved_ms, lock_name, lock_epoch, host, budget_scope)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
            &[&req.intent_id, &req.playbook, &req.mode, &req.holder, &now_ms, &budget, &day, &want, &req.lock, &lock_epoch, &host, &budget_scope],
        )?
        .get(0);
    Ok(Ok(RunRecord {
        id,
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
fn end_run(c: &Conn, end: &RunEnd<'_>) -> Result<bool, Error> {
    let Some(run) = run(c, end.run_id)? else {
        return Ok(false);
    };
    if run.ended_at.is_some() {
        return Ok(false);
    }
    if let (Some(b), Some(day)) = (&run.budget, &run.budget_day) {
        settle_budget(
            c,
            b,
            day,
            &run.budget_scope,
            end.downtime_ms,
            run.reserved_ms,
        )?;
    }
    if let Some(lock) = &run.lock_name {
        // Only the acquisition this run made: the same holder name may hold it again later.
        c.exec(
            "DELETE FROM locks WHERE name = $1 AND holder = $2 AND (epoch = $3 OR $3 = 0)",
            &[lock, &run.holder, &run.lock_epoch],
        )?;
    }
    c.exec(
        "UPDATE runs SET ended_at = $2, result = $3, downtime_ms = $4, downtime_since = NULL WHERE id = $1",
        &[&end.run_id, &end.now_ms, &end.status.as_str(), &end.downtime_ms],
    )?;
    Ok(true)
}

impl RunStore for PgStore {
    fn claim_intent(
        &self,
        holder: &str,
        lease_ms: i64,
        intent_ttl_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Claim>, StoreError> {
        // One statement; `SKIP LOCKED`: claimers on other hosts pass over the row another is
        // taking instead of waiting for it, and never take the same intent.
        let row = self.with_conn(|c| {
            c.opt(
                &format!(
                    "UPDATE intents SET status = 'running', lease_holder = $1, lease_expires = $2, updated_at = $3,
                            lease_epoch = lease_epoch + 1
                     WHERE id = (SELECT id FROM intents i WHERE status = 'pending'
                                   AND host IN ($5, '*', '')
                                   AND (wait_lock IS NULL OR created_at < $3::bigint - $4::bigint
                                        OR NOT EXISTS (SELECT 1 FROM locks l
                                                       WHERE l.name = i.wait_lock
                                                         AND l.scope IN ($5, '*', '')
                                                         AND (l.expires_at > $3 OR l.scope = '*')))
                                 ORDER BY priority DESC, created_at, id LIMIT 1
                                 FOR UPDATE SKIP LOCKED)
                       AND status = 'pending'
                     RETURNING {INTENT_COLUMNS}, lease_epoch"
                ),
                &[&holder, &(now_ms + lease_ms), &now_ms, &intent_ttl_ms, &self.host],
            )
        })?;
        row.map(|r| {
            Ok(Claim {
                intent: row_to_intent(&r)?,
                epoch: r.get(12),
            })
        })
        .transpose()
    }

    fn running_intents(&self) -> Result<Vec<Lease>, StoreError> {
        let rows = self.with_conn(|c| {
            c.rows(
                "SELECT id, lease_holder, lease_expires, lease_epoch FROM intents WHERE status = 'running' ORDER BY id",
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| Lease {
                intent: r.get(0),
                holder: r.get(1),
                expires_at: r.get(2),
                epoch: r.get(3),
            })
            .collect())
    }

    fn take_over_intent(
        &self,
        id: i64,
        old: Option<&str>,
        new: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let row = self.with_conn(|c| {
            c.opt(
                "UPDATE intents SET lease_holder = $3, lease_expires = $4, lease_epoch = lease_epoch + 1
                 WHERE id = $1 AND status = 'running' AND lease_holder IS NOT DISTINCT FROM $2::text
                 RETURNING lease_epoch",
                &[&id, &old, &new, &(now_ms + lease_ms)],
            )
        })?;
        Ok(row.map(|r| r.get(0)))
    }

    fn set_intent_status_fenced(
        &self,
        lease: &LeaseFence,
        status: IntentStatus,
        note: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.write_maybe(|c| {
            if !holds_lease(c, lease, now_ms)? {
                return Ok((false, false));
            }
            set_status(c, lease.intent, status, Some(note), now_ms)?;
            Ok((true, true))
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
        self.write_maybe(|c| {
            if !holds_lease(c, lease, now_ms)? {
                return Ok((None, false));
            }
            let waited: Option<String> = c
                .one(
                    "SELECT wait_lock FROM intents WHERE id = $1",
                    &[&lease.intent],
                )?
                .get(0);
            c.exec(
                "UPDATE intents SET status = 'pending', lease_holder = NULL, lease_expires = NULL,
                        wait_lock = $2, note = $3, updated_at = $4
                 WHERE id = $1",
                &[&lease.intent, &lock, &note, &now_ms],
            )?;
            Ok((Some(waited.is_none()), true))
        })
    }

    fn begin_run(
        &self,
        req: &RunRequest,
        now_ms: i64,
        commit: bool,
    ) -> Result<Result<RunRecord, Refusal>, StoreError> {
        let (r, corrected) = self.write_maybe(|c| {
            let corrected = c.exec(
                "UPDATE runs SET started_at = $2 WHERE playbook = $1 AND started_at > $2",
                &[&req.playbook, &now_ms],
            )?;
            // The checks and reservations in a savepoint: a refusal undoes a lock taken before
            // the budget said no, but keeps the correction of future stamps.
            c.batch("SAVEPOINT gates")?;
            let r = check_and_reserve(c, req, &self.host, now_ms)?;
            c.batch(if r.is_ok() {
                "RELEASE SAVEPOINT gates"
            } else {
                "ROLLBACK TO SAVEPOINT gates"
            })?;
            // Without `commit` the transaction rolls back: a dry run reserves (and corrects)
            // nothing.
            let keep = commit && (r.is_ok() || corrected > 0);
            Ok(((r, corrected), keep))
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
        self.write_maybe(|c| {
            if !holds(c, fence, now_ms)? {
                return Ok((false, false));
            }
            c.exec(
                "UPDATE runs SET step = $2, downtime_since = $3 WHERE id = $1",
                &[&run_id, &step, &downtime_since],
            )?;
            Ok((true, true))
        })
    }

    fn settle_run(&self, end: &RunEnd<'_>, audit: &AuditEntry) -> Result<Settled, StoreError> {
        self.write_maybe(|c| {
            // Already ended first: a recovery that ended it also took the lease, and "already
            // ended" is the truer word for what happened.
            if run(c, end.run_id)?.is_none_or(|r| r.ended_at.is_some()) {
                return Ok((Settled::AlreadyEnded, false));
            }
            if let Some(fence) = end.fence {
                if !holds(c, fence, end.now_ms)? {
                    return Ok((Settled::LeaseLost, false));
                }
            }
            if !end_run(c, end)? {
                return Ok((Settled::AlreadyEnded, false));
            }
            set_status(c, end.intent_id, end.status, Some(end.note), end.now_ms)?;
            super::audit::append(c, &self.host, audit)?;
            Ok((Settled::Ended, true))
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
        let rows = self.with_conn(|c| {
            c.rows(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE ($1::text IS NULL OR playbook = $1) AND started_at > $2
                     AND (NOT $3 OR ended_at IS NULL) ORDER BY started_at DESC, id DESC"
                ),
                &[&playbook, &since_ms, &open_only],
            )
        })?;
        Ok(rows.iter().map(row_to_run).collect())
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
        let key = scope.key(&self.host);
        self.write(|c| Ok(acquire_lock(c, name, key, holder, lease_ms, now_ms)?.map(drop)))
    }

    fn release_lock(&self, name: &str, holder: &str) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            c.exec(
                "DELETE FROM locks WHERE name = $1 AND holder = $2",
                &[&name, &holder],
            )
            .map(|n| n > 0)
        })
    }

    fn renew_leases(&self, holder: &str, lease_ms: i64, now_ms: i64) -> Result<usize, StoreError> {
        let until = now_ms + lease_ms;
        self.with_conn(|c| {
            c.exec(
                "UPDATE intents SET lease_expires = $2
                 WHERE status = 'running' AND lease_holder = $1 AND lease_expires >= $3",
                &[&holder, &until, &now_ms],
            )?;
            // The orchestrator's heartbeat: this host is alive.
            c.exec(
                "INSERT INTO hosts (host, last_seen_ms) VALUES ($1, $2)
                 ON CONFLICT (host) DO UPDATE SET last_seen_ms = greatest(hosts.last_seen_ms, $2)",
                &[&self.host, &now_ms],
            )?;
            // Runs hold locks as `HOLDER/INTENT`.
            c.exec(
                "UPDATE locks SET expires_at = $2
                 WHERE (holder = $1 OR substr(holder, 1, length($1) + 1) = $1 || '/')
                   AND expires_at >= $3",
                &[&holder, &until, &now_ms],
            )
        })
        .map(|n| n as usize)
    }

    fn locks(&self) -> Result<Vec<LockRecord>, StoreError> {
        let rows = self.with_conn(|c| {
            c.rows(
                &format!("SELECT {LOCK_COLUMNS} FROM locks ORDER BY name, scope"),
                &[],
            )
        })?;
        Ok(rows.iter().map(row_to_lock).collect())
    }

    fn prune_runs(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.write(|c| {
            let mut n = c.exec(
                "DELETE FROM runs WHERE ended_at IS NOT NULL AND started_at < $1",
                &[&before_ms],
            )?;
            n += c.exec(
                "DELETE FROM budget_ledger WHERE reserved_ms = 0
                   AND day < to_char(to_timestamp($1::bigint / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
                &[&before_ms],
            )?;
            Ok(n as usize)
        })
    }
}
