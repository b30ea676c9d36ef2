//! `type = "command"`: run a program (no shell) and read JSON from its stdout as a table.
//! A non-zero exit is a collector failure, listed in `sources_unavailable`.

use super::{json_table, CollectError, Collector, Cycle, Declared, Table};
use crate::config::Dur;
use crate::sources::BoxFuture;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    pub command: Vec<String>,
    /// Table name (default: the collector's name).
    pub table: Option<String>,
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub non_empty: bool,
}

impl Collector for CommandConfig {
    fn declared(&self, name: &str) -> Vec<Declared> {
        vec![Declared {
            name: self.table.clone().unwrap_or_else(|| name.to_string()),
            columns: None,
        }]
    }

    fn collect<'a>(
        &'a self,
        name: &'a str,
        _cycle: &'a Cycle,
    ) -> BoxFuture<'a, Result<Vec<Table>, CollectError>> {
        Box::pin(async move {
            let out = tokio::process::Command::new(&self.command[0])
                .args(&self.command[1..])
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| CollectError(format!("cannot run {:?}: {e}", self.command[0])))?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                return Err(CollectError(format!(
                    "{:?} exited with {}: {}",
                    self.command[0],
                    out.status,
                    err.trim().chars().take(300).collect::<String>()
                )));
            }
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
                CollectError(format!("{:?} printed invalid JSON: {e}", self.command[0]))
            })?;
            let table = self.table.clone().unwrap_or_else(|| name.to_string());
            Ok(vec![json_table(&table, &doc)?])
        })
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout.map(|d| d.0)
    }

    fn non_empty(&self) -> bool {
        self.non_empty
    }
}
