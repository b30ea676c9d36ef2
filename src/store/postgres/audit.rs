//! The audit trail's rows in PostgreSQL.

use super::{Conn, PgStore};
use crate::audit::AuditEntry;
use crate::store::{AuditStore, StoreError};

/// Appends inside the caller's transaction (`settle_run` ends a run with it).
pub(super) fn append(c: &Conn, host: &str, e: &AuditEntry) -> Result<(), tokio_postgres::Error> {
    c.exec(
        "INSERT INTO audit (ts, event, intent, playbook, details, host) VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &e.ts,
            &e.event,
            &e.intent,
            &e.playbook,
            &e.details.to_string(),
            &host,
        ],
    )
    .map(drop)
}

impl AuditStore for PgStore {
    fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.with_conn(|c| append(c, &self.host, entry))
    }

    fn audit_tail(&self, n: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self.with_conn(|c| {
            c.rows(
                "SELECT ts, event, intent, playbook, details, host FROM audit ORDER BY id DESC LIMIT $1",
                &[&(n as i64)],
            )
        })?;
        let mut v: Vec<AuditEntry> = rows
            .iter()
            .map(|r| {
                let details: String = r.get(4);
                AuditEntry {
                    ts: r.get(0),
                    event: r.get(1),
                    intent: r.get(2),
                    playbook: r.get(3),
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                    host: r.get(5),
                }
            })
            .collect();
        v.reverse();
        Ok(v)
    }

    fn audit_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = self.with_conn(|c| {
            c.rows(
                "SELECT event, count(*) FROM audit GROUP BY event ORDER BY event",
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    fn prune_audit(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.with_conn(|c| c.exec("DELETE FROM audit WHERE ts < $1", &[&before_ms]))
            .map(|n| n as usize)
    }
}
