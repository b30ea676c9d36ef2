//! Source states in SQLite.

use super::{Cached, SqliteStore};
use crate::sources::SourceState;
use crate::store::{SourceStore, StoreError};
use rusqlite::params;

impl SourceStore for SqliteStore {
    fn put_source_states(&self, states: &[SourceState]) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction()?;
            // This host's rows only ('' are this host's from before hosts were recorded).
            tx.exec(
                "DELETE FROM source_states WHERE host IN (?1, '')",
                [&self.host],
            )?;
            for s in states {
                tx.exec(
                    "INSERT INTO source_states (host, source, kind, up, reason, since_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![self.host, s.source, s.kind, s.up, s.reason, s.since_ms],
                )?;
            }
            tx.commit()
        })
    }

    fn source_states(&self) -> Result<Vec<SourceState>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT source, kind, up, reason, since_ms FROM source_states
                 WHERE host IN (?1, '') ORDER BY source",
            )?;
            let rows = stmt.query_map([&self.host], |r| {
                Ok(SourceState {
                    source: r.get(0)?,
                    kind: r.get(1)?,
                    up: r.get(2)?,
                    reason: r.get(3)?,
                    since_ms: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }
}
