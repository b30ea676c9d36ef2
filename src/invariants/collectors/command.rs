//! `type = "command"`: run a program (no shell) and read JSON from its stdout as a table.
//! A non-zero exit is a collector failure, listed in `sources_unavailable`.
//!
//! The program runs through `crate::exec` like every command vigil runs: its own process
//! group (a timeout takes its children too) and bounded output.

use super::{json_table, CollectError, Collector, Cycle, Declared, Table};
use crate::exec::Cmd;
use crate::sources::BoxFuture;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    pub command: Vec<String>,
}

/// The harness bounds every collector by its timeout and drops the collection when it passes,
/// which kills the command's process group; this only keeps `exec` from waiting forever if
/// that ever changed.
const BACKSTOP: Duration = Duration::from_secs(3600);

/// How many bytes of JSON stdout are read per byte the snapshot may hold. JSON repeats every
/// key on every row, so it is larger than the table it becomes: an output that fits the
/// snapshot gets to the snapshot's own "full" error, and only one far past it is cut here.
const JSON_PER_SNAPSHOT: u64 = 4;

impl Collector for CommandConfig {
    fn check(&self) -> Result<(), String> {
        if self.command.is_empty() {
            return Err("`command` is empty; give the program and its arguments, like [\"curl\", \"-s\", \"http://...\"]".into());
        }
        Ok(())
    }

    fn declared(&self, table: &str) -> Vec<Declared> {
        vec![Declared {
            name: table.to_string(),
            columns: None,
        }]
    }

    fn collect<'a>(
        &'a self,
        table: &'a str,
        cycle: &'a Cycle,
    ) -> BoxFuture<'a, Result<Vec<Table>, CollectError>> {
        Box::pin(async move {
            let program = &self.command[0];
            let max_mb = cycle.snapshot_max_mb.saturating_mul(JSON_PER_SNAPSHOT);
            let limit = usize::try_from(max_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
            let out = Cmd::new(self.command.clone(), BACKSTOP)
                .stdout_head(limit)
                .run()
                .await
                .map_err(|e| CollectError(e.to_string()))?;
            if !out.success() {
                return Err(CollectError(format!(
                    "{program:?} ended with {}: {}",
                    out.describe(),
                    out.stderr.trim().chars().take(300).collect::<String>()
                )));
            }
            if out.stdout_cut {
                return Err(CollectError(format!(
                    "{program:?} printed more than {max_mb} MiB, more JSON than a snapshot of {} MiB (`snapshot_max_mb` in [invariants]) could load; make it print less",
                    cycle.snapshot_max_mb
                )));
            }
            let doc: serde_json::Value = serde_json::from_str(&out.stdout)
                .map_err(|e| CollectError(format!("{program:?} printed invalid JSON: {e}")))?;
            Ok(vec![json_table(table, &doc)?])
        })
    }
}
