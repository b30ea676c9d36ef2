//! The fleet view in PostgreSQL.

use super::PgStore;
use crate::store::fleet::{assemble, FleetStore, HostStatus};
use crate::store::StoreError;

impl FleetStore for PgStore {
    fn host(&self) -> &str {
        &self.host
    }

    fn fleet(&self) -> Result<Vec<HostStatus>, StoreError> {
        let (seen, down, runs) = self.with_conn(|c| {
            let seen = c.rows("SELECT host, last_seen_ms FROM hosts", &[])?;
            let down = c.rows(
                "SELECT host, source, up FROM source_states WHERE host <> '' ORDER BY source",
                &[],
            )?;
            let runs = c.rows(
                "SELECT host, count(*) FROM runs WHERE ended_at IS NULL AND host <> '' GROUP BY host",
                &[],
            )?;
            Ok((seen, down, runs))
        })?;
        Ok(assemble(
            seen.iter().map(|r| (r.get(0), r.get(1))).collect(),
            down.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
            runs.iter().map(|r| (r.get(0), r.get(1))).collect(),
        ))
    }
}
