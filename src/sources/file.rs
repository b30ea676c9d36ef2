//! `type = "file"`: tail appended lines of one file with inotify; survives rotation and
//! truncation.

use super::lines::{Matches, DEFAULT_MAX_LINE};
use super::{BoxFuture, Source, SourceContext, SourceError};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub path: PathBuf,
    #[serde(rename = "match", default)]
    pub matches: Matches,
    /// Read the lines already in the file at start; by default only new lines count.
    #[serde(default)]
    pub from_start: bool,
    /// Lines longer than this many bytes are cut (and counted).
    #[serde(default = "default_max_line")]
    pub max_line: usize,
}

fn default_max_line() -> usize {
    DEFAULT_MAX_LINE
}

pub struct FileSource {
    config: FileConfig,
}

impl FileSource {
    pub fn new(config: FileConfig) -> Self {
        Self { config }
    }
}

impl Source for FileSource {
    fn run<'a>(&'a mut self, _ctx: &'a SourceContext) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            Err(SourceError::new(format!(
                "file source for {} is not implemented yet",
                self.config.path.display()
            )))
        })
    }
}
