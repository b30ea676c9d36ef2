//! A minimal command runner for playbook steps, with the shape `vigil::exec` is getting
//! (argv, timeout, own process group so a timeout kills the children too, output tail).
//! The lead unifies the two once `exec` lands on main.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Bytes of combined output kept for the audit trail.
const TAIL: usize = 2048;

#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Exited(i32),
    Signaled(i32),
    TimedOut,
    SpawnFailed(String),
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    /// The last bytes of stdout and stderr, lossily decoded.
    pub tail: String,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.status == Status::Exited(0)
    }

    /// In words, for audit details and errors.
    pub fn describe(&self) -> String {
        match &self.status {
            Status::Exited(c) => format!("exited with status {c}"),
            Status::Signaled(s) => format!("killed by signal {s}"),
            Status::TimedOut => format!(
                "timed out after {:.1}s and was killed",
                self.elapsed.as_secs_f64()
            ),
            Status::SpawnFailed(e) => format!("could not start: {e}"),
        }
    }
}

/// The start time of process `pid` in clock ticks since boot (field 22 of /proc/PID/stat): with
/// the pid it names one process, even after the pid is reused.
pub fn start_ticks(pid: i32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Kills the process group `pgid` if its leader is still the process that started at
/// `started`; true when it did.
pub fn kill_group_if_same(pgid: i32, started: i64) -> bool {
    if pgid <= 1 || start_ticks(pgid) != Some(started) {
        return false;
    }
    // SAFETY: killpg on a group whose leader we identified by pid and start time.
    unsafe { libc::killpg(pgid, libc::SIGKILL) == 0 }
}

/// Runs `argv`; `on_spawn` gets the child's pid (its process group id) once it has started.
pub async fn run(
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
    on_spawn: impl FnOnce(i32),
) -> Outcome {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                status: Status::SpawnFailed(format!("{}: {e}", argv[0])),
                tail: String::new(),
                elapsed: started.elapsed(),
            }
        }
    };
    let pid = child.id().map(|p| p as i32);
    if let Some(pid) = pid {
        on_spawn(pid);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(pump(out, tx.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(pump(err, tx.clone())));
    }
    drop(tx);
    let collect = tokio::spawn(async move {
        let mut tail = Vec::new();
        while let Some(chunk) = rx.recv().await {
            tail.extend_from_slice(&chunk);
            if tail.len() > TAIL {
                tail.drain(..tail.len() - TAIL);
            }
        }
        tail
    });
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(s)) => match s.code() {
            Some(c) => Status::Exited(c),
            None => Status::Signaled(s.signal().unwrap_or(0)),
        },
        Ok(Err(e)) => Status::SpawnFailed(e.to_string()),
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: killpg on the group this child leads; no memory is involved.
                unsafe { libc::killpg(pid, libc::SIGKILL) };
            }
            let _ = child.wait().await;
            Status::TimedOut
        }
    };
    // Grandchildren may keep the pipes open: give the readers a moment, not forever.
    let tail = match tokio::time::timeout(Duration::from_millis(500), collect).await {
        Ok(Ok(t)) => t,
        _ => {
            readers.iter().for_each(|r| r.abort());
            Vec::new()
        }
    };
    Outcome {
        status,
        tail: String::from_utf8_lossy(&tail).into_owned(),
        elapsed: started.elapsed(),
    }
}

async fn pump(mut r: impl tokio::io::AsyncRead + Unpin, tx: tokio::sync::mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(buf[..n].to_vec()).await.is_err() {
                    return;
                }
            }
        }
    }
}
