//! The one way vigil runs an external command: argv (never a shell string), a timeout, its own
//! process group (so a timeout kills the children too), and a bounded tail of its output.
//!
//! A command ends when its direct child exits: what its output pipes hold then is collected
//! without waiting for them to close, because a background helper that inherited them (`setsid
//! sleep 60 &`) may keep them open for as long as it likes. At the timeout at the latest the
//! whole process group is killed.
//!
//! ```no_run
//! # async fn f() -> Result<(), vigil::exec::ExecError> {
//! use std::time::Duration;
//! let out = vigil::exec::Cmd::new(["systemctl", "restart", "judge"], Duration::from_secs(30))
//!     .env("LC_ALL", "C")
//!     .run()
//!     .await?;
//! if !out.success() {
//!     tracing::warn!("restart failed: {} ({})", out.describe(), out.stderr);
//! }
//! # Ok(()) }
//! ```

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of stdout and of stderr kept: the last ones, where the error usually is.
pub const OUTPUT_TAIL: usize = 64 * 1024;

/// After the direct child exits, how long its pipes may take to deliver what is left in them.
/// A command whose pipes close with it never waits; one with a helper holding them waits this
/// long and no more.
const DRAIN_GRACE: Duration = Duration::from_millis(50);

/// The environment a command gets with [`Cmd::clear_env`]: enough to find programs and
/// behave, none of the daemon's secrets (values given to the config through `${ENV}`).
pub const BASE_ENV: [&str; 7] = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME"];

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("empty command: give at least the program, like [\"systemctl\", \"restart\", \"x\"]")]
    Empty,
    #[error("command `{0}` not found: install it or give its full path")]
    NotFound(String),
    #[error("working directory {0} for `{1}` does not exist: create it or fix `cwd`")]
    NoCwd(PathBuf, String),
    #[error("cannot run `{program}`: {source} (check it is executable and vigil may run it)")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("lost track of `{program}` while waiting for it: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
}

impl ExecError {
    /// The error for a failed spawn of `program`, shared with code that spawns long-running
    /// children itself (the journald source) so "not found" reads the same everywhere.
    pub fn spawn(program: &str, err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::NotFound {
            ExecError::NotFound(program.to_string())
        } else {
            ExecError::Spawn {
                program: program.to_string(),
                source: err,
            }
        }
    }
}

/// A command to run: build with `new`, adjust, then `run`.
#[derive(Debug, Clone)]
pub struct Cmd {
    argv: Vec<String>,
    timeout: Duration,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    /// Keep the first this many bytes of stdout instead of its tail.
    stdout_head: Option<usize>,
    /// Start from [`BASE_ENV`] instead of the daemon's whole environment.
    clear_env: bool,
}

/// How a command ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code, when it exited (not killed by a signal).
    pub code: Option<i32>,
    /// The signal that killed it, if any (SIGKILL after a timeout).
    pub signal: Option<i32>,
    /// True when vigil killed it for running past the timeout.
    pub timed_out: bool,
    pub duration: Duration,
    /// The last `OUTPUT_TAIL` bytes of stdout and stderr, invalid UTF-8 replaced (of stdout
    /// the first bytes instead, with [`Cmd::stdout_head`]).
    pub stdout: String,
    pub stderr: String,
    /// With [`Cmd::stdout_head`]: the command printed more than the limit, and `stdout` is
    /// only its beginning.
    pub stdout_cut: bool,
}

impl Output {
    /// Exited on its own with status 0.
    pub fn success(&self) -> bool {
        !self.timed_out && self.code == Some(0)
    }

    /// How it ended, in words: `exit status 3`, `killed by signal 9`, `timed out after 2s`.
    pub fn describe(&self) -> String {
        if self.timed_out {
            format!("timed out after {:?}", self.duration)
        } else if let Some(c) = self.code {
            format!("exit status {c}")
        } else if let Some(s) = self.signal {
            format!("killed by signal {s}")
        } else {
            "ended without status".into()
        }
    }
}

impl Cmd {
    pub fn new<I, S>(argv: I, timeout: Duration) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            timeout,
            env: Vec::new(),
            cwd: None,
            stdout_head: None,
            clear_env: false,
        }
    }

    /// Starts the command's environment from [`BASE_ENV`] (taken from the daemon's) rather than
    /// the daemon's whole environment; variables added with [`Cmd::env`] come on top.
    pub fn clear_env(mut self) -> Self {
        self.clear_env = true;
        self
    }

    /// Adds a variable to the environment.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Keeps stdout whole up to `limit` bytes instead of its last `OUTPUT_TAIL`, for commands
    /// whose output is data (the command collector's JSON); past the limit the rest is read
    /// and dropped, and `Output::stdout_cut` is set.
    pub fn stdout_head(mut self, limit: usize) -> Self {
        self.stdout_head = Some(limit);
        self
    }

    pub fn program(&self) -> &str {
        self.argv.first().map_or("", String::as_str)
    }

    /// Runs to completion or timeout. A non-zero exit is an `Ok(Output)`: only failing to
    /// start or to wait is an error. Dropping the future kills the whole process group.
    pub async fn run(&self) -> Result<Output, ExecError> {
        let program = self.argv.first().ok_or(ExecError::Empty)?.clone();
        if let Some(dir) = &self.cwd {
            if tokio::fs::metadata(dir).await.is_err() {
                return Err(ExecError::NoCwd(dir.clone(), program));
            }
        }
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own group: a timeout must take the command's children with it.
            .process_group(0)
            .kill_on_drop(true);
        if self.clear_env {
            cmd.env_clear();
            for k in BASE_ENV {
                if let Some(v) = std::env::var_os(k) {
                    cmd.env(k, v);
                }
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| ExecError::spawn(&program, e))?;
        let mut group = GroupGuard(child.id().map(|p| p as i32));
        // Readers append to shared buffers, so what they have is there even when they are
        // stopped before their pipe closes.
        let out_buf = Arc::new(Mutex::new(Kept::new(self.stdout_head)));
        let err_buf = Arc::new(Mutex::new(Kept::new(None)));
        let mut readers = tokio::task::JoinSet::new();
        readers.spawn(read_into(child.stdout.take(), out_buf.clone()));
        readers.spawn(read_into(child.stderr.take(), err_buf.clone()));

        let deadline = tokio::time::Instant::now() + self.timeout;
        let (status, timed_out) = match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(status) => (
                status.map_err(|source| ExecError::Wait {
                    program: program.clone(),
                    source,
                })?,
                false,
            ),
            Err(_) => {
                group.kill();
                let status = child.wait().await.map_err(|source| ExecError::Wait {
                    program: program.clone(),
                    source,
                })?;
                (status, true)
            }
        };
        let duration = started.elapsed();
        // The direct child has exited: take what the pipes hold. A helper that inherited them
        // may keep them open forever; it does not hold the command, or vigil, up.
        let drained = async { while readers.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_GRACE, drained).await.is_err() {
            readers.abort_all();
            while readers.join_next().await.is_some() {}
            // Children it left in its group still hold the pipes: they end with it, as they
            // did at the deadline before. A helper in a session of its own is out of reach.
            group.kill();
        }
        if timed_out {
            group.kill();
        }
        group.disarm();
        let (out, stdout_cut) = out_buf.lock().unwrap().take();
        let (err, _) = err_buf.lock().unwrap().take();

        Ok(Output {
            code: status.code(),
            signal: status.signal(),
            timed_out,
            duration,
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
            stdout_cut,
        })
    }
}

/// Kills the process group when dropped while armed: a cancelled run leaves nothing behind.
struct GroupGuard(Option<i32>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: kill(2) has no memory effects; a negative pid addresses the group, which
            // the kernel keeps reserved while any member lives, so this cannot hit a stranger.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Output kept from one pipe: its first `head` bytes when set (data), else its last
/// [`OUTPUT_TAIL`] (messages). Bounded either way, however much the command prints.
struct Kept {
    bytes: Vec<u8>,
    head: Option<usize>,
    cut: bool,
}

impl Kept {
    fn new(head: Option<usize>) -> Self {
        Self {
            bytes: Vec::new(),
            head,
            cut: false,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        match self.head {
            Some(limit) => {
                let room = limit - self.bytes.len();
                self.bytes
                    .extend_from_slice(&chunk[..chunk.len().min(room)]);
                self.cut |= chunk.len() > room;
            }
            None => {
                self.bytes.extend_from_slice(chunk);
                // Trim in batches so a chatty command costs amortized O(1) per byte.
                if self.bytes.len() > 2 * OUTPUT_TAIL {
                    self.bytes.drain(..self.bytes.len() - OUTPUT_TAIL);
                }
            }
        }
    }

    fn take(&mut self) -> (Vec<u8>, bool) {
        let mut bytes = std::mem::take(&mut self.bytes);
        if self.head.is_none() && bytes.len() > OUTPUT_TAIL {
            bytes.drain(..bytes.len() - OUTPUT_TAIL);
        }
        (bytes, self.cut)
    }
}

/// Reads a pipe until it closes (or the task is aborted), keeping what `kept` keeps.
async fn read_into<R: AsyncRead + Unpin>(pipe: Option<R>, kept: Arc<Mutex<Kept>>) {
    let Some(mut pipe) = pipe else {
        return;
    };
    let mut buf = vec![0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => kept.lock().unwrap().push(&buf[..n]),
        }
    }
}
