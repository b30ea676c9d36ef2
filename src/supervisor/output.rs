//! A unit's output: every line goes to a rotating log file `DATA_DIR/units/NAME/unit.log`
//! (`unit.log.1` .. `unit.log.N` after rotation) and to a ring buffer of the last lines, which
//! the diagnostics bundle reads.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Lines kept in memory per unit.
pub const RING_LINES: usize = 200;

/// The last lines a unit wrote, shared between its output readers and the supervisor.
#[derive(Debug, Clone, Default)]
pub struct Ring(Arc<Mutex<Lines>>);

#[derive(Debug, Default)]
struct Lines {
    last: VecDeque<String>,
    /// Lines pushed ever: where a run's output starts.
    pushed: u64,
}

impl Ring {
    pub fn push(&self, line: String) {
        let mut q = self.0.lock().unwrap();
        if q.last.len() == RING_LINES {
            q.last.pop_front();
        }
        q.last.push_back(line);
        q.pushed += 1;
    }

    /// The last `n` lines, oldest first.
    pub fn last(&self, n: usize) -> Vec<String> {
        let q = self.0.lock().unwrap();
        q.last
            .iter()
            .skip(q.last.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// Lines pushed so far (a mark for [`Ring::since`]).
    pub fn mark(&self) -> u64 {
        self.0.lock().unwrap().pushed
    }

    /// The lines pushed after `mark` (those still kept), oldest first.
    pub fn since(&self, mark: u64) -> Vec<String> {
        let n = self.mark().saturating_sub(mark);
        self.last(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// An append-only log file that rotates at `max_size` bytes, keeping `keep` old files.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    max_size: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
}

impl RotatingLog {
    pub fn open(path: PathBuf, max_size: u64, keep: u32) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            max_size,
            keep,
            file: Some(file),
            size,
        })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Appends one line (a newline is added).
    pub fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 + 1 > self.max_size {
            self.rotate()?;
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(line.as_bytes())?;
            f.write_all(b"\n")?;
            self.size += line.len() as u64 + 1;
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let name = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        if self.keep == 0 {
            std::fs::remove_file(&self.path).ok();
        } else {
            std::fs::remove_file(name(self.keep)).ok();
            for i in (1..self.keep).rev() {
                std::fs::rename(name(i), name(i + 1)).ok();
            }
            std::fs::rename(&self.path, name(1))?;
        }
        self.file = Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?,
        );
        self.size = 0;
        Ok(())
    }
}

/// The unit's end of its output: a FIFO in its directory, opened read-write. Read-write
/// because then the FIFO always has a reader: when the daemon dies, the unit's writes do not
/// fail with SIGPIPE (they wait once the pipe's buffer is full), and the next daemon opens the
/// same FIFO and reads on, so a restart of vigil neither kills nor mutes production.
pub fn open_fifo_writer(path: &std::path::Path) -> std::io::Result<File> {
    make_fifo(path)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    // Room for a burst of output while no daemon reads (best effort: 1 MiB).
    // SAFETY: fcntl on a descriptor we own, with an integer argument.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::fcntl(f.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
    Ok(f)
}

fn make_fifo(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::FileTypeExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.file_type().is_fifo() {
            return Ok(());
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path has a NUL byte"))?;
    // SAFETY: `c` is a valid C string.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    Ok(())
}

/// Where a unit's output lines go.
pub struct Sink {
    pub unit: String,
    pub ring: Ring,
    pub log: Option<RotatingLog>,
    pub matches: crate::sources::lines::Matches,
    pub events: tokio::sync::mpsc::Sender<crate::event::Event>,
    pub clock: crate::clock::SharedClock,
}

impl Sink {
    async fn line(&mut self, bytes: &[u8]) {
        let (text, _cut) =
            crate::sources::lines::decode_line(bytes, crate::sources::lines::DEFAULT_MAX_LINE);
        let text = text.into_owned();
        if let Some(log) = self.log.as_mut() {
            if let Err(e) = log.write_line(&text) {
                tracing::warn!(unit = %self.unit, "cannot write {}: {e}; output goes to memory only", log.path().display());
                self.log = None;
            }
        }
        // Without `[[units.NAME.match]]` no line is an event: output is not a flood of `line`s.
        if !self.matches.0.is_empty() {
            if let Some((kind, mut data)) = self.matches.classify(&text) {
                data.insert("unit".into(), self.unit.clone().into());
                let ev = crate::event::Event::new(
                    format!("units.{}", self.unit),
                    kind,
                    self.clock.now_ms(),
                    data,
                );
                let _ = self.events.send(ev).await;
            }
        }
        self.ring.push(text);
    }
}

/// Reads the FIFO at `path` until `flush` closes; each request on `flush` drains what is in
/// the pipe now and is answered once those lines are in the ring (the bundle needs the real
/// last lines of a process that just exited).
pub async fn read_fifo(
    path: PathBuf,
    mut sink: Sink,
    mut flush: tokio::sync::mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
) {
    if let Err(e) = make_fifo(&path) {
        tracing::error!(unit = %sink.unit, "cannot make {}: {e}; the unit's output is lost", path.display());
        return;
    }
    let rx = match tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&path)
    {
        Ok(rx) => rx,
        Err(e) => {
            tracing::error!(unit = %sink.unit, "cannot open {}: {e}; the unit's output is lost", path.display());
            return;
        }
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let reply = tokio::select! {
            r = rx.readable() => {
                if r.is_err() { return; }
                None
            }
            req = flush.recv() => match req {
                Some(reply) => Some(reply),
                None => return,
            },
        };
        loop {
            match rx.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
        let mut start = 0;
        while let Some(i) = memchr::memchr(b'\n', &pending[start..]) {
            let end = start + i;
            sink.line(&pending[start..end]).await;
            start = end + 1;
        }
        pending.drain(..start);
        if let Some(reply) = reply {
            // A process that exited cannot finish its last line: keep what it wrote.
            if !pending.is_empty() {
                let rest = std::mem::take(&mut pending);
                sink.line(&rest).await;
            }
            let _ = reply.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_last_lines() {
        let r = Ring::default();
        for i in 0..(RING_LINES + 5) {
            r.push(i.to_string());
        }
        let last = r.last(3);
        let n = RING_LINES + 5;
        assert_eq!(
            last,
            vec![
                (n - 3).to_string(),
                (n - 2).to_string(),
                (n - 1).to_string()
            ]
        );
    }

    #[test]
    fn log_rotates_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unit.log");
        let mut log = RotatingLog::open(path.clone(), 20, 2).unwrap();
        for i in 0..10 {
            log.write_line(&format!("line number {i}")).unwrap();
        }
        assert!(path.exists());
        assert!(dir.path().join("unit.log.1").exists());
        assert!(dir.path().join("unit.log.2").exists());
        assert!(!dir.path().join("unit.log.3").exists());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line number 9\n");
    }
}
