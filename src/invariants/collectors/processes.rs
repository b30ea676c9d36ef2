//! `type = "processes"`: the host's processes from /proc, as
//! `(pid, ppid, state, comm, cmdline, started_at)`; `started_at` is epoch seconds. The host's
//! /proc also shows the processes of its containers.

use super::{CollectError, Collector, Cycle, Declared, Rows, Table};
use crate::sources::BoxFuture;
use rusqlite::types::Value;
use serde::Deserialize;
use std::path::PathBuf;

const COLUMNS: [&str; 6] = ["pid", "ppid", "state", "comm", "cmdline", "started_at"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessesConfig {
    /// Where procfs is mounted.
    #[serde(default = "default_proc")]
    pub proc: PathBuf,
}

fn default_proc() -> PathBuf {
    PathBuf::from("/proc")
}

impl Collector for ProcessesConfig {
    fn declared(&self, table: &str) -> Vec<Declared> {
        vec![Declared {
            name: table.to_string(),
            columns: Some(COLUMNS.iter().map(|s| s.to_string()).collect()),
        }]
    }

    fn collect<'a>(
        &'a self,
        table: &'a str,
        _cycle: &'a Cycle,
    ) -> BoxFuture<'a, Result<Vec<Table>, CollectError>> {
        Box::pin(async move {
            let proc = self.proc.clone();
            let rows = tokio::task::spawn_blocking(move || read_proc(&proc))
                .await
                .map_err(|e| CollectError(format!("processes collector panicked: {e}")))??;
            Ok(vec![Table {
                name: table.to_string(),
                columns: COLUMNS.iter().map(|s| s.to_string()).collect(),
                rows: Rows::Values(rows),
                skipped: Vec::new(),
            }])
        })
    }
}

fn read_proc(proc: &std::path::Path) -> Result<Vec<Vec<Value>>, CollectError> {
    let stat = std::fs::read_to_string(proc.join("stat"))
        .map_err(|e| CollectError(format!("cannot read {}/stat: {e}", proc.display())))?;
    let btime: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    let dir = std::fs::read_dir(proc)
        .map_err(|e| CollectError(format!("cannot list {}: {e}", proc.display())))?;
    let mut rows = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i64>().ok()) else {
            continue;
        };
        // A process may exit between listing and reading: skip it.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // After the comm: state(0) ppid(1) ... starttime(19).
        let (Some(state), Some(ppid), Some(start)) =
            (fields.first(), fields.get(1), fields.get(19))
        else {
            continue;
        };
        let ticks: i64 = start.parse().unwrap_or(0);
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .trim_end_matches('\0')
                    .replace('\0', " ")
            })
            .unwrap_or_default();
        rows.push(vec![
            Value::Integer(pid),
            Value::Integer(ppid.parse().unwrap_or(0)),
            Value::Text(state.to_string()),
            Value::Text(comm.to_string()),
            Value::Text(cmdline),
            Value::Integer(btime + ticks / hz),
        ]);
    }
    Ok(rows)
}
