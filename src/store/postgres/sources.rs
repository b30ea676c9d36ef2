//! Source states in PostgreSQL.

use super::PgStore;
use crate::sources::SourceState;
use crate::store::{SourceStore, StoreError};

impl SourceStore for PgStore {
    fn put_source_states(&self, states: &[SourceState]) -> Result<(), StoreError> {
        self.write(|c| {
            // This host's rows only.
            c.exec(
                "DELETE FROM source_states WHERE host IN ($1, '')",
                &[&self.host],
            )?;
            for s in states {
                c.exec(
                    "INSERT INTO source_states (host, source, kind, up, reason, since_ms) VALUES ($1, $2, $3, $4, $5, $6)",
                    &[&self.host, &s.source, &s.kind, &s.up, &s.reason, &s.since_ms],
                )?;
            }
            Ok(())
        })
    }

    fn source_states(&self) -> Result<Vec<SourceState>, StoreError> {
        let rows = self.with_conn(|c| {
            c.rows(
                "SELECT source, kind, up, reason, since_ms FROM source_states
                 WHERE host IN ($1, '') ORDER BY source",
                &[&self.host],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| SourceState {
                source: r.get(0),
                kind: r.get(1),
                up: r.get(2),
                reason: r.get(3),
                since_ms: r.get(4),
            })
            .collect())
    }
}
