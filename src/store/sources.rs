//! The daemon's sources' health as last recorded, for `vigil status` without a daemon; and
//! where each file source is in its file, so a restart of vigil loses no line.

use super::StoreError;
use crate::sources::SourceState;

pub trait SourceStore: Send + Sync {
    /// Replaces the recorded state of the daemon's sources.
    fn put_source_states(&self, states: &[SourceState]) -> Result<(), StoreError>;
    fn source_states(&self) -> Result<Vec<SourceState>, StoreError>;
    /// The last checkpoint of `source` for the file it follows at `path`, if one was saved.
    fn checkpoint(&self, source: &str, path: &str) -> Result<Option<Checkpoint>, StoreError>;
    /// Replaces the checkpoint of `source` for `path`.
    fn save_checkpoint(
        &self,
        source: &str,
        path: &str,
        checkpoint: &Checkpoint,
    ) -> Result<(), StoreError>;
}

/// Where a file source is: in the file at its path, and, while a file rotated away from the
/// path is still being read, in that one too (read first on a restart: its lines are older).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub file: FilePosition,
    pub rotated: Option<FilePosition>,
    /// When it was saved, ms since the Unix epoch (the app's clock).
    pub saved_ms: i64,
}

/// One file, told apart from any other by its device and inode and, because inodes are
/// reused, by a fingerprint of its first bytes; and the offset just past the last line that
/// became an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePosition {
    pub dev: u64,
    pub ino: u64,
    /// SHA-256 of the file's first `head_len` bytes.
    pub head_sha256: [u8; 32],
    /// How many bytes the fingerprint covers: the file's length when it was shorter than
    /// the fingerprint's full length (1 KiB), which grows with the file.
    pub head_len: u32,
    /// Bytes from the start of the file.
    pub offset: u64,
}
