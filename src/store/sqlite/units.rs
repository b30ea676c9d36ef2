//! Unit records in SQLite.

use super::{Cached, SqliteStore};
use crate::store::{StoreError, UnitRecord, UnitStore};
use rusqlite::params;

const COLUMNS: &str = "name, state, tier, pid, start_ticks, restarts, total_restarts, last_exit, last_error, bundle, since_ms, marker";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UnitRecord> {
    let restarts: String = r.get(5)?;
    let start_ticks: Option<i64> = r.get(4)?;
    let total: i64 = r.get(6)?;
    Ok(UnitRecord {
        name: r.get(0)?,
        state: r.get(1)?,
        tier: r.get(2)?,
        pid: r.get(3)?,
        start_ticks: start_ticks.map(|t| t as u64),
        restarts: serde_json::from_str(&restarts).unwrap_or_default(),
        total_restarts: total as u64,
        last_exit: r.get(7)?,
        last_error: r.get(8)?,
        bundle: r.get(9)?,
        since_ms: r.get(10)?,
        marker: r.get(11)?,
    })
}

impl UnitStore for SqliteStore {
    fn put_unit(&self, u: &UnitRecord) -> Result<(), StoreError> {
        let restarts = serde_json::to_string(&u.restarts).expect("a list of numbers serializes");
        self.with_conn(|conn| {
            let tx = conn.transaction()?;
            // A record from before hosts ('') becomes this host's.
            tx.exec(
                "DELETE FROM units WHERE host = '' AND name = ?1",
                [&u.name],
            )?;
            tx.exec(
                &format!("INSERT OR REPLACE INTO units (host, {COLUMNS}) VALUES (?13, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
                params![
                    u.name,
                    u.state,
                    u.tier,
                    u.pid,
                    u.start_ticks.map(|t| t as i64),
                    restarts,
                    u.total_restarts as i64,
                    u.last_exit,
                    u.last_error,
                    u.bundle,
                    u.since_ms,
                    u.marker,
                    self.host
                ],
            )?;
            tx.commit()
        })
    }

    fn unit(&self, name: &str) -> Result<Option<UnitRecord>, StoreError> {
        self.with_conn(|conn| {
            match conn.row(
                &format!("SELECT {COLUMNS} FROM units WHERE name = ?1 AND host IN (?2, '') ORDER BY host DESC LIMIT 1"),
                [name, &self.host],
                from_row,
            ) {
                Ok(u) => Ok(Some(u)),
                Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn units(&self) -> Result<Vec<UnitRecord>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM units WHERE host IN (?1, '') ORDER BY name"
            ))?;
            let rows = stmt.query_map([&self.host], from_row)?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_record_round_trips_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let rec = UnitRecord {
            name: "judge".into(),
            state: "quarantined".into(),
            tier: 1,
            pid: Some(42),
            start_ticks: Some(123456),
            marker: Some("judge:1".into()),
            restarts: vec![1, 2, 3],
            total_restarts: 3,
            last_exit: Some("exit code 3".into()),
            last_error: Some("boom".into()),
            bundle: Some("/x/quarantine/judge_1".into()),
            since_ms: 99,
        };
        SqliteStore::open_dir(dir.path())
            .unwrap()
            .put_unit(&rec)
            .unwrap();
        let s = SqliteStore::open_dir(dir.path()).unwrap();
        assert_eq!(s.unit("judge").unwrap(), Some(rec.clone()));
        assert_eq!(s.units().unwrap(), vec![rec]);
        assert_eq!(s.unit("other").unwrap(), None);
    }
}
