//! The audit trail's rows in SQLite.

use super::{Cached, SqliteStore};
use crate::audit::AuditEntry;
use crate::store::{AuditStore, StoreError};
use rusqlite::{params, Connection};

/// Appends inside the caller's connection or transaction (`settle_run` ends a run with it).
pub(super) fn append(conn: &Connection, host: &str, e: &AuditEntry) -> rusqlite::Result<()> {
    conn.exec(
        "INSERT INTO audit (ts, event, intent, playbook, details, host) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![e.ts, e.event, e.intent, e.playbook, e.details.to_string(), host],
    )
    .map(drop)
}

impl AuditStore for SqliteStore {
    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.with_conn(|c| append(c, &self.host, entry))
    }

    fn audit_tail(&self, n: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT ts, event, intent, playbook, details, host FROM audit ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = stmt.query_map([n as i64], |r| {
                let details: String = r.get(4)?;
                Ok(AuditEntry {
                    ts: r.get(0)?,
                    event: r.get(1)?,
                    intent: r.get(2)?,
                    playbook: r.get(3)?,
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                    host: r.get(5)?,
                })
            })?;
            let mut v: Vec<AuditEntry> = rows.collect::<rusqlite::Result<_>>()?;
            v.reverse();
            Ok(v)
        })
    }

    fn audit_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT event, count(*) FROM audit GROUP BY event ORDER BY event",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    fn prune_audit(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.with_conn(|c| c.exec("DELETE FROM audit WHERE ts < ?1", [before_ms]))
    }
}
