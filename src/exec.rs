//! The one way vigil runs an external command: argv (never a shell string), a timeout, its own
//! process group (so a timeout kills the children too), and the tail of its output captured.
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
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of stdout and of stderr kept: the last ones, where the error usually is.
pub const OUTPUT_TAIL: usize = 64 * 1024;

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
        }
    }

    /// Adds a variable to the inherited environment.
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
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| ExecError::spawn(&program, e))?;
        let mut group = GroupGuard(child.id().map(|p| p as i32));
        let stdout = match self.stdout_head {
            Some(limit) => tokio::spawn(head(child.stdout.take(), limit)),
            None => {
                let pipe = child.stdout.take();
                tokio::spawn(async move { (tail(pipe).await, false) })
            }
        };
        let stderr = tokio::spawn(tail(child.stderr.take()));

        let deadline = tokio::time::Instant::now() + self.timeout;
        let (status, timed_out) = match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(status) => (
                Some(status.map_err(|source| ExecError::Wait {
                    program: program.clone(),
                    source,
                })?),
                false,
            ),
            Err(_) => {
                group.kill();
                let status = child.wait().await.map_err(|source| ExecError::Wait {
                    program: program.clone(),
                    source,
                })?;
                (Some(status), true)
            }
        };
        let duration = started.elapsed();
        // A background child left in the group keeps the pipes open; give it until the
        // deadline, then kill the group so reading the output always ends.
        let wait_out = async {
            let o = stdout.await.unwrap_or_default();
            let e = stderr.await.unwrap_or_default();
            (o, e)
        };
        tokio::pin!(wait_out);
        let ((out, stdout_cut), err) = match tokio::time::timeout_at(deadline, &mut wait_out).await
        {
            Ok(v) => v,
            Err(_) => {
                group.kill();
                wait_out.await
            }
        };
        group.disarm();

        let status = status.expect("status set above");
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

/// Reads a pipe to its end, keeping only its first `limit` bytes; true when there was more.
async fn head<R: AsyncRead + Unpin>(pipe: Option<R>, limit: usize) -> (Vec<u8>, bool) {
    let Some(mut pipe) = pipe else {
        return (Vec::new(), false);
    };
    let mut kept = Vec::new();
    let mut cut = false;
    let mut buf = vec![0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = limit - kept.len();
                kept.extend_from_slice(&buf[..n.min(room)]);
                cut |= n > room;
            }
        }
    }
    (kept, cut)
}

/// Reads a pipe to its end, keeping only the last `OUTPUT_TAIL` bytes.
async fn tail<R: AsyncRead + Unpin>(pipe: Option<R>) -> Vec<u8> {
    let Some(mut pipe) = pipe else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                // Trim in batches so a chatty command costs amortized O(1) per byte.
                if kept.len() > 2 * OUTPUT_TAIL {
                    kept.drain(..kept.len() - OUTPUT_TAIL);
                }
            }
        }
    }
    if kept.len() > OUTPUT_TAIL {
        kept.drain(..kept.len() - OUTPUT_TAIL);
    }
    kept
}
