//! Whole tables in and out, for `store::migrate`.

use super::SqliteStore;
use crate::store::migrate::{Cell, Kind, Table};
use crate::store::StoreError;
use rusqlite::types::{Value, ValueRef};

impl SqliteStore {
    /// Every row of `t`, its columns in `t`'s order.
    pub(crate) fn dump_table(&self, t: &Table) -> Result<Vec<Vec<Cell>>, StoreError> {
        self.with_conn(|c| {
            let mut stmt = c.prepare(&format!("SELECT {} FROM {}", t.column_list(), t.name))?;
            let rows = stmt.query_map([], |r| {
                (0..t.columns.len())
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            ValueRef::Null => Cell::Null,
                            ValueRef::Integer(n) => Cell::Int(n),
                            ValueRef::Real(f) => Cell::Int(f as i64),
                            ValueRef::Text(s) | ValueRef::Blob(s) => {
                                Cell::Text(String::from_utf8_lossy(s).into_owned())
                            }
                        })
                    })
                    .collect::<rusqlite::Result<Vec<Cell>>>()
            })?;
            rows.collect()
        })
    }

    /// Inserts the rows of every table, in one transaction.
    pub(crate) fn load_tables(
        &self,
        tables: &[(&Table, Vec<Vec<Cell>>)],
    ) -> Result<(), StoreError> {
        self.with_conn(|c| {
            let tx = c.transaction()?;
            for (t, rows) in tables {
                let marks = (1..=t.columns.len())
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut stmt = tx.prepare(&format!(
                    "INSERT INTO {} ({}) VALUES ({marks})",
                    t.name,
                    t.column_list()
                ))?;
                for row in rows {
                    let values: Vec<Value> = row
                        .iter()
                        .zip(t.columns)
                        .map(|(cell, (_, kind))| match (cell, kind) {
                            (Cell::Null, _) => Value::Null,
                            (Cell::Int(n), _) => Value::Integer(*n),
                            (Cell::Text(s), Kind::Int | Kind::Bool) => {
                                Value::Integer(s.parse().unwrap_or_default())
                            }
                            (Cell::Text(s), Kind::Text) => Value::Text(s.clone()),
                        })
                        .collect();
                    stmt.execute(rusqlite::params_from_iter(values))?;
                }
            }
            tx.commit()
        })
    }
}
