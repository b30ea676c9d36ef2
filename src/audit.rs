//! The audit trail: every decision and step, one JSON line each in `DATA_DIR/audit/YYYYMMDD.jsonl`
//! (local date in the config's time zone) and in the store, so `vigil audit tail` and
//! `jq -r .event audit/*.jsonl | sort | uniq -c` both work. One handle (`Audit`, held by `App`)
//! writes both, so no event reaches one and not the other.

use crate::app::App;
use crate::clock::{ms_as_rfc3339, SharedClock};
use crate::store::{AuditStore, StoreError};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// When it happened (ms since the epoch; RFC 3339 in JSON).
    #[serde(
        serialize_with = "ms_as_rfc3339::ser",
        deserialize_with = "ms_as_rfc3339::de"
    )]
    pub ts: i64,
    pub event: String,
    pub intent: Option<i64>,
    pub playbook: Option<String>,
    pub details: Value,
    /// The host that wrote it ('' in entries from before hosts).
    #[serde(default)]
    pub host: String,
}

/// The audit trail's writer: the day's JSON-lines file and the store.
pub struct Audit {
    dir: PathBuf,
    tz: jiff::tz::TimeZone,
    clock: SharedClock,
    store: Arc<dyn AuditStore>,
    /// Where each entry is published as it is written (the dashboard's live stream).
    changes: Option<crate::api::stream::Changes>,
    /// Stamped on every entry written without one (`on_host`).
    host: String,
}

impl Audit {
    /// A trail in `dir` (files named by the local date in `tz`) and in `store`.
    pub fn new(
        dir: PathBuf,
        tz: jiff::tz::TimeZone,
        clock: SharedClock,
        store: Arc<dyn AuditStore>,
    ) -> Self {
        Self {
            dir,
            tz,
            clock,
            store,
            changes: None,
            host: String::new(),
        }
    }

    /// Stamps `host` (the config's) on every entry written from now on.
    pub fn on_host(mut self, host: &str) -> Self {
        self.host = host.to_string();
        self
    }

    /// Publishes every entry written from now on as an `audit` change.
    pub fn publishing(mut self, changes: crate::api::stream::Changes) -> Self {
        self.changes = Some(changes);
        self
    }

    /// Appends one entry stamped now (blocking). A trail that cannot be written is logged
    /// loudly, never fatal: the action it describes has already happened.
    pub fn record(&self, event: &str, intent: Option<i64>, playbook: Option<&str>, details: Value) {
        let entry = self.entry(event, intent, playbook, details);
        self.append(&entry);
    }

    /// Appends an entry that carries its own time, to the file and the store.
    pub fn append(&self, entry: &AuditEntry) {
        let stamped;
        let entry = if entry.host.is_empty() && !self.host.is_empty() {
            stamped = AuditEntry {
                host: self.host.clone(),
                ..entry.clone()
            };
            &stamped
        } else {
            entry
        };
        self.file(entry);
        if let Err(e) = self.store.append_audit(entry) {
            tracing::error!("cannot store audit entry {}: {e}", entry.event);
        }
        self.publish(entry);
    }

    /// An entry stamped now, and logged; for a caller that stores it in its own transaction
    /// (`RunStore::settle_run`) and then calls `write_file`.
    pub fn entry(
        &self,
        event: &str,
        intent: Option<i64>,
        playbook: Option<&str>,
        details: Value,
    ) -> AuditEntry {
        let entry = AuditEntry {
            ts: self.clock.now_ms(),
            event: event.to_string(),
            intent,
            playbook: playbook.map(str::to_string),
            details,
            host: self.host.clone(),
        };
        tracing::info!(target: "vigil::audit", event, intent, playbook, details = %entry.details, "audit");
        entry
    }

    /// Appends the entry's line to the day's file only: for an entry the store already holds.
    /// A failure is logged, never fatal.
    pub fn write_file(&self, entry: &AuditEntry) {
        self.file(entry);
        self.publish(entry);
    }

    /// Tells live watchers, once the entry is kept (a watcher that reloads finds it).
    fn publish(&self, entry: &AuditEntry) {
        if let Some(c) = &self.changes {
            c.publish("audit", serde_json::to_value(entry).expect("JSON"));
        }
    }

    fn file(&self, entry: &AuditEntry) {
        if let Err(e) = self.append_file(entry) {
            tracing::error!(
                "cannot append to the audit trail in {}: {e}; check the data directory is writable",
                self.dir.display()
            );
        }
    }

    fn append_file(&self, entry: &AuditEntry) -> std::io::Result<()> {
        crate::private_fs::create_dir(&self.dir)?;
        let day = jiff::Timestamp::from_millisecond(entry.ts)
            .unwrap_or_default()
            .to_zoned(self.tz.clone())
            .strftime("%Y%m%d")
            .to_string();
        let mut line = serde_json::to_vec(entry).expect("JSON");
        line.push(b'\n');
        // One write of a whole line with O_APPEND: concurrent writers never interleave lines.
        crate::private_fs::append(&self.dir.join(format!("{day}.jsonl")))?.write_all(&line)
    }
}

/// Appends one entry through the app's trail (blocking); see `Audit::record`.
pub fn record(app: &App, event: &str, intent: Option<i64>, playbook: Option<&str>, details: Value) {
    match app.audit() {
        Ok(a) => a.record(event, intent, playbook, details),
        Err(e) => tracing::error!("cannot record audit entry {event}: {e}"),
    }
}

/// The last `n` entries, oldest first.
pub fn tail(app: &App, n: usize) -> Result<Vec<AuditEntry>, StoreError> {
    app.store()?.audit_tail(n)
}

/// How many entries of each event the store holds.
pub fn counts(app: &App) -> Result<Vec<(String, u64)>, StoreError> {
    app.store()?.audit_counts()
}
