//! The data directory is private: created 0700, and the files vigil keeps there that hold
//! what others should not read (the store, the audit trail with every step's argv and output,
//! the API token, the daemon record) are 0600. Modes are set when a file is created, never by
//! a later `chmod`, so there is no moment when the file is readable by others.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the data directory and of directories vigil makes in it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files vigil keeps in the data directory.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) 0700. An existing directory keeps its mode: an operator
/// who chose another one (a group that reads the audit trail) keeps it.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Opens `path` for appending, creating it 0600.
pub fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Creates `path` empty and 0600 if it does not exist, so a file another library then opens
/// (SQLite's store, whose `-wal` and `-shm` files copy its mode) is private from the start.
/// A file that exists and is readable by others is narrowed to 0600 (stores made by older
/// versions were 0644); failing that (someone else's file) is not an error here.
pub fn ensure_file(path: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    let _ =
                        std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE));
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` atomically (a 0600 temporary file beside it, fsync, rename), so a
/// reader sees the old content or the new, never half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}
