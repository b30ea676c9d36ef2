//! Unit records in PostgreSQL.

use super::PgStore;
use crate::store::{StoreError, UnitRecord, UnitStore};
use tokio_postgres::Row;

const COLUMNS: &str = "name, state, tier, pid, start_ticks, restarts, total_restarts, last_exit, last_error, bundle, since_ms, marker";

fn from_row(r: &Row) -> UnitRecord {
    let restarts: String = r.get(5);
    let tier: i64 = r.get(2);
    let pid: Option<i64> = r.get(3);
    let start_ticks: Option<i64> = r.get(4);
    let total: i64 = r.get(6);
    UnitRecord {
        name: r.get(0),
        state: r.get(1),
        tier: tier as u8,
        pid: pid.map(|p| p as i32),
        start_ticks: start_ticks.map(|t| t as u64),
        restarts: serde_json::from_str(&restarts).unwrap_or_default(),
        total_restarts: total as u64,
        last_exit: r.get(7),
        last_error: r.get(8),
        bundle: r.get(9),
        since_ms: r.get(10),
        marker: r.get(11),
    }
}

impl UnitStore for PgStore {
    fn put_unit(&self, u: &UnitRecord) -> Result<(), StoreError> {
        let restarts = serde_json::to_string(&u.restarts).expect("a list of numbers serializes");
        let tier = u.tier as i64;
        let pid = u.pid.map(|p| p as i64);
        let ticks = u.start_ticks.map(|t| t as i64);
        let total = u.total_restarts as i64;
        self.write(|c| {
            // A record from before hosts ('') becomes this host's.
            c.exec(
                "DELETE FROM units WHERE host = '' AND name = $1",
                &[&u.name],
            )?;
            c.exec(
                &format!(
                    "INSERT INTO units (host, {COLUMNS}) VALUES ($13, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     ON CONFLICT (host, name) DO UPDATE SET state = $2, tier = $3, pid = $4, start_ticks = $5,
                        restarts = $6, total_restarts = $7, last_exit = $8, last_error = $9, bundle = $10,
                        since_ms = $11, marker = $12"
                ),
                &[
                    &u.name, &u.state, &tier, &pid, &ticks, &restarts, &total, &u.last_exit,
                    &u.last_error, &u.bundle, &u.since_ms, &u.marker, &self.host,
                ],
            )
            .map(drop)
        })
    }

    fn unit(&self, name: &str) -> Result<Option<UnitRecord>, StoreError> {
        let row = self.with_conn(|c| {
            c.opt(
                &format!("SELECT {COLUMNS} FROM units WHERE name = $1 AND host IN ($2, '') ORDER BY host DESC LIMIT 1"),
                &[&name, &self.host],
            )
        })?;
        Ok(row.as_ref().map(from_row))
    }

    fn units(&self) -> Result<Vec<UnitRecord>, StoreError> {
        let rows = self.with_conn(|c| {
            c.rows(
                &format!("SELECT {COLUMNS} FROM units WHERE host IN ($1, '') ORDER BY name"),
                &[&self.host],
            )
        })?;
        Ok(rows.iter().map(from_row).collect())
    }
}
