//! The candidate's process: started in a process group of its own, marked in its environment
//! (`VIGIL_STEP=canary:NAME/RUN`, the mark `orchestrator::orphans` finds), its output appended
//! to `DATA_DIR/canaries/NAME/candidate.log`. Stopping it signals the whole group (SIGTERM, then
//! SIGKILL after the stop timeout); dropping it kills the group, so a cancelled run leaves no
//! candidate behind, and one a dead daemon left is found by its mark at the next start.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// The mark a canary run's candidate carries (`orphans::token`).
pub fn mark(canary: &str, run: i64) -> String {
    crate::orchestrator::orphans::token(&format!("canary:{canary}"), run)
}

/// A running candidate.
pub struct Candidate {
    child: tokio::process::Child,
    pgid: Option<i32>,
    /// How it ended, once seen.
    exited: Option<String>,
}

impl Candidate {
    /// Starts `argv` with `env` added to vigil's environment, in `cwd`.
    pub fn start(
        argv: &[String],
        env: &BTreeMap<String, String>,
        cwd: Option<&Path>,
        log: &Path,
        mark: &str,
    ) -> Result<Candidate, String> {
        if let Some(dir) = log.parent() {
            crate::private_fs::create_dir(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let out = crate::private_fs::append(log)
            .map_err(|e| format!("cannot open the candidate's log {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot open the candidate's log: {e}"))?;
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(env)
            .env(crate::orchestrator::orphans::MARK, mark)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own group: a stop reaches the helpers it starts.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let child = cmd
            .spawn()
            .map_err(|e| crate::exec::ExecError::spawn(&argv[0], e).to_string())?;
        let pgid = child.id().map(|p| p as i32);
        Ok(Candidate {
            child,
            pgid,
            exited: None,
        })
    }

    pub fn pid(&self) -> Option<i32> {
        self.pgid
    }

    /// Resolves when the candidate exits, with how, in words (`exit status 1`).
    pub async fn exited(&mut self) -> String {
        if let Some(e) = &self.exited {
            return e.clone();
        }
        let how = match self.child.wait().await {
            Ok(s) => describe(s),
            Err(e) => format!("lost track of it: {e}"),
        };
        self.exited = Some(how.clone());
        how
    }

    /// Stops the whole group: SIGTERM, then SIGKILL once `timeout` has passed. Returns how it
    /// ended.
    pub async fn stop(mut self, timeout: Duration) -> String {
        if let Some(e) = self.exited.clone() {
            self.kill_group(libc::SIGKILL);
            return e;
        }
        self.kill_group(libc::SIGTERM);
        let how = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(s)) => describe(s),
            Ok(Err(e)) => format!("lost track of it: {e}"),
            Err(_) => {
                self.kill_group(libc::SIGKILL);
                let _ = self.child.wait().await;
                format!("killed after not stopping within {timeout:?}")
            }
        };
        // Helpers left in its group go with it.
        self.kill_group(libc::SIGKILL);
        self.pgid = None;
        how
    }

    fn kill_group(&self, sig: i32) {
        if let Some(pgid) = self.pgid {
            // SAFETY: kill(2) with a negative pid signals the candidate's own group, which the
            // kernel keeps reserved while any member lives.
            unsafe {
                libc::kill(-pgid, sig);
            }
        }
    }
}

impl Drop for Candidate {
    fn drop(&mut self) {
        self.kill_group(libc::SIGKILL);
    }
}

fn describe(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (_, Some(sig)) => format!("killed by signal {sig}"),
        _ => "ended without status".into(),
    }
}
