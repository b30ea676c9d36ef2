//! Source states and file source checkpoints in SQLite.

use super::{Cached, SqliteStore};
use crate::sources::SourceState;
use crate::store::{Checkpoint, FilePosition};
use crate::store::{SourceStore, StoreError};
use rusqlite::{params, OptionalExtension};

impl SourceStore for SqliteStore {
    fn put_source_states(&self, states: &[SourceState]) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction()?;
            // This host's rows only ('' are this host's from before hosts were recorded).
            tx.exec(
                "DELETE FROM source_states WHERE host IN (?1, '')",
                [&self.host],
            )?;
            for s in states {
                tx.exec(
                    "INSERT INTO source_states (host, source, kind, up, reason, since_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![self.host, s.source, s.kind, s.up, s.reason, s.since_ms],
                )?;
            }
            tx.commit()
        })
    }

    fn source_states(&self) -> Result<Vec<SourceState>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT source, kind, up, reason, since_ms FROM source_states
                 WHERE host IN (?1, '') ORDER BY source",
            )?;
            let rows = stmt.query_map([&self.host], |r| {
                Ok(SourceState {
                    source: r.get(0)?,
                    kind: r.get(1)?,
                    up: r.get(2)?,
                    reason: r.get(3)?,
                    since_ms: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    fn checkpoint(&self, source: &str, path: &str) -> Result<Option<Checkpoint>, StoreError> {
        self.with_conn(|conn| {
            conn.row(
                "SELECT dev, ino, head_sha256, head_len, offset, \
                        rotated_dev, rotated_ino, rotated_head_sha256, rotated_head_len, rotated_offset, \
                        saved_ms \
                 FROM source_checkpoints WHERE source = ?1 AND path = ?2",
                params![source, path],
                |r| {
                    let file = position(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)?;
                    let rotated = match r.get::<_, Option<i64>>(5)? {
                        Some(dev) => Some(position(dev, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?)?),
                        None => None,
                    };
                    Ok(Checkpoint {
                        file,
                        rotated,
                        saved_ms: r.get(10)?,
                    })
                },
            )
            .optional()
        })
    }

    fn save_checkpoint(&self, source: &str, path: &str, c: &Checkpoint) -> Result<(), StoreError> {
        let r = c.rotated.as_ref();
        self.with_conn(|conn| {
            conn.exec(
                "INSERT OR REPLACE INTO source_checkpoints \
                 (source, path, dev, ino, head_sha256, head_len, offset, \
                  rotated_dev, rotated_ino, rotated_head_sha256, rotated_head_len, rotated_offset, saved_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    source,
                    path,
                    c.file.dev as i64,
                    c.file.ino as i64,
                    &c.file.head_sha256[..],
                    c.file.head_len,
                    c.file.offset as i64,
                    r.map(|r| r.dev as i64),
                    r.map(|r| r.ino as i64),
                    r.map(|r| r.head_sha256.to_vec()),
                    r.map(|r| r.head_len),
                    r.map(|r| r.offset as i64),
                    c.saved_ms,
                ],
            )
            .map(drop)
        })
    }
}

/// A position from its columns. Device and inode numbers are unsigned 64-bit; SQLite keeps
/// them as the signed integers with the same bits.
fn position(
    dev: i64,
    ino: i64,
    sha: Vec<u8>,
    head_len: u32,
    offset: i64,
) -> rusqlite::Result<FilePosition> {
    let head_sha256 = sha.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            2,
            rusqlite::types::Type::Blob,
            "a checkpoint's fingerprint is not 32 bytes".into(),
        )
    })?;
    Ok(FilePosition {
        dev: dev as u64,
        ino: ino as u64,
        head_sha256,
        head_len,
        offset: offset as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_per_source_and_path_with_full_u64_inodes() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open_dir(dir.path()).unwrap();
        assert_eq!(s.checkpoint("log", "/var/log/a").unwrap(), None);
        let pos = |ino: u64, offset: u64| FilePosition {
            dev: 2049,
            ino,
            head_sha256: [ino as u8; 32],
            head_len: 1024,
            offset,
        };
        let c = Checkpoint {
            file: pos(u64::MAX - 1, 10),
            rotated: Some(pos(7, 99)),
            saved_ms: 5,
        };
        s.save_checkpoint("log", "/var/log/a", &c).unwrap();
        assert_eq!(s.checkpoint("log", "/var/log/a").unwrap(), Some(c.clone()));
        assert_eq!(s.checkpoint("log", "/var/log/b").unwrap(), None);
        assert_eq!(s.checkpoint("other", "/var/log/a").unwrap(), None);
        let later = Checkpoint {
            file: pos(u64::MAX - 1, 20),
            rotated: None,
            saved_ms: 6,
        };
        s.save_checkpoint("log", "/var/log/a", &later).unwrap();
        assert_eq!(s.checkpoint("log", "/var/log/a").unwrap(), Some(later));
    }
}
