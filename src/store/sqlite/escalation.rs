//! Symptoms and escalation flags in SQLite.

use super::{Cached, SqliteStore};
use crate::escalation::{Flag, Symptom, SymptomPolicy, SymptomRecorded};
use crate::event::Data;
use crate::store::{EscalationStore, Scope, StoreError};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

const FLAG_COLUMNS: &str = "kind, reason, symptom_count, armed_at, expires_at, cleared_at";

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

/// The flag of `kind` in `scope` (a key: the host, or `*`).
fn flag(conn: &Connection, kind: &str, scope: &str) -> rusqlite::Result<Option<Flag>> {
    conn.row(
        &format!("SELECT {FLAG_COLUMNS} FROM escalation_flags WHERE kind = ?1 AND scope = ?2"),
        [kind, scope],
        row_to_flag,
    )
    .optional()
}

impl EscalationStore for SqliteStore {
    fn record_symptom(
        &self,
        kind: &str,
        meta: &Data,
        now_ms: i64,
        p: SymptomPolicy,
    ) -> Result<SymptomRecorded, StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.exec(
                "INSERT INTO symptoms (kind, ts, meta, host) VALUES (?1, ?2, ?3, ?4)",
                params![kind, now_ms, serde_json::to_string(meta).expect("JSON"), self.host],
            )?;
            let id = tx.last_insert_rowid();
            let key = p.scope.key(&self.host);
            let own = (p.scope == Scope::Host).then_some(self.host.as_str());
            let current = flag(&tx, kind, key)?;
            // Symptoms before a clear were answered by the run that cleared the flag: they do
            // not count.
            let since = (now_ms - p.window_ms)
                .max(current.as_ref().and_then(|f| f.cleared_at).unwrap_or(i64::MIN));
            let count: u32 = tx.row(
                "SELECT count(*) FROM symptoms WHERE kind = ?1 AND ts > ?2 AND ts <= ?3
                   AND (?4 IS NULL OR host IN (?4, ''))",
                params![kind, since, now_ms, own],
                |r| r.get(0),
            )?;
            let active = current.as_ref().is_some_and(|f| f.is_armed(now_ms));
            let armed = if active {
                None
            } else {
                p.arm(kind, count, now_ms)
            };
            if let Some(f) = &armed {
                tx.exec(
                    "INSERT OR REPLACE INTO escalation_flags (kind, scope, reason, symptom_count, armed_at, expires_at, cleared_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)",
                    params![f.kind, key, f.reason, f.symptom_count, f.armed_at, f.expires_at],
                )?;
            }
            tx.commit()?;
            Ok(SymptomRecorded { id, count, armed })
        })
    }

    fn symptoms(
        &self,
        kind: Option<&str>,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<Symptom>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, kind, ts, meta, host FROM symptoms WHERE (?1 IS NULL OR kind = ?1) AND ts > ?2
                 ORDER BY ts DESC, id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![kind, since_ms, limit as i64], |r| {
                let meta: String = r.get(3)?;
                Ok(Symptom {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    ts: r.get(2)?,
                    meta: serde_json::from_str(&meta).unwrap_or_default(),
                    host: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    fn symptom_counts(&self, since_ms: i64) -> Result<Vec<(String, u32)>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT kind, count(*) FROM symptoms WHERE ts > ?1 GROUP BY kind ORDER BY kind",
            )?;
            let rows = stmt.query_map([since_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    fn flags(&self) -> Result<Vec<Flag>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {FLAG_COLUMNS} FROM escalation_flags WHERE scope IN (?1, '*', '') ORDER BY kind, scope"
            ))?;
            let rows = stmt.query_map([&self.host], row_to_flag)?;
            rows.collect()
        })
    }

    fn clear_flag(
        &self,
        kind: &str,
        scope: Scope,
        now_ms: i64,
    ) -> Result<Option<Flag>, StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut was_armed = None;
            for key in [self.host.as_str(), "*", ""] {
                was_armed = was_armed.or(flag(&tx, kind, key)?.filter(|f| f.is_armed(now_ms)));
            }
            tx.exec(
                "UPDATE escalation_flags SET cleared_at = ?2
                 WHERE kind = ?1 AND scope IN (?3, '*', '') AND cleared_at IS NULL",
                params![kind, now_ms, self.host],
            )?;
            // A row is kept (or made) so symptoms before this clear stop counting towards a
            // new flag.
            tx.exec(
                "INSERT INTO escalation_flags (kind, scope, reason, symptom_count, armed_at, expires_at, cleared_at)
                 VALUES (?1, ?3, 'cleared', 0, ?2, ?2, ?2)
                 ON CONFLICT (kind, scope) DO UPDATE SET cleared_at = ?2",
                params![kind, now_ms, scope.key(&self.host)],
            )?;
            tx.commit()?;
            Ok(was_armed)
        })
    }

    fn prune_symptoms(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.with_conn(|c| c.exec("DELETE FROM symptoms WHERE ts < ?1", [before_ms]))
    }
}
