//! Intents in PostgreSQL.

use super::{Conn, PgStore};
use crate::intent::{Intent, IntentStatus, NewIntent};
use crate::store::{IntentQuery, IntentStore, Put, StoreError};
use tokio_postgres::Row;

/// Sets an intent's status inside the caller's transaction.
pub(super) fn set_status(
    c: &Conn,
    id: i64,
    status: IntentStatus,
    note: Option<&str>,
    now_ms: i64,
) -> Result<(), tokio_postgres::Error> {
    c.exec(
        "UPDATE intents SET status = $2, note = COALESCE($3, note), updated_at = $4 WHERE id = $1",
        &[&id, &status.as_str(), &note, &now_ms],
    )
    .map(drop)
}

/// The columns `row_to_intent` reads, in its order.
pub(super) const INTENT_COLUMNS: &str =
    "id, intent_type, priority, reason, data, dedup_key, origin, status, note, created_at, updated_at, host";

/// A stored row that does not make an intent: the store was written by something else.
pub(super) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("a stored {what} cannot be read: {e}"))
}

pub(super) fn row_to_intent(r: &Row) -> Result<Intent, StoreError> {
    let data: String = r.get(4);
    let status: String = r.get(7);
    let priority: i64 = r.get(2);
    Ok(Intent {
        id: r.get(0),
        intent_type: r.get(1),
        priority: priority.clamp(0, u8::MAX as i64) as u8,
        reason: r.get(3),
        data: serde_json::from_str(&data).map_err(|e| corrupt("intent", e))?,
        dedup_key: r.get(5),
        origin: r.get(6),
        status: status.parse().map_err(|e: String| corrupt("intent", e))?,
        note: r.get(8),
        created_at: r.get(9),
        updated_at: r.get(10),
        host: r.get(11),
    })
}

pub(super) fn intents_from(rows: Vec<Row>) -> Result<Vec<Intent>, StoreError> {
    rows.iter().map(row_to_intent).collect()
}

/// Stores `intent` unless one of its type and dedup key was created within the window, inside
/// the caller's write transaction.
fn put_in(
    c: &Conn,
    intent: &NewIntent,
    host: &str,
    now_ms: i64,
    dedup_window_ms: i64,
) -> Result<Put, tokio_postgres::Error> {
    let key = intent.dedup_key();
    let data = serde_json::to_string(&intent.data).expect("JSON");
    let priority = intent.priority as i64;
    let existing = c.opt(
        "SELECT id FROM intents WHERE intent_type = $1 AND dedup_key = $2 AND created_at > $3
         ORDER BY created_at DESC LIMIT 1",
        &[&intent.intent_type, &key, &(now_ms - dedup_window_ms)],
    )?;
    Ok(match existing {
        Some(r) => Put::Duplicate(r.get(0)),
        None => Put::Inserted(
            c.one(
                "INSERT INTO intents (intent_type, priority, reason, data, dedup_key, origin, status, created_at, updated_at, host)
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7, $8) RETURNING id",
                &[&intent.intent_type, &priority, &intent.reason, &data, &key, &intent.origin, &now_ms, &host],
            )?
            .get(0),
        ),
    })
}

impl IntentStore for PgStore {
    fn put_intent(
        &self,
        intent: &NewIntent,
        now_ms: i64,
        dedup_window_ms: i64,
    ) -> Result<Put, StoreError> {
        let host = crate::store::intent_host(&intent.data, &self.host);
        self.write(|c| put_in(c, intent, &host, now_ms, dedup_window_ms))
    }

    fn put_intent_once(
        &self,
        intent: &NewIntent,
        receipt: &str,
        now_ms: i64,
        dedup_window_ms: i64,
    ) -> Result<Put, StoreError> {
        let host = crate::store::intent_host(&intent.data, &self.host);
        self.write(|c| {
            let delivered = c.opt(
                "SELECT intent FROM inbox_receipts WHERE sha256 = $1",
                &[&receipt],
            )?;
            if let Some(r) = delivered {
                return Ok(Put::Duplicate(r.get(0)));
            }
            let put = put_in(c, intent, &host, now_ms, dedup_window_ms)?;
            c.exec(
                "DELETE FROM inbox_receipts WHERE delivered_ms < $1",
                &[&(now_ms - crate::store::intents::RECEIPT_KEEP_MS)],
            )?;
            c.exec(
                "INSERT INTO inbox_receipts (sha256, intent, delivered_ms) VALUES ($1, $2, $3)",
                &[&receipt, &put.id(), &now_ms],
            )?;
            Ok(put)
        })
    }

    fn intents(&self, q: &IntentQuery) -> Result<Vec<Intent>, StoreError> {
        let limit = q.limit.map(|l| l as i64);
        let status = q.status.map(|s| s.as_str());
        let rows = self.with_conn(|c| {
            c.rows(
                &format!(
                    "SELECT {INTENT_COLUMNS} FROM intents
                     WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR intent_type = $2)
                     ORDER BY created_at DESC, id DESC LIMIT $3"
                ),
                &[&status, &q.intent_type, &limit],
            )
        })?;
        intents_from(rows)
    }

    fn intent(&self, id: i64) -> Result<Option<Intent>, StoreError> {
        let row = self.with_conn(|c| {
            c.opt(
                &format!("SELECT {INTENT_COLUMNS} FROM intents WHERE id = $1"),
                &[&id],
            )
        })?;
        row.as_ref().map(row_to_intent).transpose()
    }

    fn set_intent_status(
        &self,
        id: i64,
        status: IntentStatus,
        note: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.with_conn(|c| set_status(c, id, status, note, now_ms))
    }

    fn prune_intents(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.with_conn(|c| {
            c.exec(
                "DELETE FROM intents WHERE status NOT IN ('pending', 'running') AND updated_at < $1",
                &[&before_ms],
            )
        })
        .map(|n| n as usize)
    }

    fn intent_counts(&self) -> Result<Vec<(IntentStatus, u64)>, StoreError> {
        let rows = self
            .with_conn(|c| c.rows("SELECT status, count(*) FROM intents GROUP BY status", &[]))?;
        rows.iter()
            .map(|r| {
                let s: String = r.get(0);
                let n: i64 = r.get(1);
                s.parse()
                    .map(|s| (s, n as u64))
                    .map_err(StoreError::Corrupt)
            })
            .collect()
    }
}
