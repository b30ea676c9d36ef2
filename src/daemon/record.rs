//! `DATA_DIR/daemon.json`: which daemon runs on this data directory and with which config, so
//! `vigil status` (another process, maybe another working directory) names the config the
//! daemon really uses instead of the one the CLI would pick. Written atomically at start and
//! again at a clean stop; a daemon killed with `-9` leaves a record whose process is gone,
//! which [`DaemonRecord::running`] tells apart (by pid and the process's start time, so a
//! reused pid is not mistaken for it).

use crate::clock::ms_as_rfc3339;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file's name in the data directory.
pub const FILE: &str = "daemon.json";

/// One daemon's start (and stop) on a data directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonRecord {
    /// The config it runs: an absolute path, or "(built-in default)".
    pub config: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub process_start: Option<u64>,
    /// When it started (ms since the epoch; RFC 3339 in JSON).
    #[serde(
        serialize_with = "ms_as_rfc3339::ser",
        deserialize_with = "ms_as_rfc3339::de"
    )]
    pub started_at: i64,
    /// Where its API listens, once it does.
    pub api: Option<String>,
    /// Set at a clean stop (RFC 3339).
    pub stopped_at: Option<String>,
    /// vigil's version.
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot write {path}: {source}; check the data directory is writable")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a daemon record ({source}); delete it, the daemon writes it again at start"
    )]
    Invalid {
        path: String,
        source: serde_json::Error,
    },
}

impl DaemonRecord {
    /// The record of this process starting now with config `origin` (a path is made absolute).
    pub fn starting(origin: &str, now_ms: i64) -> Self {
        let pid = std::process::id();
        let config = std::fs::canonicalize(origin)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| origin.to_string());
        Self {
            config,
            pid,
            process_start: process_start(pid),
            started_at: now_ms,
            api: None,
            stopped_at: None,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Whether the daemon it describes still runs: not stopped cleanly, and its pid is a live
    /// process that started when the recorded one did.
    pub fn running(&self) -> bool {
        self.stopped_at.is_none()
            && std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
            && process_start(self.pid) == self.process_start
    }
}

/// `DATA_DIR/daemon.json`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Writes the record atomically, 0600.
pub fn write(data_dir: &Path, record: &DaemonRecord) -> Result<(), RecordError> {
    let p = path(data_dir);
    let bytes = serde_json::to_vec_pretty(record).expect("JSON");
    crate::private_fs::write_atomic(&p, &bytes).map_err(|source| RecordError::Write {
        path: p.display().to_string(),
        source,
    })
}

/// The record, or None when no daemon ever started on this data directory.
pub fn read(data_dir: &Path) -> Result<Option<DaemonRecord>, RecordError> {
    let p = path(data_dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(RecordError::Read {
                path: p.display().to_string(),
                source,
            })
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| RecordError::Invalid {
            path: p.display().to_string(),
            source,
        })
}

/// Field 22 of `/proc/PID/stat` (after the parenthesized command, which may hold spaces).
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    // Fields after the command start at 3 (state); starttime is field 22.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}
