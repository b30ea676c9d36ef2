//! The daemon killed (SIGKILL) while production is stopped for a quiesced canary: the next
//! start kills the candidate the dead daemon left running, restores production and checks it
//! healthy within the restore SLA, ends the run saying so and charges the downtime. Real
//! processes throughout: the `vigil` binary, the test service as the supervised production
//! unit, the CLI running the canary through the daemon's API.

mod canary_support;
mod common;

use canary_support::*;
use std::process::{Child, Stdio};
use vigil::store::{AuditStore, CanaryStore, SqliteStore};

/// A child process killed when dropped, so a failed test leaves no daemon behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon(cfg: &std::path::Path, data: &std::path::Path, log: &std::path::Path) -> Proc {
    Proc(
        common::vigil(data)
            .args(["--config", cfg.to_str().unwrap(), "run"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_while_production_is_down_restores_it_at_the_next_start() {
    let p = Ports::pick();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The real clock: a window around now.
    let text = open_window_config(p, "prod_restart", dir.path(), "");
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(&cfg, text).unwrap();
    let _guard = UnitGuard {
        data: data.clone(),
        unit: "prod_restart".into(),
    };
    let mut first = daemon(&cfg, &data, &dir.path().join("first.log"));
    wait_healthy(p.production, 20).await;

    let mut cli = Proc(
        common::vigil(&data)
            .args([
                "--config",
                cfg.to_str().unwrap(),
                "canary",
                "run",
                "judge",
                "--candidate",
                r#"{"flag": "--fail-health"}"#,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    common::wait_within("production stopped and the candidate up", 20, || {
        !listening(p.production) && listening(p.first)
    })
    .await;
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let _ = cli.0.kill();
    let _ = cli.0.wait();
    assert!(
        !listening(p.production),
        "production stays down with its daemon dead"
    );
    let store = SqliteStore::open_dir(&data).unwrap();
    let pending = store.pending_restores().unwrap();
    assert_eq!(pending.len(), 1, "the pending restore is in the store");
    let run = pending[0].id;

    let mut second = daemon(&cfg, &data, &dir.path().join("second.log"));
    common::wait_within("the pending restore finished", 30, || {
        store
            .canary_run(run)
            .unwrap()
            .is_some_and(|r| r.ended_at.is_some())
    })
    .await;
    let r = store.canary_run(run).unwrap().unwrap();
    assert_eq!(r.result.as_deref(), Some("failed"), "{r:?}");
    assert_eq!(
        r.reason.as_deref(),
        Some("vigil stopped while production was down for this canary; production was restored at the next start")
    );
    assert!(r.downtime_ms > 0 && !r.restore_pending);
    assert!(healthy(p.production).await, "restored and healthy");
    assert!(
        !listening(p.first),
        "the dead daemon's candidate was killed"
    );
    let restored = store
        .audit_tail(1000)
        .unwrap()
        .into_iter()
        .find(|e| e.event == "production_restored")
        .expect("audited");
    assert_eq!(restored.details["after_restart"], true);
    assert!(restored.details["restore_s"].as_f64().unwrap() < 15.0);
    assert_eq!(
        restored.details["candidate_killed"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        r.budget.as_deref(),
        Some("gpu_downtime"),
        "charged to the budget"
    );

    // Stop the daemon, then the unit it leaves running for the next one.
    unsafe {
        libc::kill(second.0.id() as i32, libc::SIGTERM);
    }
    second.0.wait().unwrap();
}
