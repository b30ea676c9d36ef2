//! `type = "file"`: tail appended lines of one file with inotify; survives rotation and
//! truncation and loses no line to either.
//!
//! The parent directory is watched, not the file, so a rotation (rename away, new file at the
//! path) and a file that appears late are both seen. A file that did not exist (or could not be
//! opened) when the source started is new in full and read from its start. After a
//! rename-and-create rotation the new file is followed from its start while the old one is
//! still read: writers often append to the renamed file for a moment before they reopen, so
//! it is released only once it has been idle for `rotate_grace`. A file that shrinks was
//! truncated and is read again from offset 0; runs of NUL bytes (what copytruncate leaves when
//! the writer does not use `O_APPEND`) are skipped. Lines longer than `max_line` are cut and
//! counted, invalid UTF-8 is replaced. A missing file marks the source down ("waiting for
//! ...") until it appears; a missing directory is an error, retried with backoff.
//!
//! With a store (the daemon gives one), where the source is survives vigil's restarts
//! ([`super::checkpoint`]). On start: the same file as the checkpoint's (device, inode and
//! first bytes, no shorter than the offset) is read on from the offset; a file rotated away
//! while vigil was stopped (found by its inode in the directory, e.g. as `app.log.1`) has its
//! tail read first, then the new file from its start; a truncated or other file is read from
//! its start. Without a checkpoint (the first start ever) reading begins at the end of the
//! file, or its start with `from_start`.

use super::checkpoint::{self, Saver};
use super::lines::{decode_line, Matches, DEFAULT_MAX_LINE};
use super::{BoxFuture, Source, SourceContext, SourceError, SourceKind};
use crate::config::Dur;
use crate::store::{Checkpoint, FilePosition};
use crate::watch::DirWatch;
use serde::Deserialize;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
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
    /// How long a rotated-away file is still read after its last write.
    #[serde(default = "default_rotate_grace")]
    pub rotate_grace: Dur,
}

fn default_max_line() -> usize {
    DEFAULT_MAX_LINE
}

fn default_rotate_grace() -> Dur {
    Dur::secs(5)
}

impl SourceKind for FileConfig {
    fn event_types(&self) -> Vec<String> {
        self.matches.event_types()
    }

    fn event_fields(&self, event: &str) -> Option<Vec<String>> {
        Some(self.matches.event_fields(event))
    }

    fn build(&self) -> Box<dyn Source> {
        Box::new(FileSource::new(self.clone()))
    }
}

/// Bytes read per system call.
const CHUNK: usize = 256 * 1024;
/// Lines turned into events and sent at once: what [`SourceContext::emit_all`] sends after
/// one wait for queue space.
const LINES_PER_SEND: usize = super::SEND_BATCH;
/// Bytes read in one pass before the position is marked for saving: a long backlog (a
/// restart after a day) still saves as it goes, so a crash in it repeats little.
const PASS_BYTES: u64 = 4 * CHUNK as u64;
/// How often the pipeline's progress is looked at while read lines wait to be finished.
const DELIVERY_POLL: Duration = Duration::from_millis(50);
/// A safety net for missed notifications (network filesystems, overflowed inotify queues).
const RECHECK: Duration = Duration::from_secs(1);

/// How long vigil's stop waits for the pipeline to finish the source's events (it drains its
/// queue before vigil exits) before it saves the last checkpoint anyway: lines not finished
/// by then are read again at the next start. Below the unit's `TimeoutStopSec` (30 s).
const FINISH_WAIT: Duration = Duration::from_secs(20);

/// One open file being read: where, and the partial line read so far.
struct Tail {
    file: Arc<File>,
    dev: u64,
    ino: u64,
    /// Read up to here.
    offset: u64,
    /// Just past the last line handed to the pipeline: where a restart reads on from.
    line_end: u64,
    /// The file's fingerprint and how many bytes it covers, once read (see
    /// [`checkpoint::fingerprint`]); read again while the file is shorter than it covers.
    head: Option<([u8; 32], u32)>,
    lines: LineSplitter,
}

impl Tail {
    fn new(file: File, ino: u64, offset: u64, max_line: usize) -> Self {
        let dev = file.metadata().map(|m| m.dev()).unwrap_or(0);
        Self {
            file: Arc::new(file),
            dev,
            ino,
            offset,
            line_end: offset,
            head: None,
            lines: LineSplitter::new(max_line),
        }
    }

    /// Where a restart would read on, once the fingerprint is known.
    fn position(&self) -> Option<FilePosition> {
        let (head_sha256, head_len) = self.head?;
        Some(FilePosition {
            dev: self.dev,
            ino: self.ino,
            head_sha256,
            head_len,
            offset: self.line_end,
        })
    }
}

/// A file rotated away from `path`, read until it has been idle for `rotate_grace`.
struct Rotated {
    tail: Tail,
    last_data_ms: i64,
}

pub struct FileSource {
    config: FileConfig,
    /// The file at `path` as last opened; kept across restarts of `run`, so nothing is read
    /// twice or skipped.
    current: Option<Tail>,
    rotated: Option<Rotated>,
    /// The file was missing (or could not be opened) when we started: all of it is new when
    /// it appears.
    appeared: bool,
    /// The checkpoint was looked up (once, at the first `run`; later runs go on from memory).
    restored: bool,
    saver: Saver,
}

impl FileSource {
    pub fn new(config: FileConfig) -> Self {
        Self {
            config,
            current: None,
            rotated: None,
            appeared: false,
            restored: false,
            saver: Saver::default(),
        }
    }

    /// The checkpoint key: the configured path, as written.
    fn key(&self) -> String {
        self.config.path.display().to_string()
    }

    /// Where the source is now: the rotated file (if any) and the file at the path. When
    /// only a rotated file is being read, it is the checkpoint's file: a restart finds it by
    /// its inode and reads the file at the path, when there is one, from its start.
    fn snapshot(&self, now_ms: i64) -> Option<Checkpoint> {
        let rotated = match &self.rotated {
            Some(r) => Some(r.tail.position()?),
            None => None,
        };
        let (file, rotated) = match (&self.current, rotated) {
            (Some(t), rotated) => (t.position()?, rotated),
            (None, Some(r)) => (r, None),
            (None, None) => return None,
        };
        Some(Checkpoint {
            file,
            rotated,
            saved_ms: now_ms,
        })
    }

    /// Marks where the source is after a read pass, and writes what the pipeline has
    /// finished when it is due (`now`: whatever the gap).
    async fn save(&mut self, ctx: &SourceContext, now: bool) {
        let Some(store) = ctx.saving_store() else {
            return;
        };
        if let Some(c) = self.snapshot(ctx.clock.now_ms()) {
            self.saver.mark(ctx.sent(), c);
        }
        self.saver.delivered(ctx.delivered());
        self.saver.write(store, &ctx.name, &self.key(), now).await;
    }

    /// At the first run with a store: picks up where the last run of vigil left off.
    async fn restore(&mut self, ctx: &SourceContext, dir: &Path) -> Result<(), SourceError> {
        let Some(store) = ctx.store() else {
            return Ok(());
        };
        let (store, name, key) = (store.clone(), ctx.name.clone(), self.key());
        let path = self.config.path.clone();
        let dir = dir.to_path_buf();
        let found = tokio::task::spawn_blocking(move || -> Result<_, String> {
            let saved = store
                .checkpoint(&name, &key)
                .map_err(|e| format!("cannot read the checkpoint of {key}: {e}"))?;
            Ok(saved.map(|c| {
                let found = Resumed::find(&c, &path, &dir);
                (c, found)
            }))
        })
        .await
        .map_err(|e| SourceError::new(e.to_string()))?;
        // The store is away (PostgreSQL down): observe now, as on a first start, rather than
        // stay blind until it is back; the next checkpoint saved replaces the old one.
        let found = found.unwrap_or_else(|e| {
            tracing::warn!(source = %ctx.name, "{e}; reading {} from its end as on a first start (lines written while vigil was stopped are not read)", self.config.path.display());
            None
        });
        let Some((saved, found)) = found else {
            return Ok(());
        };
        let max_line = self.config.max_line.max(1);
        let path = self.config.path.display();
        let mut away = Vec::new();
        for (p, f, offset) in found.away {
            tracing::info!(source = %ctx.name, "{} was rotated away to {} while vigil was stopped; reading its last lines first", path, p.display());
            let ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
            away.push(Tail::new(f, ino, offset, max_line));
        }
        for lost in found.lost {
            tracing::warn!(source = %ctx.name, "the file {path} was at when vigil stopped ({lost}) is gone; lines written to it after that are lost");
        }
        match found.at_path {
            AtPath::Same(f, offset) => {
                let ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
                self.current = Some(Tail::new(f, ino, offset, max_line));
            }
            AtPath::Other(f) => {
                tracing::info!(source = %ctx.name, "{path} is not the file vigil read before it stopped (truncated or replaced); reading it from the start");
                let ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
                self.current = Some(Tail::new(f, ino, 0, max_line));
            }
            AtPath::Missing => self.appeared = true,
        }
        // Older first: all but the newest rotated-away file are read to their end now, the
        // newest is kept like a rotation seen while running.
        let newest = away.pop();
        for mut older in away {
            if !drain_to_end(&mut older, &self.config.matches, &self.config.path, ctx).await? {
                return Ok(());
            }
        }
        self.rotated = newest.map(|tail| Rotated {
            tail,
            last_data_ms: ctx.clock.now_ms(),
        });
        self.saver.started_from(Some(saved));
        Ok(())
    }
}

/// What a saved checkpoint's files have become.
struct Resumed {
    /// Files rotated away from the path, still there, with the offset to read on from;
    /// older first.
    away: Vec<(PathBuf, File, u64)>,
    /// Files of the checkpoint that are gone (deleted, compressed, moved elsewhere).
    lost: Vec<String>,
    at_path: AtPath,
}

enum AtPath {
    /// The checkpoint's file, read on from the offset.
    Same(File, u64),
    /// Another file (or the same truncated): read from its start.
    Other(File),
    Missing,
}

impl Resumed {
    /// Blocking: opens and fingerprints files, lists `dir`.
    fn find(c: &Checkpoint, path: &Path, dir: &Path) -> Resumed {
        let mut r = Resumed {
            away: Vec::new(),
            lost: Vec::new(),
            at_path: AtPath::Missing,
        };
        let here = File::open(path).ok();
        let here_id = here
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| (m.dev(), m.ino()));
        for pos in [c.rotated.as_ref(), Some(&c.file)].into_iter().flatten() {
            if let Some(f) = &here {
                if checkpoint::is_same(f, pos) {
                    if let Ok(f) = f.try_clone() {
                        r.at_path = AtPath::Same(f, pos.offset);
                    }
                    continue;
                }
            }
            if here_id == Some((pos.dev, pos.ino)) {
                // Still at the path, but truncated or rewritten: read from its start below.
                continue;
            }
            match checkpoint::find_in(dir, pos) {
                Some((p, f)) => r.away.push((p, f, pos.offset)),
                None => r.lost.push(format!("inode {}", pos.ino)),
            }
        }
        if let (AtPath::Missing, Some(f)) = (&r.at_path, here) {
            r.at_path = AtPath::Other(f);
        }
        r
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

    /// Calls `line(text, was_cut)` for every complete line in `bytes`. NUL bytes are
    /// skipped: copytruncate with a writer that does not use `O_APPEND` leaves a sparse run
    /// of them before the next line, which would otherwise swallow that line.
    pub fn feed(&mut self, bytes: &[u8], line: impl FnMut(&str, bool)) {
        if memchr::memchr(0, bytes).is_none() {
            return self.feed_text(bytes, line);
        }
        let text: Vec<u8> = bytes.iter().copied().filter(|&b| b != 0).collect();
        self.feed_text(&text, line)
    }

    fn feed_text(&mut self, mut bytes: &[u8], mut line: impl FnMut(&str, bool)) {
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

/// Reads `tail` to the end of the file, whatever its length; false when vigil is stopping.
async fn drain_to_end(
    tail: &mut Tail,
    matches: &Matches,
    path: &Path,
    ctx: &SourceContext,
) -> Result<bool, SourceError> {
    loop {
        match drain(tail, matches, path, ctx).await? {
            None => return Ok(false),
            Some(n) if n < PASS_BYTES => return Ok(true),
            Some(_) => {}
        }
    }
}

/// Reads `tail` from its offset to the end of the file, or [`PASS_BYTES`] of it, emitting
/// lines. Returns the number of bytes read, or `None` when vigil is stopping.
async fn drain(
    tail: &mut Tail,
    matches: &Matches,
    path: &Path,
    ctx: &SourceContext,
) -> Result<Option<u64>, SourceError> {
    let mut total = 0;
    loop {
        let (file, offset) = (tail.file.clone(), tail.offset);
        // The fingerprint is read once, and again while the file is shorter than it covers.
        let need_head = tail
            .head
            .is_none_or(|(_, n)| (n as usize) < checkpoint::HEAD);
        let (buf, head) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let mut buf = vec![0u8; CHUNK];
            let n = file.read_at(&mut buf, offset)?;
            buf.truncate(n);
            let head = if need_head {
                Some(checkpoint::fingerprint(&file)?)
            } else {
                None
            };
            Ok((buf, head))
        })
        .await
        .map_err(|e| SourceError::new(e.to_string()))?
        .map_err(|e| SourceError::new(format!("cannot read {}: {e}", path.display())))?;
        if head.is_some() {
            tail.head = head;
        }
        if buf.is_empty() {
            return Ok(Some(total));
        }
        let mut at = tail.offset;
        tail.offset += buf.len() as u64;
        total += buf.len() as u64;
        // In pieces of at most one send's worth of lines: `emit_all` sends up to that many
        // events after a single wait, so a stop that cuts the pass short falls between two
        // pieces, and `line_end` (where a restart reads on) says exactly what was sent.
        let mut rest = &buf[..];
        let mut found = Vec::new();
        while !rest.is_empty() {
            let cut = memchr::memchr_iter(b'\n', rest)
                .nth(LINES_PER_SEND - 1)
                .map_or(rest.len(), |i| i + 1);
            let (piece, after) = rest.split_at(cut);
            rest = after;
            let mut cut_count = 0u64;
            tail.lines.feed(piece, |text, cut| {
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
            if !found.is_empty() && !ctx.emit_all(found.drain(..)).await {
                return Ok(None);
            }
            if let Some(i) = memchr::memrchr(b'\n', piece) {
                tail.line_end = at + i as u64 + 1;
            }
            at += piece.len() as u64;
        }
        if total >= PASS_BYTES {
            return Ok(Some(total));
        }
    }
}

impl FileSource {
    async fn tail(&mut self, ctx: &SourceContext) -> Result<(), SourceError> {
        let path = self.config.path.clone();
        let max_line = self.config.max_line.max(1);
        let grace_ms = self.config.rotate_grace.as_ms();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !self.restored {
            self.restore(ctx, &dir).await?;
            self.restored = true;
        }
        // Not there at the first try, for whatever reason (no file, no directory yet, no
        // permission): when it does appear, every line in it is new.
        if self.current.is_none() && open(&path).is_err() {
            self.appeared = true;
        }
        let wake = Arc::new(Notify::new());
        let w = wake.clone();
        let watch = DirWatch::new(&dir, false, move |_| w.notify_one()).map_err(|e| {
            SourceError::new(format!(
                "cannot watch {} ({e}); create the directory or fix `path`",
                dir.display()
            ))
        })?;
        ctx.degraded(
            watch
                .polling
                .as_ref()
                .map(|why| format!("polling every second: {why}")),
        );

        loop {
            let now = ctx.clock.now_ms();
            // Where is the file at `path` now, and is it still the one we read?
            match open(&path) {
                Ok((f, ino)) => {
                    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                    match &mut self.current {
                        Some(t) if t.ino == ino => {
                            if len < t.offset {
                                tracing::info!(source = %ctx.name, "{} was truncated; reading from the start", path.display());
                                *t = Tail::new(f, ino, 0, max_line);
                            }
                        }
                        Some(_) => {
                            // Rotated: keep reading the old file for a while, follow the new
                            // one from its start. A second rotation within the grace finishes
                            // the oldest file first.
                            if let Some(mut older) = self.rotated.take() {
                                let m = &self.config.matches;
                                if !drain_to_end(&mut older.tail, m, &path, ctx).await? {
                                    return Ok(());
                                }
                            }
                            let old = self.current.replace(Tail::new(f, ino, 0, max_line));
                            self.rotated = old.map(|tail| Rotated {
                                tail,
                                last_data_ms: now,
                            });
                        }
                        None => {
                            let skip_existing = !self.appeared && !self.config.from_start;
                            let offset = if skip_existing { len } else { 0 };
                            self.current = Some(Tail::new(f, ino, offset, max_line));
                        }
                    }
                    ctx.up();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if self.current.is_none() {
                        self.appeared = true;
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
            // The rotated file's last lines come before the new file's first ones.
            let mut more = false;
            if let Some(r) = &mut self.rotated {
                match drain(&mut r.tail, &self.config.matches, &path, ctx).await? {
                    None => return Ok(()),
                    Some(0) => {}
                    // The time this pass began, before the lines went out: stamping after
                    // emitting could see a clock moved on by whoever took them.
                    Some(n) => {
                        r.last_data_ms = now;
                        more = n >= PASS_BYTES;
                    }
                }
                if ctx.clock.now_ms() - r.last_data_ms >= grace_ms {
                    self.rotated = None;
                }
            }
            if let (false, Some(t)) = (more, &mut self.current) {
                match drain(t, &self.config.matches, &path, ctx).await? {
                    None => return Ok(()),
                    Some(n) => more = n >= PASS_BYTES,
                }
            }
            self.save(ctx, false).await;
            if more {
                continue;
            }
            // Until the files may have changed: meanwhile, save what the pipeline finishes.
            // Its progress is looked at on a timer rather than woken for: a wake per line
            // would cost the line-to-intent latency more than a save a little later does.
            let recheck = tokio::time::Instant::now() + RECHECK;
            loop {
                let write_at = self.saver.write_at();
                let awaiting = self.saver.awaiting_delivery() && !ctx.pipeline_closed();
                tokio::select! {
                    _ = wake.notified() => break,
                    _ = tokio::time::sleep_until(recheck) => break,
                    _ = ctx.stopping() => return Ok(()),
                    _ = tokio::time::sleep(DELIVERY_POLL), if awaiting => {}
                    _ = tokio::time::sleep_until(write_at.unwrap_or(recheck)), if write_at.is_some() => {}
                }
                self.saver.delivered(ctx.delivered());
                if let Some(store) = ctx.saving_store() {
                    self.saver.write(store, &ctx.name, &self.key(), false).await;
                }
            }
        }
    }

    /// When vigil stops: waits (a while) for the pipeline to finish the events sent, then
    /// saves where the source is, so a clean restart repeats no line.
    async fn finish(&mut self, ctx: &SourceContext) {
        if ctx.saving_store().is_none() || !self.restored {
            return;
        }
        // Stopped before a first read finished: the fingerprints are still to be read, and
        // without a checkpoint the next start would take itself for the first one.
        let tails = [
            self.current.as_mut(),
            self.rotated.as_mut().map(|r| &mut r.tail),
        ];
        for t in tails.into_iter().flatten().filter(|t| t.head.is_none()) {
            let file = t.file.clone();
            let head = tokio::task::spawn_blocking(move || checkpoint::fingerprint(&file)).await;
            t.head = head.ok().and_then(Result::ok);
        }
        if let Some(c) = self.snapshot(ctx.clock.now_ms()) {
            self.saver.mark(ctx.sent(), c);
        }
        let _ = tokio::time::timeout(FINISH_WAIT, async {
            loop {
                self.saver.delivered(ctx.delivered());
                if !self.saver.awaiting_delivery() || ctx.pipeline_closed() {
                    break;
                }
                ctx.delivery_progressed().await;
            }
        })
        .await;
        if self.saver.awaiting_delivery() {
            tracing::warn!(source = %ctx.name, "stopping before the pipeline finished this source's last events; they are read again at the next start");
        }
        self.save(ctx, true).await;
    }
}

impl Source for FileSource {
    fn run<'a>(&'a mut self, ctx: &'a SourceContext) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(self.tail(ctx))
    }

    fn finish<'a>(&'a mut self, ctx: &'a SourceContext) -> BoxFuture<'a, ()> {
        Box::pin(FileSource::finish(self, ctx))
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
