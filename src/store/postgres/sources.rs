//! Source states and file source checkpoints in PostgreSQL.

use super::PgStore;
use crate::sources::SourceState;
use crate::store::{Checkpoint, FilePosition, SourceStore, StoreError};
use tokio_postgres::Row;

impl SourceStore for PgStore {
    fn put_source_states(&self, states: &[SourceState]) -> Result<(), StoreError> {
        self.write(|c| {
            // This host's rows only.
            c.exec(
                "DELETE FROM source_states WHERE host IN ($1, '')",
                &[&self.host],
            )?;
            for s in states {
                c.exec(
                    "INSERT INTO source_states (host, source, kind, up, reason, since_ms) VALUES ($1, $2, $3, $4, $5, $6)",
                    &[&self.host, &s.source, &s.kind, &s.up, &s.reason, &s.since_ms],
                )?;
            }
            Ok(())
        })
    }

    fn source_states(&self) -> Result<Vec<SourceState>, StoreError> {
        let rows = self.with_conn(|c| {
            c.rows(
                "SELECT source, kind, up, reason, since_ms FROM source_states
                 WHERE host IN ($1, '') ORDER BY source",
                &[&self.host],
            )
        })?;
        Ok(rows
            .iter()
            .map(|r| SourceState {
                source: r.get(0),
                kind: r.get(1),
                up: r.get(2),
                reason: r.get(3),
                since_ms: r.get(4),
            })
            .collect())
    }

    fn checkpoint(&self, source: &str, path: &str) -> Result<Option<Checkpoint>, StoreError> {
        let row = self.with_conn(|c| {
            c.opt(
                "SELECT dev, ino, head_sha256, head_len, \"offset\", \
                        rotated_dev, rotated_ino, rotated_head_sha256, rotated_head_len, rotated_offset, \
                        saved_ms \
                 FROM source_checkpoints WHERE source = $1 AND path = $2",
                &[&source, &path],
            )
        })?;
        let Some(r) = row else {
            return Ok(None);
        };
        let file = position(&r, 0).ok_or_else(corrupt)?;
        let rotated = match r.get::<_, Option<i64>>(5) {
            Some(_) => Some(position(&r, 5).ok_or_else(corrupt)?),
            None => None,
        };
        Ok(Some(Checkpoint {
            file,
            rotated,
            saved_ms: r.get(10),
        }))
    }

    fn save_checkpoint(&self, source: &str, path: &str, c: &Checkpoint) -> Result<(), StoreError> {
        let r = c.rotated.as_ref();
        // Device and inode numbers are u64; BIGINT keeps the same bits signed.
        let (dev, ino, len, off) = (
            c.file.dev as i64,
            c.file.ino as i64,
            c.file.head_len as i64,
            c.file.offset as i64,
        );
        let sha = &c.file.head_sha256[..];
        let (rdev, rino, rsha, rlen, roff) = (
            r.map(|r| r.dev as i64),
            r.map(|r| r.ino as i64),
            r.map(|r| r.head_sha256.to_vec()),
            r.map(|r| r.head_len as i64),
            r.map(|r| r.offset as i64),
        );
        self.with_conn(|conn| {
            conn.exec(
                "INSERT INTO source_checkpoints \
                 (source, path, dev, ino, head_sha256, head_len, \"offset\", \
                  rotated_dev, rotated_ino, rotated_head_sha256, rotated_head_len, rotated_offset, saved_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (source, path) DO UPDATE SET dev = $3, ino = $4, head_sha256 = $5, \
                   head_len = $6, \"offset\" = $7, rotated_dev = $8, rotated_ino = $9, \
                   rotated_head_sha256 = $10, rotated_head_len = $11, rotated_offset = $12, saved_ms = $13",
                &[
                    &source, &path, &dev, &ino, &sha, &len, &off, &rdev, &rino, &rsha, &rlen,
                    &roff, &c.saved_ms,
                ],
            )
            .map(drop)
        })
    }
}

/// The position in columns `at..at + 5` (dev, ino, fingerprint, its length, offset).
fn position(r: &Row, at: usize) -> Option<FilePosition> {
    let sha: Vec<u8> = r.get(at + 2);
    Some(FilePosition {
        dev: r.get::<_, i64>(at) as u64,
        ino: r.get::<_, i64>(at + 1) as u64,
        head_sha256: sha.try_into().ok()?,
        head_len: u32::try_from(r.get::<_, i64>(at + 3)).ok()?,
        offset: r.get::<_, i64>(at + 4) as u64,
    })
}

fn corrupt() -> StoreError {
    StoreError::Corrupt("a file source checkpoint's fingerprint is not 32 bytes".into())
}
