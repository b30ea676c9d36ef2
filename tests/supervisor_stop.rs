//! Stopping with real processes: nothing of a stopped unit survives, including a `setsid`
//! grandchild and a double-forked one, and none is left a zombie; a `kill -9` of the daemon
//! and a restart adopt the running unit without starting a second copy; with `adopt = false`
//! a restart stops what the last daemon left and starts the unit anew.

mod common;

use common::supervisor::*;
use std::time::Duration;
use vigil::store::UnitStore;
use vigil::supervisor::UnitState;

#[tokio::test]
async fn no_process_of_a_stopped_unit_survives() {
    let dir = tempfile::tempdir().unwrap();
    // The shell and its sleeps ignore SIGTERM, so the SIGKILL after the timeout is needed;
    // one grandchild has its own session, another double-forked and lost its parent.
    let app = app(
        dir.path(),
        r#"
[units.edge]
command = ["/bin/sh", "-c", "trap '' TERM; setsid sh -c 'sleep 1000' & (setsid sleep 1001 &); sleep 1002"]
stop = { signal = "SIGTERM", timeout = "200ms" }
"#,
    );
    let (sup, _rx) = start(&app).await;
    let s = wait(&sup, "edge", "running", |s| s.state == UnitState::Running).await;
    let leader = s.pid.unwrap();
    let marker = app
        .store()
        .unwrap()
        .unit("edge")
        .unwrap()
        .unwrap()
        .marker
        .unwrap();
    let sessions = |pids: &[i32]| -> std::collections::BTreeSet<i32> {
        pids.iter()
            .filter_map(|p| vigil::supervisor::process::ProcInfo::read(*p))
            .map(|p| p.session)
            .collect()
    };
    // sh, setsid sh, sleep 1000, sleep 1001, sleep 1002; the grandchildren in sessions of
    // their own once their setsid has run.
    common::wait_within("five processes of the unit in three sessions", 20, || {
        let pids = marked(&marker);
        pids.len() >= 5 && sessions(&pids).len() >= 3
    })
    .await;
    let pids = marked(&marker);
    assert!(pids.contains(&leader));

    sup.stop("edge").await.unwrap();
    for pid in &pids {
        assert!(
            !present(*pid),
            "pid {pid} survived the stop (or is a zombie)"
        );
    }
    assert!(marked(&marker).is_empty());
    assert_eq!(sup.status("edge").unwrap().state, UnitState::Stopped);
    sup.stop_all().await;
}

/// A `vigil run` child, killed with SIGKILL when dropped (a failing test leaves none behind).
struct Daemon(std::process::Child);

impl Daemon {
    fn start(config: &std::path::Path, data: &std::path::Path, log: &std::path::Path) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Daemon(
            std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
                .arg("--config")
                .arg(config)
                .arg("--data-dir")
                .arg(data)
                .arg("run")
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    fn kill_9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// Kills what is left of a unit when dropped, and removes its cgroup (`.1`) if it has one.
struct Leftovers(String, Option<std::path::PathBuf>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for pid in marked(&self.0) {
            // SAFETY: kill with a pid and a signal number.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        if let Some(cg) = &self.1 {
            // Busy until the killed processes are gone: a few tries.
            for _ in 0..100 {
                if std::fs::remove_dir(cg).is_ok() || !cg.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if let Some(parent) = cg.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

#[tokio::test]
async fn a_kill_9_of_the_daemon_and_a_restart_adopt_the_unit_without_a_second_copy() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("vigil.toml");
    let log = dir.path().join("daemon.log");
    // A name of its own, so processes of other runs of this test are not counted.
    let name = format!("solo{}", std::process::id());
    let cgroup = vigil::supervisor::cgroup::delegated().map(|root| {
        root.join(format!("vigil-{}", vigil::supervisor::cgroup::tag(&data)))
            .join(&name)
    });
    let _leftovers = Leftovers(format!("{name}:"), cgroup);
    std::fs::write(
        &config,
        format!(
            r#"
[api]
enabled = false

[units.{name}]
command = ["/bin/sh", "-c", "while true; do echo tick; sleep 0.05; done"]
"#
        ),
    )
    .unwrap();
    let mut first = Daemon::start(&config, &data, &log);
    common::wait_within("the first daemon's store", 20, || {
        data.join("vigil.db").exists()
    })
    .await;
    let store = vigil::store::SqliteStore::open_dir(&data).unwrap();
    let record = || store.unit(&name).unwrap();
    let mut rec = None;
    let what = || {
        format!(
            "the unit running under the first daemon; log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    };
    common::wait_within_msg(what, 20, || {
        rec = record().filter(|r| r.state == "running" && r.pid.is_some());
        rec.is_some()
    })
    .await;
    let rec = rec.unwrap();
    let pid = rec.pid.unwrap();
    first.kill_9();
    // The unit keeps running, and writing, with no daemon at all: give it time to write a few
    // lines into its FIFO (a unit on a plain pipe would die of SIGPIPE here).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        vigil::supervisor::process::start_time(pid).is_some(),
        "the unit died with the daemon"
    );

    let _second = Daemon::start(&config, &data, &log);
    common::wait_within("the unit adopted by the second daemon", 20, || {
        record().is_some_and(|r| r.state == "adopted")
    })
    .await;
    let now = record().unwrap();
    assert_eq!(now.pid, Some(pid));
    assert_eq!(now.start_ticks, rec.start_ticks);
    let leaders: Vec<i32> = marked(&format!("{name}:"))
        .iter()
        .filter_map(|p| vigil::supervisor::process::ProcInfo::read(*p))
        .filter(|p| p.pid == p.session)
        .map(|p| p.pid)
        .collect();
    assert_eq!(leaders, vec![pid], "exactly one copy of the unit runs");
    // The adopted unit's output is read again from its FIFO.
    let unit_log = data.join(format!("units/{name}/unit.log"));
    let before = std::fs::metadata(&unit_log).map(|m| m.len()).unwrap_or(0);
    common::wait_within("more output after adoption", 20, || {
        std::fs::metadata(&unit_log).is_ok_and(|m| m.len() > before)
    })
    .await;
}

#[tokio::test]
async fn adopt_false_stops_what_the_last_daemon_left_and_starts_anew() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[units.fresh]
command = ["/bin/sh", "-c", "sh -c 'exec sleep 1000' & exec sleep 1000"]
adopt = false
"#;
    let app1 = app(dir.path(), config);
    let (sup, _rx) = start(&app1).await;
    let first = wait(&sup, "fresh", "running", |s| {
        s.state == vigil::supervisor::UnitState::Running
    })
    .await;
    let old_pid = first.pid.unwrap();
    common::wait_within("the unit's child runs too", 20, || {
        marked("fresh:").len() >= 2
    })
    .await;
    let old: Vec<i32> = marked("fresh:");
    // The daemon goes away and leaves the unit running, as a restart of vigil does.
    sup.detach().await;
    assert!(vigil::supervisor::process::start_time(old_pid).is_some());

    let app2 = app(dir.path(), config);
    let (sup, _rx) = start(&app2).await;
    let s = wait(&sup, "fresh", "running anew", |s| {
        s.state == vigil::supervisor::UnitState::Running
    })
    .await;
    assert_ne!(s.pid, Some(old_pid));
    assert_eq!(s.starts, 1, "started by this daemon, not adopted");
    for pid in old {
        assert!(
            vigil::supervisor::process::start_time(pid).is_none(),
            "{pid} of the old instance still runs"
        );
    }
    sup.stop_all().await;
}

#[tokio::test]
async fn a_process_that_left_the_session_and_cleared_its_environment_goes_with_the_cgroup() {
    let Some(root) = vigil::supervisor::cgroup::delegated() else {
        eprintln!("no writable cgroup v2 hierarchy here: units are found without one");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let app = app(
        dir.path(),
        r#"
[units.hide]
command = ["/bin/sh", "-c", "env -i /usr/bin/setsid /bin/sh -c '/bin/sleep 1000 & echo $! > {dir}/hidden.pid'; exec sleep 1000"]
"#,
    );
    let (sup, _rx) = start(&app).await;
    wait(&sup, "hide", "running", |s| s.state == UnitState::Running).await;
    let pid_file = dir.path().join("hidden.pid");
    let mut hidden = 0;
    common::wait_within("the hidden process's pid", 20, || {
        hidden = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        hidden > 0
    })
    .await;
    // Neither marker nor session nor parent ties it to the unit: only the cgroup does.
    let env = std::fs::read(format!("/proc/{hidden}/environ")).unwrap();
    assert!(!env.windows(13).any(|w| w == b"VIGIL_UNIT_ID"));
    let info = vigil::supervisor::process::ProcInfo::read(hidden).unwrap();
    let leader = sup.status("hide").unwrap().pid.unwrap();
    assert_ne!(info.session, leader);
    let cg = root
        .join(format!(
            "vigil-{}",
            vigil::supervisor::cgroup::tag(&app.data_dir)
        ))
        .join("hide");
    assert!(vigil::supervisor::cgroup::members(&cg).contains(&hidden));
    sup.stop("hide").await.unwrap();
    let gone = vigil::supervisor::process::start_time(hidden).is_none();
    if !gone {
        // SAFETY: kill with a pid and a signal number (cleanup of a failed test).
        unsafe { libc::kill(hidden, libc::SIGKILL) };
    }
    assert!(gone, "{hidden} outlived the stop of its unit");
    sup.stop_all().await;
    let _ = std::fs::remove_dir(&cg);
}
