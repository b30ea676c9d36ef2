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
                t.columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, kind))| {
                        Ok(match (r.get_ref(i)?, kind) {
                            (ValueRef::Null, _) => Cell::Null,
                            // SQLite keeps what it is given whatever the column's type: a bytes
                            // column's cells are bytes however they were stored, so the
                            // checksum's form is the column's.
                            (ValueRef::Text(s) | ValueRef::Blob(s), Kind::Bytes) => {
                                Cell::Bytes(s.to_vec())
                            }
                            (ValueRef::Integer(n), _) => Cell::Int(n),
                            (ValueRef::Real(f), _) => Cell::Int(f as i64),
                            (ValueRef::Text(s) | ValueRef::Blob(s), _) => {
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
                            (Cell::Bytes(b), _) => Value::Blob(b.clone()),
                            (Cell::Int(n), _) => Value::Integer(*n),
                            (Cell::Text(s), Kind::Int | Kind::Bool) => {
                                Value::Integer(s.parse().unwrap_or_default())
                            }
                            (Cell::Text(s), Kind::Text) => Value::Text(s.clone()),
                            (Cell::Text(s), Kind::Bytes) => Value::Blob(s.clone().into_bytes()),
                        })
                        .collect();
                    stmt.execute(rusqlite::params_from_iter(values))?;
                }
            }
            tx.commit()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::migrate::TABLES;

    /// A table or column a migration adds and `TABLES` misses is not copied by `vigil store
    /// migrate`, silently (the copy's check only sees the tables and columns listed).
    #[test]
    fn the_copier_lists_every_table_and_column_of_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open_dir(dir.path()).unwrap();
        let schema: Vec<(String, Vec<String>)> = s
            .with_conn(|c| {
                let tables: Vec<String> = c
                    .prepare(
                        "SELECT name FROM sqlite_master WHERE type = 'table'
                         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
                    )?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                tables
                    .into_iter()
                    .map(|t| {
                        let columns = c
                            .prepare(&format!("SELECT name FROM pragma_table_info('{t}')"))?
                            .query_map([], |r| r.get(0))?
                            .collect::<rusqlite::Result<Vec<String>>>()?;
                        Ok((t, columns))
                    })
                    .collect()
            })
            .unwrap();
        assert!(schema.len() > 10, "{schema:?}");
        for (table, columns) in &schema {
            let listed = TABLES
                .iter()
                .find(|t| t.name == table)
                .unwrap_or_else(|| panic!("table {table} is not in store::migrate::TABLES"));
            let mut want: Vec<&str> = columns.iter().map(String::as_str).collect();
            let mut got: Vec<&str> = listed
                .columns
                .iter()
                .map(|(c, _)| c.trim_matches('"'))
                .collect();
            want.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, want, "columns of {table} in store::migrate::TABLES");
        }
        assert_eq!(TABLES.len(), schema.len(), "TABLES names no table twice");
    }
}
