//! Steps a dead vigil left running. Every command a step runs carries `VIGIL_STEP=HOLDER/RUN`
//! in its environment (inherited by its children); recovery finds those processes in /proc
//! and kills them before it restores production, so a restore never races a half-done step.

/// The environment variable that marks a step's processes.
pub const MARK: &str = "VIGIL_STEP";

pub fn token(holder: &str, run: i64) -> String {
    format!("{holder}/{run}")
}

/// Kills every process on this host whose environment carries `VIGIL_STEP=token`, with its
/// process group; returns their pids (blocking: reads /proc).
pub fn kill_marked(token: &str) -> Vec<i32> {
    let needle = format!("{MARK}={token}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // Unreadable (another user's process, or gone): not one of ours.
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !environ.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            continue;
        }
        // SAFETY: kill(2) has no memory effects; the target carries this run's own mark, and
        // its group is the one the step was started in.
        unsafe {
            let pgid = libc::getpgid(pid);
            if pgid > 1 {
                libc::kill(-pgid, libc::SIGKILL);
            }
            libc::kill(pid, libc::SIGKILL);
        }
        killed.push(pid);
    }
    killed
}
