//! Intents in SQLite.

use super::{Cached, SqliteStore};
use crate::intent::{Intent, IntentStatus, NewIntent};
use crate::store::{IntentQuery, IntentStore, Put, StoreError};
use rusqlite::{params, Connection, OptionalExtension};

/// Sets an intent's status inside the caller's connection or transaction.
pub(super) fn set_status(
    conn: &Connection,
    id: i64,
    status: IntentStatus,
    note: Option<&str>,
    now_ms: i64,
) -> rusqlite::Result<()> {
    conn.exec(
        "UPDATE intents SET status = ?2, note = COALESCE(?3, note), updated_at = ?4 WHERE id = ?1",
        params![id, status.as_str(), note, now_ms],
    )
    .map(drop)
}

/// The columns `row_to_intent` reads, in its order.
pub(super) const INTENT_COLUMNS: &str =
    "id, intent_type, priority, reason, data, dedup_key, origin, status, note, created_at, updated_at, host";

pub(super) fn row_to_intent(r: &rusqlite::Row) -> rusqlite::Result<Intent> {
    let data: String = r.get(4)?;
    let status: String = r.get(7)?;
    let bad = |i: usize, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    Ok(Intent {
        id: r.get(0)?,
        intent_type: r.get(1)?,
        priority: r.get(2)?,
        reason: r.get(3)?,
        data: serde_json::from_str(&data).map_err(|e| bad(4, e.to_string()))?,
        dedup_key: r.get(5)?,
        origin: r.get(6)?,
        status: status.parse().map_err(|e: String| bad(7, e))?,
        note: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        host: r.get(11)?,
    })
}

/// Stores `intent` unless one of its type and dedup key was created within the window, inside
/// the caller's IMMEDIATE transaction.
fn put_in(
    tx: &Connection,
    intent: &NewIntent,
    host: &str,
    now_ms: i64,
    dedup_window_ms: i64,
) -> rusqlite::Result<Put> {
    let key = intent.dedup_key();
    let data = serde_json::to_string(&intent.data).expect("JSON");
    let existing: Option<i64> = tx
        .row(
            "SELECT id FROM intents WHERE intent_type = ?1 AND dedup_key = ?2 AND created_at > ?3
             ORDER BY created_at DESC LIMIT 1",
            params![intent.intent_type, key, now_ms - dedup_window_ms],
            |r| r.get(0),
        )
        .optional()?;
    Ok(match existing {
        Some(id) => Put::Duplicate(id),
        None => {
            tx.exec(
                "INSERT INTO intents (intent_type, priority, reason, data, dedup_key, origin, status, created_at, updated_at, host)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?7, ?8)",
                params![intent.intent_type, intent.priority, intent.reason, data, key, intent.origin, now_ms, host],
            )?;
            Put::Inserted(tx.last_insert_rowid())
        }
    })
}

impl IntentStore for SqliteStore {
    fn put_intent(
        &self,
        intent: &NewIntent,
        now_ms: i64,
        dedup_window_ms: i64,
    ) -> Result<Put, StoreError> {
        let host = crate::store::intent_host(&intent.data, &self.host);
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let put = put_in(&tx, intent, &host, now_ms, dedup_window_ms)?;
            tx.commit()?;
            Ok(put)
        })
    }

    fn put_intent_once(
        &self,
        intent: &NewIntent,
        receipt: &str,
        now_ms: i64,
        dedup_window_ms: i64,
    ) -> Result<Put, StoreError> {
        let host = crate::store::intent_host(&intent.data, &self.host);
        self.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let delivered: Option<i64> = tx
                .row(
                    "SELECT intent FROM inbox_receipts WHERE sha256 = ?1",
                    [receipt],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = delivered {
                return Ok(Put::Duplicate(id));
            }
            let put = put_in(&tx, intent, &host, now_ms, dedup_window_ms)?;
            tx.exec(
                "DELETE FROM inbox_receipts WHERE delivered_ms < ?1",
                [now_ms - crate::store::intents::RECEIPT_KEEP_MS],
            )?;
            tx.exec(
                "INSERT INTO inbox_receipts (sha256, intent, delivered_ms) VALUES (?1, ?2, ?3)",
                params![receipt, put.id(), now_ms],
            )?;
            tx.commit()?;
            Ok(put)
        })
    }

    fn intents(&self, q: &IntentQuery) -> Result<Vec<Intent>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {INTENT_COLUMNS} FROM intents
                 WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR intent_type = ?2)
                 ORDER BY created_at DESC, id DESC LIMIT ?3"
            ))?;
            let limit = q.limit.map_or(-1, |l| l as i64);
            let rows = stmt.query_map(
                params![q.status.map(|s| s.as_str()), q.intent_type, limit],
                row_to_intent,
            )?;
            rows.collect()
        })
    }

    fn intent(&self, id: i64) -> Result<Option<Intent>, StoreError> {
        self.with_conn(|conn| {
            conn.row(
                &format!("SELECT {INTENT_COLUMNS} FROM intents WHERE id = ?1"),
                [id],
                row_to_intent,
            )
            .optional()
        })
    }

    fn set_intent_status(
        &self,
        id: i64,
        status: IntentStatus,
        note: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.with_conn(|conn| set_status(conn, id, status, note, now_ms))
    }

    fn prune_intents(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.with_conn(|conn| {
            conn.exec(
                "DELETE FROM intents WHERE status NOT IN ('pending', 'running') AND updated_at < ?1",
                [before_ms],
            )
        })
    }

    fn intent_counts(&self) -> Result<Vec<(IntentStatus, u64)>, StoreError> {
        let rows: Vec<(String, u64)> = self.with_conn(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT status, count(*) FROM intents GROUP BY status")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })?;
        rows.into_iter()
            .map(|(s, n)| s.parse().map(|s| (s, n)).map_err(StoreError::Corrupt))
            .collect()
    }
}
