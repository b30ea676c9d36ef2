//! The fleet view in SQLite (one host, or several sharing the file).

use super::SqliteStore;
use crate::store::fleet::{assemble, FleetStore, HostStatus};
use crate::store::StoreError;

impl FleetStore for SqliteStore {
    fn host(&self) -> &str {
        &self.host
    }

    fn fleet(&self) -> Result<Vec<HostStatus>, StoreError> {
        self.with_conn(|c| {
            let seen = c
                .prepare_cached("SELECT host, last_seen_ms FROM hosts")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let down = c
                .prepare_cached("SELECT host, source, up FROM source_states WHERE host <> '' ORDER BY source")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let runs = c
                .prepare_cached("SELECT host, count(*) FROM runs WHERE ended_at IS NULL AND host <> '' GROUP BY host")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(assemble(seen, down, runs))
        })
    }
}
