//! Learned playbooks: `vigil units release NAME --fixed ... --step ...` records the fix of a
//! quarantined failure against its fingerprint; the same failure (other pids and paths) runs
//! it before quarantine and the unit runs again, counted as a success; a different failure
//! does not run it.

mod common;

use common::supervisor::*;
use vigil::supervisor::{learned, UnitState};

const JUDGE: &str = r#"
[units.judge]
command = ["/bin/sh", "-c", "if [ -e {dir}/quota ]; then echo 'error: disk quota exceeded on /srv/7'; exit 1; fi; if [ -e {dir}/lock ]; then echo \"fatal: stale lock {dir}/lock held by pid $$\"; exit 1; fi; exec sleep 1000"]
backoff = { initial = "5ms", max = "5ms", reset = "300ms" }
max_restarts = 1
"#;

fn cli(dir: &std::path::Path, args: &[&str]) -> String {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .arg("--config")
        .arg(dir.join("vigil.toml"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[tokio::test]
async fn a_learned_playbook_runs_on_the_same_failure_and_not_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("vigil.toml"),
        JUDGE.replace("{dir}", &d.display().to_string()),
    )
    .unwrap();
    let lock = d.join("lock");

    // First occurrence: quarantined, a human fixes it and records the fix.
    std::fs::write(&lock, "").unwrap();
    let app1 = app(d, JUDGE);
    let (sup, _rx) = start(&app1).await;
    wait(&sup, "judge", "quarantined", |s| {
        s.state == UnitState::Quarantined
    })
    .await;
    sup.stop_all().await;
    let step = format!("{{ run = [\"/bin/rm\", \"-f\", \"{}\"] }}", lock.display());
    let said = cli(
        d,
        &[
            "units",
            "release",
            "judge",
            "--fixed",
            "removed the stale lock",
            "--step",
            &step,
        ],
    );
    assert!(said.contains("recorded a learned playbook"), "{said}");
    let show: serde_json::Value =
        serde_json::from_str(&cli(d, &["units", "show", "judge", "--json"])).unwrap();
    assert_eq!(show["state"], "stopped");
    let fp = show["playbooks"][0]["fingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(show["playbooks"][0]["fixed"], "removed the stale lock");
    assert_eq!(show["playbooks"][0]["runs"], 0);
    std::fs::remove_file(&lock).unwrap();

    // Second occurrence (another pid): the playbook runs and the unit runs again.
    let app2 = app(d, JUDGE);
    let (sup, mut rx) = start(&app2).await;
    let up = wait(&sup, "judge", "running", |s| s.state == UnitState::Running).await;
    std::fs::write(&lock, "").unwrap();
    unsafe { libc::kill(up.pid.unwrap(), libc::SIGKILL) };
    let ran = next_event(&mut rx, "unit_playbook").await;
    assert_eq!(ran.data["ok"], true, "{ran:?}");
    assert_eq!(ran.data["fingerprint"], fp.as_str());
    let again = wait(&sup, "judge", "running again", |s| {
        s.state == UnitState::Running && s.pid != up.pid
    })
    .await;
    assert!(!lock.exists(), "the step removed the lock");
    let dir_pb = d.join("playbooks");
    common::wait_within("the run counted as a success", 20, || {
        learned::find(&dir_pb, "judge", &fp).is_some_and(|l| l.runs == 1 && l.successes == 1)
    })
    .await;
    let events = drain(&mut rx);
    assert_eq!(count(&events, "unit_quarantined"), 0);

    // A different failure: no playbook runs, the unit is quarantined.
    std::fs::write(d.join("quota"), "").unwrap();
    std::fs::write(&lock, "").unwrap();
    unsafe { libc::kill(again.pid.unwrap(), libc::SIGKILL) };
    wait(&sup, "judge", "quarantined", |s| {
        s.state == UnitState::Quarantined
    })
    .await;
    assert!(lock.exists(), "the learned playbook did not run");
    assert_eq!(count(&drain(&mut rx), "unit_playbook"), 0);
    let l = learned::find(&dir_pb, "judge", &fp).unwrap();
    assert_eq!((l.runs, l.successes), (1, 1));
    sup.stop_all().await;
    let show: serde_json::Value =
        serde_json::from_str(&cli(d, &["units", "show", "judge", "--json"])).unwrap();
    assert_ne!(
        show["fingerprint"],
        fp.as_str(),
        "another failure, another fingerprint"
    );
    assert_eq!(show["playbooks"][0]["successes"], 1);
}
