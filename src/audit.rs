//! The audit trail: every decision and step, one JSON line each in `DATA_DIR/audit/YYYYMMDD.jsonl`
//! (local date in the config's time zone) and in the store, so `vigil audit tail` and
//! `jq -r .event audit/*.jsonl | sort | uniq -c` both work.

use crate::app::App;
use crate::store::Store;
use serde_json::Value;
use std::io::Write;

pub use crate::orchestrator::ledger::AuditEntry;

/// Appends one entry (blocking). A trail that cannot be written is logged loudly, never fatal:
/// the action it describes has already happened.
pub fn record(app: &App, event: &str, intent: Option<i64>, playbook: Option<&str>, details: Value) {
    let entry = entry(app, event, intent, playbook, details);
    write_file(app, &entry);
    match app.store() {
        Ok(s) => {
            if let Err(e) = s.append_audit(&entry) {
                tracing::error!("cannot store audit entry {event}: {e}");
            }
        }
        Err(e) => tracing::error!("cannot store audit entry {event}: {e}"),
    }
}

/// An entry stamped now, and logged; for a caller that stores it in its own transaction
/// (`Store::settle_run`) after `write_file`.
pub fn entry(
    app: &App,
    event: &str,
    intent: Option<i64>,
    playbook: Option<&str>,
    details: Value,
) -> AuditEntry {
    let entry = AuditEntry {
        ts: app.clock.now_ms(),
        event: event.to_string(),
        intent,
        playbook: playbook.map(str::to_string),
        details,
    };
    tracing::info!(target: "vigil::audit", event, intent, playbook, details = %entry.details, "audit");
    entry
}

/// Appends the entry's line to the day's file; a failure is logged, never fatal.
pub fn write_file(app: &App, entry: &AuditEntry) {
    if let Err(e) = append_file(app, entry) {
        tracing::error!(
            "cannot append to the audit trail in {}: {e}; check the data directory is writable",
            app.audit_dir().display()
        );
    }
}

fn append_file(app: &App, entry: &AuditEntry) -> std::io::Result<()> {
    let dir = app.audit_dir();
    std::fs::create_dir_all(&dir)?;
    let day = jiff::Timestamp::from_millisecond(entry.ts)
        .unwrap_or_default()
        .to_zoned(app.config.timezone.0.clone())
        .strftime("%Y%m%d")
        .to_string();
    let mut line = serde_json::to_vec(entry).expect("JSON");
    line.push(b'\n');
    // One write of a whole line with O_APPEND: concurrent writers never interleave lines.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{day}.jsonl")))?
        .write_all(&line)
}

/// The last `n` entries, oldest first.
pub fn tail(app: &App, n: usize) -> Result<Vec<AuditEntry>, crate::store::StoreError> {
    app.store()?.audit_tail(n)
}

/// How many entries of each event the store holds.
pub fn counts(app: &App) -> Result<Vec<(String, u64)>, crate::store::StoreError> {
    app.store()?.with_conn(|c| {
        let mut stmt =
            c.prepare_cached("SELECT event, count(*) FROM audit GROUP BY event ORDER BY event")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    })
}
