//! Stopping with real processes: nothing of a stopped unit survives, including a `setsid`
//! grandchild and a double-forked one, and none is left a zombie; a `kill -9` of the daemon
//! and a restart adopt the running unit without starting a second copy.

mod supervisor_support;

use std::time::Duration;
use supervisor_support::*;
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
    // sh, setsid sh, sleep 1000, sleep 1001, sleep 1002
    until("five processes of the unit", || marked(&marker).len() >= 5).await;
    let pids = marked(&marker);
    let sessions: std::collections::BTreeSet<i32> = pids
        .iter()
        .filter_map(|p| vigil::supervisor::process::ProcInfo::read(*p))
        .map(|p| p.session)
        .collect();
    assert!(
        sessions.len() >= 3,
        "grandchildren in sessions of their own: {sessions:?}"
    );
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

fn daemon(config: &std::path::Path, data: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn record(data: &std::path::Path) -> Option<vigil::store::UnitRecord> {
    let store = vigil::store::SqliteStore::open_dir(data).ok()?;
    store.unit("solo").ok().flatten()
}

#[tokio::test]
async fn a_kill_9_of_the_daemon_and_a_restart_adopt_the_unit_without_a_second_copy() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        r#"
[api]
enabled = false

[units.solo]
command = ["/bin/sh", "-c", "while true; do echo tick; sleep 0.05; done"]
"#,
    )
    .unwrap();
    let mut first = daemon(&config, &data);
    let mut rec = None;
    until("the unit running under the first daemon", || {
        rec = record(&data).filter(|r| r.state == "running" && r.pid.is_some());
        rec.is_some()
    })
    .await;
    let rec = rec.unwrap();
    let pid = rec.pid.unwrap();
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    // The unit keeps running (and writing) with no daemon at all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        vigil::supervisor::process::start_time(pid).is_some(),
        "the unit died with the daemon"
    );

    let mut second = daemon(&config, &data);
    until("the unit adopted by the second daemon", || {
        record(&data).is_some_and(|r| r.state == "adopted")
    })
    .await;
    let now = record(&data).unwrap();
    assert_eq!(now.pid, Some(pid));
    assert_eq!(now.start_ticks, rec.start_ticks);
    let copies = marked("solo:");
    let leaders: Vec<i32> = copies
        .iter()
        .filter_map(|p| vigil::supervisor::process::ProcInfo::read(*p))
        .filter(|p| p.pid == p.session)
        .map(|p| p.pid)
        .collect();
    assert_eq!(leaders, vec![pid], "exactly one copy of the unit runs");

    second.kill().unwrap();
    second.wait().unwrap();
    vigil::supervisor::process::stop_unit(
        Some(pid),
        rec.marker.as_deref().unwrap(),
        libc::SIGKILL,
        Duration::from_secs(1),
    );
}
