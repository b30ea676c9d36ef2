//! Invariant state and `for` first sightings in SQLite.

use super::SqliteStore;
use crate::store::{InvariantState, InvariantStore, PendingAlert, StoreError};
use rusqlite::{params, OptionalExtension};
use std::collections::BTreeMap;

impl InvariantStore for SqliteStore {
    fn invariant_states(&self) -> Result<BTreeMap<String, InvariantState>, StoreError> {
        self.with_conn(|c| {
            let mut stmt =
                c.prepare_cached("SELECT id, state, since_ms, violations FROM invariant_state")?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    InvariantState {
                        state: r.get(1)?,
                        since_ms: r.get(2)?,
                        violations: r.get(3)?,
                    },
                ))
            })?;
            rows.collect()
        })
    }

    fn save_invariant_state(
        &self,
        id: &str,
        s: &InvariantState,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute(
                "INSERT INTO invariant_state (id, state, since_ms, violations, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET state = ?2, since_ms = ?3, violations = ?4, updated_ms = ?5",
                params![id, s.state, s.since_ms, s.violations, now_ms],
            )?;
            Ok(())
        })
    }

    fn invariant_sightings(
        &self,
        id: &str,
        keys: &[String],
        now_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let mut out = Vec::with_capacity(keys.len());
            {
                tx.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS seen_keys (key TEXT PRIMARY KEY)",
                    [],
                )?;
                tx.execute("DELETE FROM seen_keys", [])?;
                let mut ins =
                    tx.prepare_cached("INSERT OR IGNORE INTO seen_keys (key) VALUES (?1)")?;
                let mut get = tx.prepare_cached(
                    "SELECT first_seen_ms FROM invariant_pending WHERE id = ?1 AND key = ?2",
                )?;
                let mut put = tx.prepare_cached(
                    "INSERT INTO invariant_pending (id, key, first_seen_ms) VALUES (?1, ?2, ?3)",
                )?;
                let mut fix = tx.prepare_cached(
                    "UPDATE invariant_pending SET first_seen_ms = ?3 WHERE id = ?1 AND key = ?2",
                )?;
                for k in keys {
                    ins.execute([k])?;
                    let first: Option<i64> =
                        get.query_row(params![id, k], |r| r.get(0)).optional()?;
                    out.push(match first {
                        // First seen in the future: the clock was ahead then. It counts as
                        // now, so the `for` timer restarts instead of never firing; the
                        // stamp is rewritten, so this is said once.
                        Some(t) if t > now_ms => {
                            fix.execute(params![id, k, now_ms])?;
                            tracing::warn!(
                                invariant = id,
                                "invariant {id}: violation {k:?} was first seen {:.1}h in the future (the clock was ahead); its `for` timer restarts now",
                                (t - now_ms) as f64 / 3_600_000.0
                            );
                            now_ms
                        }
                        Some(t) => t,
                        None => {
                            put.execute(params![id, k, now_ms])?;
                            now_ms
                        }
                    });
                }
                tx.execute(
                    "DELETE FROM invariant_pending WHERE id = ?1 AND key NOT IN (SELECT key FROM seen_keys)",
                    [id],
                )?;
            }
            tx.commit()?;
            Ok(out)
        })
    }

    fn queue_alert(&self, a: &PendingAlert) -> Result<bool, StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            let unsent_red: bool = tx
                .query_row(
                    "SELECT 1 FROM alert_outbox WHERE invariant = ?1 AND resolved = 0 AND sending = 0",
                    [&a.invariant],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            let queued = if a.resolved && unsent_red {
                tx.execute("DELETE FROM alert_outbox WHERE invariant = ?1", [&a.invariant])?;
                false
            } else {
                tx.execute(
                    "INSERT INTO alert_outbox (invariant, resolved, payload, created_ms, next_attempt_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT(invariant) DO UPDATE SET resolved = ?2, payload = ?3, created_ms = ?4, next_attempt_ms = ?5, sending = 0",
                    params![a.invariant, a.resolved, a.payload, a.created_ms, a.next_attempt_ms],
                )?;
                true
            };
            tx.commit()?;
            Ok(queued)
        })
    }

    fn due_alerts(&self, now_ms: i64) -> Result<Vec<PendingAlert>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "UPDATE alert_outbox SET sending = 1 WHERE next_attempt_ms <= ?1
                 RETURNING invariant, resolved, payload, created_ms, next_attempt_ms",
            )?;
            let rows = stmt.query_map([now_ms], |r| {
                Ok(PendingAlert {
                    invariant: r.get(0)?,
                    resolved: r.get(1)?,
                    payload: r.get(2)?,
                    created_ms: r.get(3)?,
                    next_attempt_ms: r.get(4)?,
                })
            })?;
            // RETURNING has no ORDER BY.
            let mut due: Vec<PendingAlert> = rows.collect::<Result<_, _>>()?;
            due.sort_by_key(|a| a.created_ms);
            Ok(due)
        })
    }

    fn alert_done(&self, invariant: &str, created_ms: i64) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute(
                "DELETE FROM alert_outbox WHERE invariant = ?1 AND created_ms = ?2",
                params![invariant, created_ms],
            )?;
            Ok(())
        })
    }

    fn alert_later(
        &self,
        invariant: &str,
        created_ms: i64,
        payload: &str,
        next_attempt_ms: i64,
    ) -> Result<(), StoreError> {
        self.with_conn(|c| {
            c.execute(
                "UPDATE alert_outbox SET payload = ?3, next_attempt_ms = ?4, sending = 0
                 WHERE invariant = ?1 AND created_ms = ?2",
                params![invariant, created_ms, payload, next_attempt_ms],
            )?;
            Ok(())
        })
    }
}
