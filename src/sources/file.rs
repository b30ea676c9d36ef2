//! `type = "file"`: tail appended lines of one file with inotify; survives rotation and
//! truncation.
//!
//! The parent directory is watched, not the file, so a rotation (rename away, new file at the
//! path) and a file that appears late are both seen. After a rotation the old file is read to
//! its end before the new one is followed from its start; a file that shrinks was truncated
//! and is read again from offset 0. Lines longer than `max_line` are cut and counted, invalid
//! UTF-8 is replaced. A missing file marks the source down ("waiting for ...") until it appears;
//! a missing directory is an error, retried with backoff.

use super::lines::{decode_line, Matches, DEFAULT_MAX_LINE};
use super::{BoxFuture, Source, SourceContext, SourceError, SourceKind};
use notify::{RecursiveMode, Watcher};
use serde::Deserialize;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

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

impl SourceKind for FileConfig {
    fn event_types(&self) -> Vec<String> {
        self.matches.event_types()
    }

    fn build(&self) -> Box<dyn Source> {
        Box::new(FileSource::new(self.clone()))
    }
}

/// Bytes read per system call.
const CHUNK: usize = 256 * 1024;
/// A safety net for missed notifications (network filesystems, overflowed inotify queues).
const RECHECK: Duration = Duration::from_secs(1);

/// Where the tail is, kept across restarts of `run` so nothing is read twice or skipped.
#[derive(Default)]
struct Position {
    inode: Option<u64>,
    offset: u64,
    /// The file did not exist when we started: all of it is new when it appears.
    appeared: bool,
}

pub struct FileSource {
    config: FileConfig,
    pos: Position,
    lines: LineSplitter,
}

impl FileSource {
    pub fn new(config: FileConfig) -> Self {
        let max = config.max_line.max(1);
        Self {
            config,
            pos: Position::default(),
            lines: LineSplitter::new(max),
        }
    }
}

/// Splits bytes into lines, holding a partial last line until its newline arrives, and
/// cutting lines longer than `max` (the rest of such a line is skipped, not buffered).
pub struct LineSplitter {
    partial: Vec<u8>,
    max: usize,
    skipping: bool,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        Self {
            partial: Vec::new(),
            max,
            skipping: false,
        }
    }

    pub fn reset(&mut self) {
        self.partial.clear();
        self.skipping = false;
    }

    /// Calls `line(text, was_cut)` for every complete line in `bytes`.
    pub fn feed(&mut self, mut bytes: &[u8], mut line: impl FnMut(&str, bool)) {
        while !bytes.is_empty() {
            match memchr::memchr(b'\n', bytes) {
                Some(i) => {
                    let (head, rest) = (&bytes[..i], &bytes[i + 1..]);
                    if self.skipping {
                        self.skipping = false;
                    } else if self.partial.is_empty() {
                        let (text, cut) = decode_line(head, self.max);
                        line(&text, cut);
                    } else {
                        self.partial.extend_from_slice(head);
                        let (text, cut) = decode_line(&self.partial, self.max);
                        line(&text, cut);
                        self.partial.clear();
                    }
                    bytes = rest;
                }
                None => {
                    if !self.skipping {
                        self.partial.extend_from_slice(bytes);
                        if self.partial.len() > self.max {
                            // Too long already: emit the cut line now, drop the rest of it.
                            let (text, _) = decode_line(&self.partial, self.max);
                            line(&text, true);
                            self.partial.clear();
                            self.skipping = true;
                        }
                    }
                    bytes = &[];
                }
            }
        }
    }
}

fn open(path: &Path) -> std::io::Result<(File, u64)> {
    let f = File::open(path)?;
    let ino = f.metadata()?.ino();
    Ok((f, ino))
}

impl FileSource {
    /// Reads `file` from the current offset to its end, emitting lines. Returns the file back,
    /// or `None` when vigil is stopping.
    async fn drain(
        &mut self,
        ctx: &SourceContext,
        file: File,
    ) -> Result<Option<File>, SourceError> {
        let mut file = file;
        loop {
            let offset = self.pos.offset;
            let path = self.config.path.clone();
            let (f, buf) =
                tokio::task::spawn_blocking(move || -> std::io::Result<(File, Vec<u8>)> {
                    let mut buf = vec![0u8; CHUNK];
                    file.seek(SeekFrom::Start(offset))?;
                    let n = file.read(&mut buf)?;
                    buf.truncate(n);
                    Ok((file, buf))
                })
                .await
                .map_err(|e| SourceError::new(e.to_string()))?
                .map_err(|e| SourceError::new(format!("cannot read {}: {e}", path.display())))?;
            file = f;
            if buf.is_empty() {
                return Ok(Some(file));
            }
            self.pos.offset += buf.len() as u64;
            let mut found = Vec::new();
            let mut cut_count = 0u64;
            let matches = &self.config.matches;
            self.lines.feed(&buf, |text, cut| {
                cut_count += u64::from(cut);
                if let Some(hit) = matches.classify(text) {
                    found.push(hit);
                }
            });
            if cut_count > 0 {
                ctx.metrics
                    .lines_truncated_total
                    .add(&[&ctx.name], cut_count as f64);
            }
            if !ctx.emit_all(found).await {
                return Ok(None);
            }
        }
    }

    async fn tail(&mut self, ctx: &SourceContext) -> Result<(), SourceError> {
        let path = self.config.path.clone();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let wake = Arc::new(Notify::new());
        let w = wake.clone();
        let mut watcher =
            notify::recommended_watcher(move |_: notify::Result<notify::Event>| w.notify_one())
                .map_err(|e| SourceError::new(format!("cannot start inotify: {e}")))?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| {
                SourceError::new(format!(
                    "cannot watch {} ({e}); create the directory or fix `path`",
                    dir.display()
                ))
            })?;

        let mut current: Option<File> = None;
        loop {
            // Where is the file at `path` now, and is it still the one we read?
            match open(&path) {
                Ok((f, ino)) => {
                    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                    let same = self.pos.inode == Some(ino);
                    if !same {
                        if let Some(old) = current.take() {
                            // Rotated: finish the old file before following the new one.
                            if self.drain(ctx, old).await?.is_none() {
                                return Ok(());
                            }
                        }
                        let skip_existing = self.pos.inode.is_none()
                            && !self.pos.appeared
                            && !self.config.from_start;
                        self.pos = Position {
                            inode: Some(ino),
                            offset: if skip_existing { len } else { 0 },
                            appeared: false,
                        };
                        self.lines.reset();
                        current = Some(f);
                    } else if len < self.pos.offset {
                        tracing::info!(source = %ctx.name, "{} was truncated; reading from the start", path.display());
                        self.pos.offset = 0;
                        self.lines.reset();
                        current = Some(f);
                    } else if current.is_none() {
                        current = Some(f);
                    }
                    ctx.up();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if self.pos.inode.is_none() {
                        self.pos.appeared = true;
                    }
                    if current.is_none() {
                        ctx.down(format!("waiting for {} to exist", path.display()));
                    }
                }
                Err(e) => {
                    return Err(SourceError::new(format!(
                        "cannot open {} ({e}); check its permissions",
                        path.display()
                    )))
                }
            }
            if let Some(f) = current.take() {
                match self.drain(ctx, f).await? {
                    Some(f) => current = Some(f),
                    None => return Ok(()),
                }
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(RECHECK) => {}
                _ = ctx.stopping() => return Ok(()),
            }
        }
    }
}

impl Source for FileSource {
    fn run<'a>(&'a mut self, ctx: &'a SourceContext) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(self.tail(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |t, cut| out.push((t.to_string(), cut)));
        }
        out
    }

    #[test]
    fn partial_lines_wait_for_their_newline() {
        assert_eq!(
            split(100, &[b"one\ntw", b"o\nthr", b"ee"]),
            [("one".to_string(), false), ("two".to_string(), false)]
        );
    }

    #[test]
    fn long_lines_are_cut_once_and_the_rest_skipped() {
        let got = split(4, &[b"abcdefgh", b"ijk\nok\n"]);
        assert_eq!(got, [("abcd".to_string(), true), ("ok".to_string(), false)]);
        let got = split(4, &[b"abcdefgh\nxy\n"]);
        assert_eq!(got, [("abcd".to_string(), true), ("xy".to_string(), false)]);
    }
}
