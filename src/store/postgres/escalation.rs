//! Symptoms and escalation flags in PostgreSQL.

use super::{Conn, PgStore};
use crate::escalation::{Flag, Symptom, SymptomPolicy, SymptomRecorded};
use crate::event::Data;
use crate::store::{EscalationStore, StoreError};
use tokio_postgres::Row;

const FLAG_COLUMNS: &str = "kind, reason, symptom_count, armed_at, expires_at, cleared_at";

fn row_to_flag(r: &Row) -> Flag {
    let count: i64 = r.get(2);
    Flag {
        kind: r.get(0),
        reason: r.get(1),
        symptom_count: count as u32,
        armed_at: r.get(3),
        expires_at: r.get(4),
        cleared_at: r.get(5),
    }
}

fn flag(c: &Conn, kind: &str) -> Result<Option<Flag>, tokio_postgres::Error> {
    Ok(c.opt(
        &format!("SELECT {FLAG_COLUMNS} FROM escalation_flags WHERE kind = $1"),
        &[&kind],
    )?
    .as_ref()
    .map(row_to_flag))
}

impl EscalationStore for PgStore {
    fn record_symptom(
        &self,
        kind: &str,
        meta: &Data,
        now_ms: i64,
        p: SymptomPolicy,
    ) -> Result<SymptomRecorded, StoreError> {
        let meta = serde_json::to_string(meta).expect("JSON");
        self.write(|c| {
            let id: i64 = c
                .one(
                    "INSERT INTO symptoms (kind, ts, meta) VALUES ($1, $2, $3) RETURNING id",
                    &[&kind, &now_ms, &meta],
                )?
                .get(0);
            let current = flag(c, kind)?;
            // Symptoms before a clear were answered by the run that cleared the flag: they do
            // not count.
            let since = (now_ms - p.window_ms)
                .max(current.as_ref().and_then(|f| f.cleared_at).unwrap_or(i64::MIN));
            let count: i64 = c
                .one(
                    "SELECT count(*) FROM symptoms WHERE kind = $1 AND ts > $2 AND ts <= $3",
                    &[&kind, &since, &now_ms],
                )?
                .get(0);
            let count = count as u32;
            let active = current.as_ref().is_some_and(|f| f.is_armed(now_ms));
            let armed = if active {
                None
            } else {
                p.arm(kind, count, now_ms)
            };
            if let Some(f) = &armed {
                c.exec(
                    "INSERT INTO escalation_flags (kind, reason, symptom_count, armed_at, expires_at, cleared_at)
                     VALUES ($1, $2, $3, $4, $5, NULL)
                     ON CONFLICT (kind) DO UPDATE SET reason = $2, symptom_count = $3, armed_at = $4,
                        expires_at = $5, cleared_at = NULL",
                    &[&f.kind, &f.reason, &(f.symptom_count as i64), &f.armed_at, &f.expires_at],
                )?;
            }
            Ok(SymptomRecorded { id, count, armed })
        })
    }

    fn symptoms(
        &self,
        kind: Option<&str>,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<Symptom>, StoreError> {
        let rows = self.with_conn(|c| {
            c.rows(
                "SELECT id, kind, ts, meta FROM symptoms WHERE ($1::text IS NULL OR kind = $1) AND ts > $2
                 ORDER BY ts DESC, id DESC LIMIT $3",
                &[&kind, &since_ms, &(limit as i64)],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| {
                let meta: String = r.get(3);
                Symptom {
                    id: r.get(0),
                    kind: r.get(1),
                    ts: r.get(2),
                    meta: serde_json::from_str(&meta).unwrap_or_default(),
                }
            })
            .collect())
    }

    fn symptom_counts(&self, since_ms: i64) -> Result<Vec<(String, u32)>, StoreError> {
        let rows = self.with_conn(|c| {
            c.rows(
                "SELECT kind, count(*) FROM symptoms WHERE ts > $1 GROUP BY kind ORDER BY kind",
                &[&since_ms],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u32))
            .collect())
    }

    fn flags(&self) -> Result<Vec<Flag>, StoreError> {
        let rows = self.with_conn(|c| {
            c.rows(
                &format!("SELECT {FLAG_COLUMNS} FROM escalation_flags ORDER BY kind"),
                &[],
            )
        })?;
        Ok(rows.iter().map(row_to_flag).collect())
    }

    fn clear_flag(&self, kind: &str, now_ms: i64) -> Result<Option<Flag>, StoreError> {
        self.write(|c| {
            let was_armed = flag(c, kind)?.filter(|f| f.is_armed(now_ms));
            // A row is kept (or made) so symptoms before this clear stop counting towards a
            // new flag.
            c.exec(
                "INSERT INTO escalation_flags (kind, reason, symptom_count, armed_at, expires_at, cleared_at)
                 VALUES ($1, 'cleared', 0, $2, $2, $2)
                 ON CONFLICT (kind) DO UPDATE SET cleared_at = $2",
                &[&kind, &now_ms],
            )?;
            Ok(was_armed)
        })
    }

    fn prune_symptoms(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.with_conn(|c| c.exec("DELETE FROM symptoms WHERE ts < $1", &[&before_ms]))
            .map(|n| n as usize)
    }
}
