//! `type = "journald"`: follow the system journal (optionally some units), or read journal
//! files (`file`) or a directory of them (`directory`), through `journalctl -o json`.

use super::lines::{Matches, DEFAULT_MAX_LINE};
use super::{BoxFuture, Source, SourceContext, SourceError};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournaldConfig {
    /// Units to follow; empty follows the whole journal.
    #[serde(default)]
    pub units: Vec<String>,
    /// Read this journal file instead of the system journal.
    pub file: Option<PathBuf>,
    /// Read the journal files in this directory instead of the system journal.
    pub directory: Option<PathBuf>,
    #[serde(rename = "match", default)]
    pub matches: Matches,
    /// Read entries already in the journal at start; by default only new entries count.
    #[serde(default)]
    pub from_start: bool,
    /// The journalctl program (argv), for hosts where it lives elsewhere.
    #[serde(default = "default_command")]
    pub command: Vec<String>,
    #[serde(default = "default_max_line")]
    pub max_line: usize,
}

fn default_command() -> Vec<String> {
    vec!["journalctl".into()]
}

fn default_max_line() -> usize {
    DEFAULT_MAX_LINE
}

pub struct JournaldSource {
    config: JournaldConfig,
}

impl JournaldSource {
    pub fn new(config: JournaldConfig) -> Self {
        Self { config }
    }
}

impl Source for JournaldSource {
    fn run<'a>(&'a mut self, _ctx: &'a SourceContext) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            Err(SourceError::new(format!(
                "journald source ({:?}) is not implemented yet",
                self.config.units
            )))
        })
    }
}
