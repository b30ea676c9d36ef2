//! The file source's checkpoints: which file it reads (device, inode and a fingerprint of the
//! first bytes, because inodes are reused) and the offset past the last line that became an
//! event, kept in the store so a restart of vigil, clean or not, loses no line.
//!
//! Saving: positions are marked after each read pass (at most 1 MiB), and one is saved once
//! the pipeline has finished every event sent before it ([`super::delivery`]): at most every
//! [`SAVE_GAP`] while lines keep coming, at once when they stop, and when vigil stops (after
//! the pipeline has finished what was sent). A crash therefore loses nothing: lines not yet
//! finished are read again. The price is duplicates: a crash repeats the lines finished since
//! the last save, about [`SAVE_GAP`] worth of them (the last pass's under a backlog); a clean
//! stop repeats none.

use crate::store::{Checkpoint, FilePosition, SourceStore, StoreError};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How many first bytes of a file its fingerprint covers.
pub const HEAD: usize = 1024;

/// Shortest time between two saves while lines keep coming: bounds both the store writes (at
/// most 5 a second per source, whatever the line rate) and the lines a crash repeats.
pub const SAVE_GAP: Duration = Duration::from_millis(200);

/// The fingerprint of `file`: SHA-256 of its first min(length, [`HEAD`]) bytes, and how many.
pub fn fingerprint(file: &File) -> std::io::Result<([u8; 32], u32)> {
    let mut buf = [0u8; HEAD];
    let mut n = 0;
    while n < HEAD {
        let got = file.read_at(&mut buf[n..], n as u64)?;
        if got == 0 {
            break;
        }
        n += got;
    }
    Ok((Sha256::digest(&buf[..n]).into(), n as u32))
}

/// Whether `file` is the file at `pos`: same device and inode, at least as long as the offset,
/// and the same first bytes (as many as the fingerprint covered).
pub fn is_same(file: &File, pos: &FilePosition) -> bool {
    let Ok(meta) = file.metadata() else {
        return false;
    };
    if meta.dev() != pos.dev || meta.ino() != pos.ino || meta.len() < pos.offset {
        return false;
    }
    let len = pos.head_len as usize;
    let mut buf = vec![0u8; len];
    matches!(file.read_at(&mut buf, 0), Ok(n) if n == len)
        && <[u8; 32]>::from(Sha256::digest(&buf)) == pos.head_sha256
}

/// The file of `pos` among the entries of `dir` (where a rotation renames it), if it is still
/// there and still the same file.
pub fn find_in(dir: &Path, pos: &FilePosition) -> Option<(PathBuf, File)> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        if entry.ino() != pos.ino {
            continue;
        }
        let path = entry.path();
        if let Ok(f) = File::open(&path) {
            if is_same(&f, pos) {
                return Some((path, f));
            }
        }
    }
    None
}

/// The source's side of saving: positions marked after each read pass, waiting until the
/// pipeline has finished the events sent before them, then written.
#[derive(Default)]
pub struct Saver {
    /// (events sent when marked, the position then), oldest first. Bounded by the event
    /// queue: each entry but the last waits for at least one event still in it.
    marks: VecDeque<(u64, Checkpoint)>,
    /// The newest position whose events are all finished, not written yet.
    ready: Option<Checkpoint>,
    written: Option<Checkpoint>,
    last_write: Option<Instant>,
    failing: bool,
}

/// Same files at the same offsets, whenever it was saved.
fn same_place(a: &Checkpoint, b: &Checkpoint) -> bool {
    a.file == b.file && a.rotated == b.rotated
}

impl Saver {
    /// The saved checkpoint the source starts from (so an unchanged one is not written again).
    pub fn started_from(&mut self, c: Option<Checkpoint>) {
        self.written = c;
    }

    /// Marks `c` as where the source is once the first `sent` events are finished.
    pub fn mark(&mut self, sent: u64, c: Checkpoint) {
        match self.marks.back_mut() {
            Some((s, last)) if *s == sent => *last = c,
            _ => self.marks.push_back((sent, c)),
        }
    }

    /// Takes in the pipeline's progress: `delivered` events are finished.
    pub fn delivered(&mut self, delivered: u64) {
        while self.marks.front().is_some_and(|(s, _)| *s <= delivered) {
            self.ready = self.marks.pop_front().map(|(_, c)| c);
        }
        if let (Some(r), Some(w)) = (&self.ready, &self.written) {
            if same_place(r, w) {
                self.ready = None;
            }
        }
    }

    /// Whether marked positions wait for events the pipeline has not finished.
    pub fn awaiting_delivery(&self) -> bool {
        !self.marks.is_empty()
    }

    /// When the ready position may be written; `None` when there is none.
    pub fn write_at(&self) -> Option<Instant> {
        self.ready.as_ref()?;
        Some(self.last_write.map_or_else(Instant::now, |t| t + SAVE_GAP))
    }

    /// Writes the ready position if it is due (or `now`, whatever the gap), off the async
    /// threads. A store error is logged once (and once when it clears) and the write retried
    /// with the next one: tailing goes on without it.
    pub async fn write(
        &mut self,
        store: &Arc<dyn SourceStore>,
        source: &str,
        path: &str,
        now: bool,
    ) {
        let Some(due) = self.write_at() else {
            return;
        };
        if !now && due > Instant::now() {
            return;
        }
        let Some(c) = self.ready.take() else {
            return;
        };
        let (store, s, p, cc) = (
            store.clone(),
            source.to_string(),
            path.to_string(),
            c.clone(),
        );
        let res = tokio::task::spawn_blocking(move || store.save_checkpoint(&s, &p, &cc))
            .await
            .unwrap_or_else(|e| Err(StoreError::Corrupt(e.to_string())));
        self.last_write = Some(Instant::now());
        match res {
            Ok(()) => {
                if self.failing {
                    tracing::info!(source, "checkpoints are saved again");
                    self.failing = false;
                }
                self.written = Some(c);
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(source, "cannot save the checkpoint of {path}: {e}; a restart now would read lines again or skip them");
                    self.failing = true;
                }
                // Tried again with the next position, or this one after the gap.
                if self.ready.is_none() {
                    self.ready = Some(c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(offset: u64) -> Checkpoint {
        Checkpoint {
            file: FilePosition {
                dev: 1,
                ino: 2,
                head_sha256: [0; 32],
                head_len: 0,
                offset,
            },
            rotated: None,
            saved_ms: offset as i64,
        }
    }

    #[test]
    fn a_position_is_ready_only_once_the_events_before_it_are_finished() {
        let mut s = Saver::default();
        s.mark(3, cp(10));
        s.mark(5, cp(20));
        s.mark(5, cp(25)); // no event in between: replaces
        s.delivered(2);
        assert!(s.write_at().is_none(), "nothing finished yet");
        s.delivered(4);
        assert_eq!(s.ready.as_ref().unwrap().file.offset, 10);
        assert!(s.awaiting_delivery());
        s.delivered(5);
        assert_eq!(s.ready.as_ref().unwrap().file.offset, 25);
        assert!(!s.awaiting_delivery());
    }

    #[test]
    fn an_unchanged_position_is_not_written_again() {
        let mut s = Saver::default();
        s.started_from(Some(cp(7)));
        let mut same = cp(7);
        same.saved_ms = 99;
        s.mark(0, same);
        s.delivered(0);
        assert!(s.write_at().is_none());
    }

    #[test]
    fn fingerprints_cover_at_most_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![b'x'; 3000]).unwrap();
        let f = File::open(&p).unwrap();
        let (sha, n) = fingerprint(&f).unwrap();
        assert_eq!(n as usize, HEAD);
        let m = f.metadata().unwrap();
        let pos = FilePosition {
            dev: m.dev(),
            ino: m.ino(),
            head_sha256: sha,
            head_len: n,
            offset: 3000,
        };
        assert!(is_same(&f, &pos));
        assert!(
            !is_same(
                &f,
                &FilePosition {
                    offset: 3001,
                    ..pos.clone()
                }
            ),
            "shorter than the offset: truncated"
        );
        std::fs::write(&p, vec![b'y'; 3000]).unwrap();
        assert!(!is_same(&f, &pos), "other first bytes: another file");
    }
}
