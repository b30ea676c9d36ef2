//! Whole tables in and out, for `store::migrate`.

use super::PgStore;
use crate::store::migrate::{Cell, Kind, Table};
use crate::store::StoreError;
use tokio_postgres::types::ToSql;

impl PgStore {
    /// Every row of `t`, its columns in `t`'s order (booleans as 0/1, as SQLite keeps them).
    pub(crate) fn dump_table(&self, t: &Table) -> Result<Vec<Vec<Cell>>, StoreError> {
        let rows = self
            .with_conn(|c| c.rows(&format!("SELECT {} FROM {}", t.column_list(), t.name), &[]))?;
        Ok(rows
            .iter()
            .map(|r| {
                t.columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, kind))| match kind {
                        Kind::Int => r.get::<_, Option<i64>>(i).map_or(Cell::Null, Cell::Int),
                        Kind::Bool => r
                            .get::<_, Option<bool>>(i)
                            .map_or(Cell::Null, |b| Cell::Int(b as i64)),
                        Kind::Text => r.get::<_, Option<String>>(i).map_or(Cell::Null, Cell::Text),
                        Kind::Bytes => r
                            .get::<_, Option<Vec<u8>>>(i)
                            .map_or(Cell::Null, Cell::Bytes),
                    })
                    .collect()
            })
            .collect())
    }

    /// Inserts the rows of every table in one transaction, and moves each identity past the
    /// ids copied (so the next row stored does not take one of them).
    pub(crate) fn load_tables(
        &self,
        tables: &[(&Table, Vec<Vec<Cell>>)],
    ) -> Result<(), StoreError> {
        self.write(|c| {
            for (t, rows) in tables {
                let marks = (1..=t.columns.len())
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "INSERT INTO {} ({}) VALUES ({marks})",
                    t.name,
                    t.column_list()
                );
                for row in rows {
                    let values: Vec<Box<dyn ToSql + Sync>> = row
                        .iter()
                        .zip(t.columns)
                        .map(|(cell, (_, kind))| -> Box<dyn ToSql + Sync> {
                            let int = match cell {
                                Cell::Int(n) => Some(*n),
                                Cell::Text(s) => s.parse().ok(),
                                Cell::Null | Cell::Bytes(_) => None,
                            };
                            match kind {
                                Kind::Int => Box::new(int),
                                Kind::Bool => Box::new(int.map(|n| n != 0)),
                                Kind::Text => Box::new(match cell {
                                    Cell::Text(s) => Some(s.clone()),
                                    Cell::Int(n) => Some(n.to_string()),
                                    Cell::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
                                    Cell::Null => None,
                                }),
                                Kind::Bytes => Box::new(match cell {
                                    Cell::Bytes(b) => Some(b.clone()),
                                    Cell::Text(s) => Some(s.clone().into_bytes()),
                                    Cell::Int(n) => Some(n.to_string().into_bytes()),
                                    Cell::Null => None,
                                }),
                            }
                        })
                        .collect();
                    let params: Vec<&(dyn ToSql + Sync)> =
                        values.iter().map(|b| b.as_ref()).collect();
                    c.exec(&sql, &params)?;
                }
                if t.identity {
                    c.batch(&format!(
                        "SELECT setval(pg_get_serial_sequence('{0}', 'id'), GREATEST((SELECT max(id) FROM {0}), 1), (SELECT max(id) IS NOT NULL FROM {0}))",
                        t.name
                    ))?;
                }
            }
            Ok(())
        })
    }
}
