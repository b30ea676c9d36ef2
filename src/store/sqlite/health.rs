//! Whether the store can still keep what it is given: its file is still the one opened, it is
//! still a SQLite database, and it can be written. A store deleted, replaced or corrupted under
//! the daemon otherwise answers writes with errors, or takes them into a file nobody will open
//! again, while `/healthz` says ok.

use super::SqliteStore;

/// The first 16 bytes of every SQLite database file (sqlite.org/fileformat.html §1.3).
const MAGIC: &[u8; 16] = b"SQLite format 3\0";

impl SqliteStore {
    /// `Ok` when the store is healthy, else what is wrong and what to do. Cheap (a file-control
    /// call, a 16-byte read and an empty write transaction): `/healthz` calls it. Each change
    /// of the answer is logged once.
    pub fn health(&self) -> Result<(), String> {
        let now = self.check_health();
        let mut last = self.last_health.lock().unwrap();
        if now.as_ref().err() != last.as_ref() {
            match &now {
                Err(e) => tracing::error!("store unhealthy: {e}"),
                Ok(()) => tracing::info!("store healthy again"),
            }
            *last = now.clone().err();
        }
        now
    }

    fn check_health(&self) -> Result<(), String> {
        let path = self.path.display();
        let conn = self.conn.lock().unwrap();
        // SQLite's own test: the file it has open was unlinked or renamed.
        let mut moved: std::os::raw::c_int = 0;
        // SAFETY: the handle is valid while `conn` is locked; SQLITE_FCNTL_HAS_MOVED writes one
        // int through the pointer, which outlives the call.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_file_control(
                conn.handle(),
                c"main".as_ptr(),
                rusqlite::ffi::SQLITE_FCNTL_HAS_MOVED,
                (&mut moved as *mut std::os::raw::c_int).cast(),
            )
        };
        if rc == rusqlite::ffi::SQLITE_OK && moved != 0 {
            return Err(format!(
                "the store file {path} was deleted or replaced while vigil ran: what is stored now is lost at the next start; restart vigil (it recreates the store) or put the file back"
            ));
        }
        let mut head = [0u8; 16];
        let read = read_head(&conn, &mut head);
        match read {
            Ok(()) if &head == MAGIC => {}
            Ok(()) => {
                return Err(format!(
                    "the store file {path} is not a SQLite database any more (corrupt): stop vigil, restore it from a backup or move it away, and start again"
                ))
            }
            Err(e) => return Err(format!("cannot read the store file {path}: {e}")),
        }
        conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            .map_err(|e| format!("the store {path} cannot be written ({e}): check the disk (full? read-only?) and the file's permissions"))
    }
}

/// Reads the first bytes of the main database file through SQLite's own open file. Opening
/// the file again by path would not do: closing that second descriptor drops every POSIX
/// lock this process holds on the file (fcntl locks are per process and file), SQLite's
/// included; another process (the CLI) then takes itself for the last connection, checkpoints
/// and deletes the WAL this daemon still writes to, and stops seeing what it stores.
fn read_head(conn: &rusqlite::Connection, head: &mut [u8]) -> std::io::Result<()> {
    use rusqlite::ffi;
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: the handle is valid while `conn` is borrowed; SQLITE_FCNTL_FILE_POINTER writes
    // the main database's sqlite3_file pointer, owned by SQLite and open while `conn` is.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&mut file as *mut *mut ffi::sqlite3_file).cast(),
        )
    };
    // SAFETY: `file` was checked non-null; pMethods is null for a file SQLite has not opened.
    let read = unsafe {
        (rc == ffi::SQLITE_OK && !file.is_null() && !(*file).pMethods.is_null())
            .then(|| (*(*file).pMethods).xRead)
            .flatten()
    };
    let Some(read) = read else {
        return Err(std::io::Error::other("SQLite gave no handle to the file"));
    };
    // SAFETY: `head` is valid for `head.len()` bytes; xRead fills at most that many.
    let rc = unsafe { read(file, head.as_mut_ptr().cast(), head.len() as i32, 0) };
    match rc {
        ffi::SQLITE_OK => Ok(()),
        ffi::SQLITE_IOERR_SHORT_READ => {
            Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
        }
        rc => Err(std::io::Error::other(format!("SQLite I/O error {rc}"))),
    }
}
