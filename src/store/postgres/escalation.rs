//! Symptoms and escalation flags in PostgreSQL.

use super::{Conn, PgStore};
use crate::escalation::{Flag, Symptom, SymptomPolicy, SymptomRecorded};
use crate::event::Data;
use crate::store::{EscalationStore, Scope, StoreError};
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

/// The flag of `kind` in `scope` (a key: the host, or `*`).
fn flag(c: &Conn, kind: &str, scope: &str) -> Result<Option<Flag>, tokio_postgres::Error> {
    Ok(c.opt(
        &format!("SELECT {FLAG_COLUMNS} FROM escalation_flags WHERE kind = $1 AND scope = $2"),
        &[&kind, &scope],
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
                    "INSERT INTO symptoms (kind, ts, meta, host) VALUES ($1, $2, $3, $4) RETURNING id",
                    &[&kind, &now_ms, &meta, &self.host],
                )?
                .get(0);
            let key = p.scope.key(&self.host);
            let own = (p.scope == Scope::Host).then_some(self.host.as_str());
            let current = flag(c, kind, key)?;
            // Symptoms before a clear were answered by the run that cleared the flag: they do
            // not count.
            let since = (now_ms - p.window_ms)
                .max(current.as_ref().and_then(|f| f.cleared_at).unwrap_or(i64::MIN));
            let count: i64 = c
                .one(
                    "SELECT count(*) FROM symptoms WHERE kind = $1 AND ts > $2 AND ts <= $3
                       AND ($4::text IS NULL OR host IN ($4, ''))",
                    &[&kind, &since, &now_ms, &own],
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
                    "INSERT INTO escalation_flags (kind, scope, reason, symptom_count, armed_at, expires_at, cleared_at)
                     VALUES ($1, $6, $2, $3, $4, $5, NULL)
                     ON CONFLICT (kind, scope) DO UPDATE SET reason = $2, symptom_count = $3, armed_at = $4,
                        expires_at = $5, cleared_at = NULL",
                    &[&f.kind, &f.reason, &(f.symptom_count as i64), &f.armed_at, &f.expires_at, &key],
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
                "SELECT id, kind, ts, meta, host FROM symptoms WHERE ($1::text IS NULL OR kind = $1) AND ts > $2
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
                    host: r.get(4),
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
                &format!("SELECT {FLAG_COLUMNS} FROM escalation_flags WHERE scope IN ($1, '*', '') ORDER BY kind, scope"),
                &[&self.host],
            )
        })?;
        Ok(rows.iter().map(row_to_flag).collect())
    }

    fn clear_flag(
        &self,
        kind: &str,
        scope: Scope,
        now_ms: i64,
    ) -> Result<Option<Flag>, StoreError> {
        self.write(|c| {
            let mut was_armed = None;
            for key in [self.host.as_str(), "*", ""] {
                was_armed = was_armed.or(flag(c, kind, key)?.filter(|f| f.is_armed(now_ms)));
            }
            c.exec(
                "UPDATE escalation_flags SET cleared_at = $2
                 WHERE kind = $1 AND scope IN ($3, '*', '') AND cleared_at IS NULL",
                &[&kind, &now_ms, &self.host],
            )?;
            // A row is kept (or made) so symptoms before this clear stop counting towards a
            // new flag.
            c.exec(
                "INSERT INTO escalation_flags (kind, scope, reason, symptom_count, armed_at, expires_at, cleared_at)
                 VALUES ($1, $3, 'cleared', 0, $2, $2, $2)
                 ON CONFLICT (kind, scope) DO UPDATE SET cleared_at = $2",
                &[&kind, &now_ms, &scope.key(&self.host)],
            )?;
            Ok(was_armed)
        })
    }

    fn prune_symptoms(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.with_conn(|c| c.exec("DELETE FROM symptoms WHERE ts < $1", &[&before_ms]))
            .map(|n| n as usize)
    }
}
