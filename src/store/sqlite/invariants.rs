//! Invariant state and `for` first sightings in SQLite.

use super::SqliteStore;
use crate::store::{InvariantState, InvariantStore, StoreError};
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
}
