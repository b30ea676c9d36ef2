//! `type = "dir"`: files created or modified under a directory become events with data
//! `{path, file, action}` (`action` is `created` or `modified`; a file renamed into place, as
//! atomic writers do, counts as created). Hidden files (a leading `.`, the usual temp names) are
//! ignored. A missing directory is an error, retried with backoff.

use super::{BoxFuture, Source, SourceContext, SourceError, SourceKind};
use crate::event::Data;
use crate::watch::DirWatch;
use notify::event::{CreateKind, MetadataKind, ModifyKind, RenameMode};
use notify::EventKind;
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;
use tokio::sync::mpsc;

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

impl SourceKind for DirConfig {
    fn event_types(&self) -> Vec<String> {
        vec![self.event.clone()]
    }

    fn event_fields(&self, _event: &str) -> Option<Vec<String>> {
        Some(["path", "file", "action"].map(String::from).to_vec())
    }

    fn build(&self) -> Box<dyn Source> {
        Box::new(DirSource::new(self.clone()))
    }
}

pub struct DirSource {
    config: DirConfig,
}

impl DirSource {
    pub fn new(config: DirConfig) -> Self {
        Self { config }
    }
}

/// What a notification means for us, if anything.
fn action(kind: &EventKind) -> Option<&'static str> {
    match kind {
        EventKind::Create(CreateKind::File | CreateKind::Any) => Some("created"),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Some("created"),
        // Polling (no inotify) reports a write as a new modification time.
        EventKind::Modify(
            ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Metadata(MetadataKind::WriteTime),
        ) => Some("modified"),
        _ => None,
    }
}

impl Source for DirSource {
    fn run<'a>(&'a mut self, ctx: &'a SourceContext) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async move {
            let dir = &self.config.path;
            if !dir.is_dir() {
                return Err(SourceError::new(format!(
                    "directory {} does not exist; create it or fix `path`",
                    dir.display()
                )));
            }
            // The watcher's thread hands notifications over a bounded channel; when the rules
            // fall behind it waits rather than grow memory.
            let (tx, mut rx) = mpsc::channel::<notify::Event>(1024);
            let watch = DirWatch::new(dir, self.config.recursive, move |ev| {
                let _ = tx.blocking_send(ev);
            })
            .map_err(|e| SourceError::new(format!("cannot watch {} ({e})", dir.display())))?;
            ctx.degraded(
                watch
                    .polling
                    .as_ref()
                    .map(|why| format!("polling every second: {why}")),
            );
            ctx.up();
            loop {
                let ev = tokio::select! {
                    ev = rx.recv() => ev,
                    _ = ctx.stopping() => return Ok(()),
                };
                let Some(ev) = ev else {
                    return Err(SourceError::new(format!(
                        "the watch on {} ended",
                        dir.display()
                    )));
                };
                let Some(action) = action(&ev.kind) else {
                    continue;
                };
                for path in ev.paths {
                    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if name.is_empty() || name.starts_with('.') || path.is_dir() {
                        continue;
                    }
                    let mut data = Data::new();
                    data.insert("path".into(), Value::String(path.display().to_string()));
                    data.insert("file".into(), Value::String(name.to_string()));
                    data.insert("action".into(), Value::String(action.into()));
                    if !ctx.emit(&self.config.event, data).await {
                        return Ok(());
                    }
                }
            }
        })
    }
}
