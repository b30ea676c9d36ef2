//! Copying a whole store from one backend to the other (`vigil store migrate`): SQLite into
//! PostgreSQL when a team grows into a fleet, and back. Every table is copied in one
//! transaction of the destination, which must be empty, and verified afterwards by row
//! counts and a SHA-256 over each table's rows (sorted, so both backends' orders agree).

use super::{PgStore, SqliteStore, StoreError};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// How a column is kept: both backends store integers and text alike; booleans are 0/1 in
/// SQLite and BOOLEAN in PostgreSQL; bytes are BLOB in SQLite and BYTEA in PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Text,
    Bool,
    Bytes,
}

/// One value, the same whichever backend it came from (booleans as 0/1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// A table and its columns, in the order they are copied.
pub(crate) struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Kind)],
    /// Has an `id` identity (PostgreSQL's sequence is moved past the copied ids).
    pub identity: bool,
}

use Kind::{Bool, Bytes, Int, Text};

/// Every table of the store. A table a migration adds is added here, or it is not copied
/// (the copy's check then says which rows are missing only for the tables listed).
pub(crate) const TABLES: &[Table] = &[
    Table {
        name: "intents",
        columns: &[
            ("id", Int),
            ("intent_type", Text),
            ("priority", Int),
            ("reason", Text),
            ("data", Text),
            ("dedup_key", Text),
            ("origin", Text),
            ("status", Text),
            ("note", Text),
            ("created_at", Int),
            ("updated_at", Int),
            ("lease_holder", Text),
            ("lease_expires", Int),
            ("lease_epoch", Int),
            ("wait_lock", Text),
            ("host", Text),
        ],
        identity: true,
    },
    Table {
        name: "source_states",
        columns: &[
            ("host", Text),
            ("source", Text),
            ("kind", Text),
            ("up", Bool),
            ("reason", Text),
            ("since_ms", Int),
        ],
        identity: false,
    },
    Table {
        name: "symptoms",
        columns: &[
            ("id", Int),
            ("kind", Text),
            ("ts", Int),
            ("meta", Text),
            ("host", Text),
        ],
        identity: true,
    },
    Table {
        name: "escalation_flags",
        columns: &[
            ("kind", Text),
            ("scope", Text),
            ("reason", Text),
            ("symptom_count", Int),
            ("armed_at", Int),
            ("expires_at", Int),
            ("cleared_at", Int),
        ],
        identity: false,
    },
    Table {
        name: "runs",
        columns: &[
            ("id", Int),
            ("intent_id", Int),
            ("playbook", Text),
            ("mode", Text),
            ("holder", Text),
            ("started_at", Int),
            ("ended_at", Int),
            ("result", Text),
            ("budget", Text),
            ("budget_day", Text),
            ("reserved_ms", Int),
            ("downtime_ms", Int),
            ("lock_name", Text),
            ("step", Int),
            ("downtime_since", Int),
            ("lock_epoch", Int),
            ("host", Text),
            ("budget_scope", Text),
        ],
        identity: true,
    },
    Table {
        name: "budget_ledger",
        columns: &[
            ("budget", Text),
            ("day", Text),
            ("scope", Text),
            ("used_ms", Int),
            ("reserved_ms", Int),
        ],
        identity: false,
    },
    Table {
        name: "locks",
        columns: &[
            ("name", Text),
            ("scope", Text),
            ("holder", Text),
            ("acquired_at", Int),
            ("expires_at", Int),
            ("epoch", Int),
        ],
        identity: false,
    },
    Table {
        name: "audit",
        columns: &[
            ("id", Int),
            ("ts", Int),
            ("event", Text),
            ("intent", Int),
            ("playbook", Text),
            ("details", Text),
            ("host", Text),
        ],
        identity: true,
    },
    Table {
        name: "invariant_state",
        columns: &[
            ("id", Text),
            ("state", Text),
            ("since_ms", Int),
            ("violations", Text),
            ("updated_ms", Int),
        ],
        identity: false,
    },
    Table {
        name: "invariant_pending",
        columns: &[("id", Text), ("key", Text), ("first_seen_ms", Int)],
        identity: false,
    },
    Table {
        name: "alert_outbox",
        columns: &[
            ("invariant", Text),
            ("resolved", Bool),
            ("payload", Text),
            ("created_ms", Int),
            ("next_attempt_ms", Int),
            ("sending", Bool),
        ],
        identity: false,
    },
    Table {
        name: "canary_runs",
        columns: &[
            ("id", Int),
            ("canary", Text),
            ("mode", Text),
            ("path", Text),
            ("port", Int),
            ("started_at", Int),
            ("ended_at", Int),
            ("result", Text),
            ("reason", Text),
            ("duration_ms", Int),
            ("downtime_ms", Int),
            ("budget", Text),
            ("budget_day", Text),
            ("reserved_ms", Int),
            ("restore_pending", Bool),
            ("down_since", Int),
            ("report", Text),
            ("budget_scope", Text),
        ],
        identity: true,
    },
    Table {
        name: "source_checkpoints",
        columns: &[
            ("source", Text),
            ("path", Text),
            ("dev", Int),
            ("ino", Int),
            ("head_sha256", Bytes),
            ("head_len", Int),
            // A keyword in PostgreSQL; both backends take the quoted name.
            ("\"offset\"", Int),
            ("rotated_dev", Int),
            ("rotated_ino", Int),
            ("rotated_head_sha256", Bytes),
            ("rotated_head_len", Int),
            ("rotated_offset", Int),
            ("saved_ms", Int),
        ],
        identity: false,
    },
    Table {
        name: "inbox_receipts",
        columns: &[("sha256", Text), ("intent", Int), ("delivered_ms", Int)],
        identity: false,
    },
    Table {
        name: "hosts",
        columns: &[("host", Text), ("last_seen_ms", Int)],
        identity: false,
    },
    Table {
        name: "sequences",
        columns: &[("name", Text), ("value", Int)],
        identity: false,
    },
    Table {
        name: "units",
        columns: &[
            ("host", Text),
            ("name", Text),
            ("state", Text),
            ("tier", Int),
            ("pid", Int),
            ("start_ticks", Int),
            ("restarts", Text),
            ("total_restarts", Int),
            ("last_exit", Text),
            ("last_error", Text),
            ("bundle", Text),
            ("since_ms", Int),
            ("marker", Text),
        ],
        identity: false,
    },
];

impl Table {
    pub(crate) fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One table as copied: rows and checksum on both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCopy {
    pub table: String,
    pub rows: u64,
    /// SHA-256 (hex) of the table's rows, each in a canonical form, sorted.
    pub checksum: String,
}

/// Either backend, for copying.
pub enum Side<'a> {
    Sqlite(&'a SqliteStore),
    Postgres(&'a PgStore),
}

impl Side<'_> {
    fn dump(&self, t: &Table) -> Result<Vec<Vec<Cell>>, StoreError> {
        match self {
            Side::Sqlite(s) => s.dump_table(t),
            Side::Postgres(s) => s.dump_table(t),
        }
    }

    fn load(&self, tables: &[(&Table, Vec<Vec<Cell>>)]) -> Result<(), StoreError> {
        match self {
            Side::Sqlite(s) => s.load_tables(tables),
            Side::Postgres(s) => s.load_tables(tables),
        }
    }
}

/// Row counts and checksums of every table of `side`.
pub fn summary(side: &Side<'_>) -> Result<Vec<TableCopy>, StoreError> {
    TABLES
        .iter()
        .map(|t| Ok(summarize(t.name, &side.dump(t)?)))
        .collect()
}

fn summarize(table: &str, rows: &[Vec<Cell>]) -> TableCopy {
    let mut lines: Vec<String> = rows
        .iter()
        .map(|r| {
            let cells: Vec<serde_json::Value> = r
                .iter()
                .map(|c| match c {
                    Cell::Null => serde_json::Value::Null,
                    Cell::Int(i) => (*i).into(),
                    Cell::Text(s) => s.clone().into(),
                    // Hex: a column is all bytes or all text, so the forms cannot meet.
                    Cell::Bytes(b) => hex::encode(b).into(),
                })
                .collect();
            serde_json::Value::Array(cells).to_string()
        })
        .collect();
    lines.sort();
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    TableCopy {
        table: table.into(),
        rows: lines.len() as u64,
        checksum: hex::encode(h.finalize()),
    }
}

/// Copies every table of `from` into `to` (which must hold no rows), in one transaction of
/// `to`, then reads both again and compares counts and checksums. Returns the copied tables;
/// an error says which table differs.
pub fn copy(from: &Side<'_>, to: &Side<'_>) -> Result<Vec<TableCopy>, StoreError> {
    let before = summary(to)?;
    if let Some(t) = before.iter().find(|t| t.rows > 0) {
        return Err(StoreError::Corrupt(format!(
            "the destination store is not empty ({} rows in {}); migrate into a new database or schema",
            t.rows, t.table
        )));
    }
    let mut data = Vec::new();
    let mut expected = Vec::new();
    for t in TABLES {
        let rows = from.dump(t)?;
        expected.push(summarize(t.name, &rows));
        data.push((t, rows));
    }
    to.load(&data)?;
    let after = summary(to)?;
    for (want, got) in expected.iter().zip(&after) {
        if want != got {
            return Err(StoreError::Corrupt(format!(
                "table {} differs after the copy: {} rows (sha256 {}) read, {} rows (sha256 {}) written",
                want.table, want.rows, want.checksum, got.rows, got.checksum
            )));
        }
    }
    Ok(expected)
}
