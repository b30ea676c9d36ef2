//! `type = "dir"`: files created or modified under a directory become events.

use super::{BoxFuture, Source, SourceContext, SourceError};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirConfig {
    pub path: PathBuf,
    /// The event type for each file created or modified.
    pub event: String,
    /// Watch subdirectories too.
    #[serde(default)]
    pub recursive: bool,
}

pub struct DirSource {
    config: DirConfig,
}

impl DirSource {
    pub fn new(config: DirConfig) -> Self {
        Self { config }
    }
}

impl Source for DirSource {
    fn run<'a>(&'a mut self, _ctx: &'a SourceContext) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            Err(SourceError::new(format!(
                "dir source for {} is not implemented yet",
                self.config.path.display()
            )))
        })
    }
}
