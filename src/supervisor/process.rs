//! A unit's processes: spawned in a session (and process group) of their own, found again
//! through `/proc` (the session, the parent chain, and an environment marker every descendant
//! inherits), and stopped together: the unit's signal to all of them, then SIGKILL after the
//! stop timeout. vigil is a child subreaper, so descendants that double-fork re-parent to it
//! rather than to init, and it reaps them.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::process::CommandExt;
use std::time::Duration;

/// Environment variable every process of a unit carries: `NAME:TOKEN`, unique per start, so a
/// descendant that left the unit's session (`setsid`) and whose parent died is still found.
pub const MARKER_VAR: &str = "VIGIL_UNIT_ID";

/// One line of `/proc/PID/stat`, the fields vigil needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// `R`, `S`, `Z`, ...
    pub state: char,
    /// Clock ticks after boot: with the pid, the identity of a process across pid reuse.
    pub start_time: u64,
}

impl ProcInfo {
    pub fn read(pid: i32) -> Option<ProcInfo> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Self::parse(pid, &text)
    }

    fn parse(pid: i32, text: &str) -> Option<ProcInfo> {
        // The command name may hold spaces and parentheses: the fields start after the last ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(ProcInfo {
            pid,
            state: f.first()?.chars().next()?,
            ppid: f.get(1)?.parse().ok()?,
            pgrp: f.get(2)?.parse().ok()?,
            session: f.get(3)?.parse().ok()?,
            start_time: f.get(19)?.parse().ok()?,
        })
    }

    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Every process now in `/proc`.
pub fn all_processes() -> Vec<ProcInfo> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(ProcInfo::read)
        .collect()
}

/// The start time of `pid`, if it runs.
pub fn start_time(pid: i32) -> Option<u64> {
    ProcInfo::read(pid)
        .filter(|p| !p.is_zombie())
        .map(|p| p.start_time)
}

fn has_marker(pid: i32, marker: &str) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let want = format!("{MARKER_VAR}={marker}");
    env.split(|b| *b == 0).any(|v| v == want.as_bytes())
}

/// The processes of a unit: its leader, the leader's session and group, anything carrying the
/// unit's marker, whatever is in its cgroup (when it has one), and every descendant of those.
/// Zombies included (they still need reaping).
pub fn unit_processes(
    leader: Option<i32>,
    marker: &str,
    cgroup: Option<&std::path::Path>,
) -> Vec<ProcInfo> {
    let all = all_processes();
    let me = std::process::id() as i32;
    let mut members: BTreeSet<i32> = BTreeSet::new();
    if let Some(cg) = cgroup {
        members.extend(super::cgroup::members(cg).into_iter().filter(|p| *p != me));
    }
    for p in &all {
        if p.pid == me {
            continue;
        }
        let in_session = leader.is_some_and(|l| p.pid == l || p.session == l || p.pgrp == l);
        // Only an orphan can be of the unit without being in its session or below a process
        // that is, and orphans re-parent to vigil (the subreaper) or to init: reading the
        // environment of those alone keeps a scan (on every restart) cheap.
        let orphan = p.ppid == me || p.ppid == 1;
        if in_session || (orphan && has_marker(p.pid, marker)) {
            members.insert(p.pid);
        }
    }
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in &all {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut todo: Vec<i32> = members.iter().copied().collect();
    while let Some(pid) = todo.pop() {
        for c in children.get(&pid).into_iter().flatten() {
            if *c != me && members.insert(*c) {
                todo.push(*c);
            }
        }
    }
    all.into_iter()
        .filter(|p| members.contains(&p.pid))
        .collect()
}

/// Makes this process a child subreaper: orphaned descendants of its units re-parent to it,
/// so they stay findable and it can reap them.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integer arguments.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A tokio command for a unit: its own session (hence its own process group), the marker in
/// its environment, stdin from /dev/null, stdout and stderr piped to the supervisor.
pub fn command(
    argv: &[String],
    env: &BTreeMap<String, String>,
    cwd: Option<&std::path::Path>,
    marker: &str,
    cgroup: Option<&std::path::Path>,
) -> tokio::process::Command {
    let procs = cgroup.and_then(super::cgroup::procs_path);
    let mut std_cmd = std::process::Command::new(&argv[0]);
    std_cmd.args(&argv[1..]);
    std_cmd.envs(env);
    std_cmd.env(MARKER_VAR, marker);
    if let Some(dir) = cwd {
        std_cmd.current_dir(dir);
    }
    std_cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: setsid is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        std_cmd.pre_exec(move || {
            if let Some(p) = &procs {
                super::cgroup::enter(p);
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut cmd = tokio::process::Command::from(std_cmd);
    cmd.kill_on_drop(false);
    cmd
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill with a positive pid (or a negative group id) and a signal number.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// What a stop did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stopped {
    /// Processes that got the stop signal.
    pub signalled: usize,
    /// Processes still alive after the timeout, killed with SIGKILL.
    pub killed: usize,
}

/// Stops every process of a unit (those in its `cgroup` too): `sig` to the leader's group and
/// to each process, up to `timeout` for them to go, then SIGKILL (and `cgroup.kill`) for what
/// is left, and reaps the zombies that are vigil's children (except `leader`, whose `Child` reaps it). Blocking: call from
/// `spawn_blocking`. Waiting polls `/proc` every 10 ms; that is a stop, not crash detection.
pub fn stop_unit(
    leader: Option<i32>,
    marker: &str,
    sig: i32,
    timeout: Duration,
    cgroup: Option<&std::path::Path>,
) -> Stopped {
    let alive = |ps: &[ProcInfo]| ps.iter().filter(|p| !p.is_zombie()).count();
    let mut seen: BTreeSet<i32> = BTreeSet::new();
    let procs = unit_processes(leader, marker, cgroup);
    let mut out = Stopped {
        signalled: alive(&procs),
        killed: 0,
    };
    if out.signalled == 0 {
        // The usual case after a crash: nothing of the instance is left. One scan, no wait.
        reap(procs.iter().map(|p| p.pid).filter(|p| Some(*p) != leader));
        return out;
    }
    if let Some(l) = leader {
        signal(-l, sig);
    }
    for p in &procs {
        seen.insert(p.pid);
        signal(p.pid, sig);
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let procs = unit_processes(leader, marker, cgroup);
        seen.extend(procs.iter().map(|p| p.pid));
        if alive(&procs) == 0 {
            break;
        }
        if std::time::Instant::now() >= deadline {
            // Kill until nothing is left: a process may fork while the others die.
            for _ in 0..100 {
                // Everything in the unit's cgroup at once, forks in flight included.
                if let Some(cg) = cgroup {
                    super::cgroup::kill(cg);
                }
                let procs = unit_processes(leader, marker, cgroup);
                seen.extend(procs.iter().map(|p| p.pid));
                let left: Vec<_> = procs.iter().filter(|p| !p.is_zombie()).collect();
                if left.is_empty() {
                    break;
                }
                out.killed = out.killed.max(left.len());
                if let Some(l) = leader {
                    signal(-l, libc::SIGKILL);
                }
                for p in left {
                    signal(p.pid, libc::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // A zombie whose parent died with it re-parents to vigil (the subreaper) a moment later:
    // reap until none of the unit's processes is a zombie left to vigil, briefly.
    let seen: Vec<i32> = seen.into_iter().filter(|p| Some(*p) != leader).collect();
    for _ in 0..50 {
        reap(seen.iter().copied());
        let me = std::process::id() as i32;
        let waiting = seen.iter().any(|pid| {
            ProcInfo::read(*pid).is_some_and(|p| {
                p.is_zombie()
                    && (p.ppid == me || ProcInfo::read(p.ppid).is_none_or(|pp| pp.is_zombie()))
            })
        });
        if !waiting {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    out
}

/// Reaps those of `pids` that are vigil's own zombie children. Never `waitpid(-1)`: other
/// children (playbook commands, the units' leaders) belong to tokio, which reaps them itself.
pub fn reap(pids: impl IntoIterator<Item = i32>) {
    let me = std::process::id() as i32;
    for pid in pids {
        if ProcInfo::read(pid).is_some_and(|p| p.ppid == me && p.is_zombie()) {
            let mut status = 0;
            // SAFETY: waitpid on one pid that is our child, without blocking.
            unsafe {
                libc::waitpid(pid, &mut status, libc::WNOHANG);
            }
        }
    }
}

/// Waits until `pid` (not necessarily vigil's child: an adopted unit) exits, through a pidfd:
/// woken by the kernel, never polling.
pub async fn wait_exit(pid: i32) -> io::Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned to us and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the AsyncFd owns the descriptor, so it stays open for as long as it is registered.
    let afd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)?
    };
    let _ready = afd.readable().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_names_parses() {
        let line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        let p = ProcInfo::parse(4242, line).unwrap();
        assert_eq!((p.ppid, p.pgrp, p.session, p.state), (1, 4242, 4242, 'S'));
        assert_eq!(p.start_time, 987654);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id() as i32;
        let p = ProcInfo::read(me).unwrap();
        assert_eq!(p.pid, me);
        assert!(start_time(me).is_some());
    }
}
