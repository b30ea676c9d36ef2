//! Canary runs in SQLite. The quiesced path's check-and-reserve is one IMMEDIATE transaction,
//! like a playbook run's (`runs.rs`), in the same budget ledger.

use super::runs::{reserve_budget, settle_budget};
use super::{Cached, SqliteStore};
use crate::store::{CanaryEnd, CanaryRunRecord, CanaryStore, NewCanaryRun, Refusal, StoreError};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

const COLUMNS: &str = "id, canary, mode, path, port, started_at, ended_at, result, reason, duration_ms, downtime_ms, budget, budget_day, reserved_ms, restore_pending, down_since, report";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CanaryRunRecord> {
    let port: Option<i64> = r.get(4)?;
    let report: Option<String> = r.get(16)?;
    Ok(CanaryRunRecord {
        id: r.get(0)?,
        canary: r.get(1)?,
        mode: r.get(2)?,
        path: r.get(3)?,
        port: port.and_then(|p| u16::try_from(p).ok()),
        started_at: r.get(5)?,
        ended_at: r.get(6)?,
        result: r.get(7)?,
        reason: r.get(8)?,
        duration_ms: r.get(9)?,
        downtime_ms: r.get(10)?,
        budget: r.get(11)?,
        budget_day: r.get(12)?,
        reserved_ms: r.get(13)?,
        restore_pending: r.get::<_, i64>(14)? != 0,
        down_since: r.get(15)?,
        report: report.and_then(|t| serde_json::from_str(&t).ok()),
    })
}

/// The cooldown counts from quiesced runs that were let through (denied ones never stopped
/// anything).
const LAST_QUIESCED: &str = "SELECT max(started_at) FROM canary_runs
     WHERE canary = ?1 AND path = 'quiesced' AND mode = 'canary' AND coalesce(result, '') != 'denied'";

impl CanaryStore for SqliteStore {
    fn begin_canary(
        &self,
        run: &NewCanaryRun,
        now_ms: i64,
        commit: bool,
    ) -> Result<Result<i64, Refusal>, StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(cooldown) = run.cooldown_ms {
                let last: Option<i64> = tx.row(LAST_QUIESCED, [&run.canary], |r| r.get(0))?;
                // A start stamped in the future (the clock was corrected) counts as now.
                if let Some(last) = last.map(|l| l.min(now_ms)) {
                    if now_ms - last < cooldown {
                        return Ok(Err(Refusal::Cooldown {
                            remaining_ms: last + cooldown - now_ms,
                        }));
                    }
                }
            }
            let mut scope = String::new();
            if let Some(b) = &run.budget {
                // Without `commit` the transaction is dropped: rolled back, nothing reserved.
                match reserve_budget(&tx, b, &self.host)? {
                    Ok(key) => scope = key,
                    Err(usage) => {
                        return Ok(Err(Refusal::Budget {
                            request: b.clone(),
                            usage,
                        }))
                    }
                }
            }
            if !commit {
                return Ok(Ok(0));
            }
            let (budget, day, want) = match &run.budget {
                Some(b) => (Some(b.name.as_str()), Some(b.day.as_str()), b.want_ms),
                None => (None, None, 0),
            };
            tx.exec(
                "INSERT INTO canary_runs (canary, mode, path, port, started_at, budget, budget_day, reserved_ms, budget_scope)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![run.canary, run.mode, run.path, run.port, now_ms, budget, day, want, scope],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(Ok(id))
        })
    }

    fn canary_restore_pending(&self, id: i64, down_since: i64) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.exec(
                "UPDATE canary_runs SET restore_pending = 1, down_since = ?2 WHERE id = ?1",
                params![id, down_since],
            )
            .map(drop)
        })
    }

    fn end_canary(&self, id: i64, end: &CanaryEnd) -> Result<bool, StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let run = tx
                .row(
                    &format!("SELECT {COLUMNS} FROM canary_runs WHERE id = ?1"),
                    [id],
                    from_row,
                )
                .optional()?;
            let Some(run) = run.filter(|r| r.ended_at.is_none()) else {
                return Ok(false);
            };
            if let (Some(b), Some(day)) = (&run.budget, &run.budget_day) {
                let scope: String = tx.row(
                    "SELECT budget_scope FROM canary_runs WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )?;
                settle_budget(&tx, b, day, &scope, end.downtime_ms, run.reserved_ms)?;
            }
            tx.exec(
                "UPDATE canary_runs SET ended_at = ?2, result = ?3, reason = ?4, duration_ms = ?5,
                        downtime_ms = ?6, report = ?7, restore_pending = 0 WHERE id = ?1",
                params![
                    id,
                    end.now_ms,
                    end.result,
                    end.reason,
                    end.duration_ms,
                    end.downtime_ms,
                    end.report.to_string()
                ],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    fn canary_run(&self, id: i64) -> Result<Option<CanaryRunRecord>, StoreError> {
        self.with_conn(|c| {
            c.row(
                &format!("SELECT {COLUMNS} FROM canary_runs WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()
        })
    }

    fn canary_runs(
        &self,
        canary: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CanaryRunRecord>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM canary_runs WHERE (?1 IS NULL OR canary = ?1)
                 ORDER BY started_at DESC, id DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![canary, limit as i64], from_row)?;
            rows.collect()
        })
    }

    fn last_quiesced(&self, canary: &str) -> Result<Option<i64>, StoreError> {
        self.with_conn(|c| c.row(LAST_QUIESCED, [canary], |r| r.get(0)))
    }

    fn pending_restores(&self) -> Result<Vec<CanaryRunRecord>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM canary_runs WHERE restore_pending = 1 AND ended_at IS NULL ORDER BY id"
            ))?;
            let rows = stmt.query_map([], from_row)?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BudgetRequest, BudgetUsage, RunStore, Scope};

    fn quiesced(want_ms: i64) -> NewCanaryRun {
        NewCanaryRun {
            canary: "judge".into(),
            mode: "canary".into(),
            path: Some("quiesced".into()),
            port: Some(9011),
            budget: Some(BudgetRequest {
                name: "gpu".into(),
                day: "2026-11-30".into(),
                limit_ms: 60_000,
                want_ms,
                scope: Scope::Host,
            }),
            cooldown_ms: Some(6 * 3_600_000),
        }
    }

    fn end(result: &str, downtime_ms: i64, now_ms: i64) -> CanaryEnd {
        CanaryEnd {
            result: result.into(),
            reason: "r".into(),
            duration_ms: 1,
            downtime_ms,
            report: serde_json::json!({"k": 1}),
            now_ms,
        }
    }

    #[test]
    fn a_quiesced_run_reserves_then_charges_its_downtime_and_starts_the_cooldown() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open_dir(dir.path()).unwrap();
        let id = s
            .begin_canary(&quiesced(15_000), 1_000, true)
            .unwrap()
            .unwrap();
        assert_eq!(
            s.budget_usage("gpu", "2026-11-30").unwrap(),
            BudgetUsage {
                used_ms: 0,
                reserved_ms: 15_000
            }
        );
        s.canary_restore_pending(id, 1_500).unwrap();
        assert_eq!(s.pending_restores().unwrap()[0].down_since, Some(1_500));
        assert!(s.end_canary(id, &end("promoted", 4_200, 9_000)).unwrap());
        assert!(
            !s.end_canary(id, &end("failed", 9_999, 9_500)).unwrap(),
            "first end wins"
        );
        assert_eq!(
            s.budget_usage("gpu", "2026-11-30").unwrap(),
            BudgetUsage {
                used_ms: 4_200,
                reserved_ms: 0
            }
        );
        assert!(s.pending_restores().unwrap().is_empty());
        let r = s.canary_run(id).unwrap().unwrap();
        assert_eq!(r.result.as_deref(), Some("promoted"));
        assert_eq!(r.report, Some(serde_json::json!({"k": 1})));
        // Within six hours of its start: refused with the time left.
        let refused = s
            .begin_canary(&quiesced(1), 1_000 + 3_600_000, true)
            .unwrap();
        assert_eq!(
            refused,
            Err(Refusal::Cooldown {
                remaining_ms: 5 * 3_600_000
            })
        );
        assert_eq!(s.last_quiesced("judge").unwrap(), Some(1_000));
        // After it, but over budget: 4.2 s used, 57 s wanted of 60.
        let later = 1_000 + 6 * 3_600_000;
        match s.begin_canary(&quiesced(57_000), later, true).unwrap() {
            Err(Refusal::Budget { usage, .. }) => assert_eq!(usage.used_ms, 4_200),
            other => panic!("{other:?}"),
        }
        // A dry check writes nothing.
        assert_eq!(
            s.begin_canary(&quiesced(1_000), later, false).unwrap(),
            Ok(0)
        );
        assert_eq!(s.canary_runs(Some("judge"), 10).unwrap().len(), 1);
    }
}
