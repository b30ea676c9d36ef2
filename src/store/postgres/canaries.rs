//! Canary runs in PostgreSQL, as in `sqlite/canaries.rs`: the quiesced path's check-and-reserve
//! runs under the store's write lock, in the same budget ledger as playbook runs.

use super::runs::{reserve_budget, settle_budget};
use super::PgStore;
use crate::store::{CanaryEnd, CanaryRunRecord, CanaryStore, NewCanaryRun, Refusal, StoreError};
use tokio_postgres::Row;

const COLUMNS: &str = "id, canary, mode, path, port, started_at, ended_at, result, reason, duration_ms, downtime_ms, budget, budget_day, reserved_ms, restore_pending, down_since, report";

fn from_row(r: &Row) -> CanaryRunRecord {
    let port: Option<i64> = r.get(4);
    let report: Option<String> = r.get(16);
    CanaryRunRecord {
        id: r.get(0),
        canary: r.get(1),
        mode: r.get(2),
        path: r.get(3),
        port: port.and_then(|p| u16::try_from(p).ok()),
        started_at: r.get(5),
        ended_at: r.get(6),
        result: r.get(7),
        reason: r.get(8),
        duration_ms: r.get(9),
        downtime_ms: r.get(10),
        budget: r.get(11),
        budget_day: r.get(12),
        reserved_ms: r.get(13),
        restore_pending: r.get(14),
        down_since: r.get(15),
        report: report.and_then(|t| serde_json::from_str(&t).ok()),
    }
}

/// The cooldown counts from quiesced runs that were let through (denied ones never stopped
/// anything).
const LAST_QUIESCED: &str = "SELECT max(started_at) FROM canary_runs
     WHERE canary = $1 AND path = 'quiesced' AND mode = 'canary' AND coalesce(result, '') != 'denied'";

impl CanaryStore for PgStore {
    fn begin_canary(
        &self,
        run: &NewCanaryRun,
        now_ms: i64,
        commit: bool,
    ) -> Result<Result<i64, Refusal>, StoreError> {
        let port = run.port.map(i64::from);
        self.write_maybe(|c| {
            if let Some(cooldown) = run.cooldown_ms {
                let last: Option<i64> = c.one(LAST_QUIESCED, &[&run.canary])?.get(0);
                // A start stamped in the future (the clock was corrected) counts as now.
                if let Some(last) = last.map(|l| l.min(now_ms)) {
                    if now_ms - last < cooldown {
                        return Ok((
                            Err(Refusal::Cooldown {
                                remaining_ms: last + cooldown - now_ms,
                            }),
                            false,
                        ));
                    }
                }
            }
            let mut scope = String::new();
            if let Some(b) = &run.budget {
                // Without `commit` the transaction rolls back: nothing reserved.
                match reserve_budget(c, b, &self.host)? {
                    Ok(key) => scope = key,
                    Err(usage) => {
                        return Ok((
                            Err(Refusal::Budget {
                                request: b.clone(),
                                usage,
                            }),
                            false,
                        ))
                    }
                }
            }
            if !commit {
                return Ok((Ok(0), false));
            }
            let (budget, day, want) = match &run.budget {
                Some(b) => (Some(b.name.as_str()), Some(b.day.as_str()), b.want_ms),
                None => (None, None, 0),
            };
            let id: i64 = c
                .one(
                    "INSERT INTO canary_runs (canary, mode, path, port, started_at, budget, budget_day, reserved_ms, budget_scope)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                    &[&run.canary, &run.mode, &run.path, &port, &now_ms, &budget, &day, &want, &scope],
                )?
                .get(0);
            Ok((Ok(id), true))
        })
    }

    fn canary_restore_pending(&self, id: i64, down_since: i64) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.exec(
                "UPDATE canary_runs SET restore_pending = true, down_since = $2 WHERE id = $1",
                &[&id, &down_since],
            )
            .map(drop)
        })
    }

    fn end_canary(&self, id: i64, end: &CanaryEnd) -> Result<bool, StoreError> {
        let report = end.report.to_string();
        self.write(|c| {
            let run = c
                .opt(
                    &format!("SELECT {COLUMNS} FROM canary_runs WHERE id = $1 FOR UPDATE"),
                    &[&id],
                )?
                .map(|r| from_row(&r));
            let Some(run) = run.filter(|r| r.ended_at.is_none()) else {
                return Ok(false);
            };
            if let (Some(b), Some(day)) = (&run.budget, &run.budget_day) {
                let scope: String = c
                    .one("SELECT budget_scope FROM canary_runs WHERE id = $1", &[&id])?
                    .get(0);
                settle_budget(c, b, day, &scope, end.downtime_ms, run.reserved_ms)?;
            }
            c.exec(
                "UPDATE canary_runs SET ended_at = $2, result = $3, reason = $4, duration_ms = $5,
                        downtime_ms = $6, report = $7, restore_pending = false WHERE id = $1",
                &[
                    &id,
                    &end.now_ms,
                    &end.result,
                    &end.reason,
                    &end.duration_ms,
                    &end.downtime_ms,
                    &report,
                ],
            )?;
            Ok(true)
        })
    }

    fn canary_run(&self, id: i64) -> Result<Option<CanaryRunRecord>, StoreError> {
        let row = self.with_conn(|c| {
            c.opt(
                &format!("SELECT {COLUMNS} FROM canary_runs WHERE id = $1"),
                &[&id],
            )
        })?;
        Ok(row.map(|r| from_row(&r)))
    }

    fn canary_runs(
        &self,
        canary: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CanaryRunRecord>, StoreError> {
        let limit = limit as i64;
        let rows = self.with_conn(|c| {
            c.rows(
                &format!(
                    "SELECT {COLUMNS} FROM canary_runs WHERE ($1::text IS NULL OR canary = $1)
                     ORDER BY started_at DESC, id DESC LIMIT $2"
                ),
                &[&canary, &limit],
            )
        })?;
        Ok(rows.iter().map(from_row).collect())
    }

    fn last_quiesced(&self, canary: &str) -> Result<Option<i64>, StoreError> {
        self.with_conn(|c| Ok(c.one(LAST_QUIESCED, &[&canary])?.get(0)))
    }

    fn pending_restores(&self) -> Result<Vec<CanaryRunRecord>, StoreError> {
        let rows = self.with_conn(|c| {
            c.rows(
                &format!(
                    "SELECT {COLUMNS} FROM canary_runs WHERE restore_pending AND ended_at IS NULL ORDER BY id"
                ),
                &[],
            )
        })?;
        Ok(rows.iter().map(from_row).collect())
    }
}
