//! Golden snapshots: `state_dir` copied whole, golden once the unit has been healthy for
//! `snapshot.golden_after`; a tier-1 unit without a replica whose restarts run out gets its
//! last golden snapshot back and one more try, and is quarantined if that fails too.

mod common;

use common::supervisor::*;
use vigil::store::{IntentQuery, IntentStore};
use vigil::supervisor::{snapshot, UnitState};

#[tokio::test]
async fn tier_1_restores_its_golden_snapshot_and_tries_once_more() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("sub")).unwrap();
    std::fs::write(state.join("db"), "good").unwrap();
    std::fs::write(state.join("sub/x"), "1").unwrap();
    let app = app(
        dir.path(),
        r#"
[units.db]
command = ["/bin/sh", "-c", "v=$(cat {dir}/state/db); if [ \"$v\" = good ]; then exec sleep 1000; fi; echo \"corrupt state: $v\"; exit 1"]
tier = 1
state_dir = "{dir}/state"
snapshot = { golden_after = "1s" }
backoff = { initial = "5ms", max = "5ms", reset = "60s" }
max_restarts = 1
"#,
    );
    let snaps = dir.path().join("snapshots");
    let (sup, mut rx) = start(&app).await;
    let first = wait(&sup, "db", "running", |s| s.state == UnitState::Running).await;
    let info = sup.snapshot("db").await.unwrap();
    assert!(!info.golden(), "healthy for less than golden_after");
    assert_eq!(
        std::fs::read_to_string(info.path.join("db")).unwrap(),
        "good"
    );
    common::wait_within("the snapshot becomes golden", 20, || {
        snapshot::last_golden(&snaps, "db").is_some()
    })
    .await;

    // The state goes bad and the process dies: the restart fails, restarts run out.
    std::fs::write(state.join("db"), "corrupt").unwrap();
    std::fs::remove_dir_all(state.join("sub")).unwrap();
    unsafe { libc::kill(first.pid.unwrap(), libc::SIGKILL) };
    let restored = next_event(&mut rx, "unit_restored").await;
    assert_eq!(restored.data["snapshot"], info.path.display().to_string());
    let s = wait(&sup, "db", "running from the snapshot", |s| {
        s.state == UnitState::Running && s.pid != first.pid
    })
    .await;
    assert_eq!(std::fs::read_to_string(state.join("db")).unwrap(), "good");
    assert_eq!(std::fs::read_to_string(state.join("sub/x")).unwrap(), "1");
    // (unit_exhausted came before unit_restored; the intent below says it was sent.)
    assert_eq!(count(&drain(&mut rx), "unit_quarantined"), 0);
    let intents = app
        .store()
        .unwrap()
        .intents(&IntentQuery::default())
        .unwrap();
    assert!(intents.iter().any(|i| i.intent_type == "unit_exhausted"));
    assert!(
        !intents.iter().any(|i| i.intent_type == "repair_unit"),
        "nothing to repair yet"
    );

    // Once: a failure of the second chance quarantines, without restoring again.
    std::fs::write(state.join("db"), "corrupt again").unwrap();
    unsafe { libc::kill(s.pid.unwrap(), libc::SIGKILL) };
    let q = wait(&sup, "db", "quarantined", |s| {
        s.state == UnitState::Quarantined
    })
    .await;
    assert!(q.bundle.is_some());
    assert_eq!(
        std::fs::read_to_string(state.join("db")).unwrap(),
        "corrupt again"
    );
    assert_eq!(count(&drain(&mut rx), "unit_restored"), 0);
    sup.stop_all().await;
}

#[tokio::test]
async fn a_snapshot_without_a_daemon_is_taken_but_not_golden() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/db"), "v1").unwrap();
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(
        &cfg,
        format!(
            "[units.db]\ncommand = [\"/bin/true\"]\nstate_dir = \"{}/state\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["units", "snapshot", "db"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let list = snapshot::list(&dir.path().join("snapshots"), "db");
    assert_eq!(list.len(), 1);
    assert!(!list[0].golden());
    assert_eq!(
        std::fs::read_to_string(list[0].path.join("db")).unwrap(),
        "v1"
    );
}
