//! Restarts with real child processes: a crash loop ends in quarantine with a bundle holding
//! the real last lines and exit status; failures spread wider than the window never exhaust;
//! quarantine survives a daemon restart; a unit's output line becomes an event.

mod common;

use common::supervisor::*;
use vigil::store::{IntentQuery, IntentStore, UnitStore};
use vigil::supervisor::UnitState;

const CRASHY: &str = r#"
[units.crashy]
command = ["/bin/sh", "-c", "echo starting pid $$; echo 'fatal: cannot open /etc/crashy.conf' >&2; exit 3"]
backoff = { initial = "10ms", max = "40ms", reset = "30s" }
max_restarts = 3
restart_window = "10m"
tier = 2
"#;

#[tokio::test]
async fn a_crash_loop_restarts_exactly_max_restarts_then_quarantines_with_a_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path(), CRASHY);
    let (sup, mut rx) = start(&app).await;
    let s = wait(&sup, "crashy", "quarantined", |s| {
        s.state == UnitState::Quarantined
    })
    .await;
    assert_eq!(
        s.starts, 4,
        "one start and exactly max_restarts (3) restarts"
    );
    assert_eq!(s.total_restarts, 3);

    let events = drain(&mut rx);
    assert_eq!(count(&events, "unit_started"), 4);
    assert_eq!(count(&events, "unit_exited"), 4);
    assert_eq!(count(&events, "unit_restarted"), 3);
    assert_eq!(count(&events, "unit_exhausted"), 1);
    assert_eq!(count(&events, "unit_quarantined"), 1);
    let exited = events.iter().find(|e| e.kind == "unit_exited").unwrap();
    assert_eq!(exited.data["code"], 3);
    assert_eq!(exited.data["unit"], "crashy");

    let bundle = s.bundle.expect("a bundle");
    assert!(bundle.starts_with(dir.path().join("quarantine")));
    assert!(bundle
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("crashy_"));
    let log = std::fs::read_to_string(bundle.join("unit.log")).unwrap();
    assert_eq!(
        log.matches("fatal: cannot open /etc/crashy.conf").count(),
        4,
        "{log}"
    );
    assert_eq!(log.matches("starting pid").count(), 4, "{log}");
    let error: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("error.json")).unwrap()).unwrap();
    assert_eq!(error["exit_code"], 3);
    assert_eq!(error["restarts"], 3);
    assert_eq!(error["last_error"], "fatal: cannot open /etc/crashy.conf");
    assert_eq!(error["restart_history"].as_array().unwrap().len(), 3);
    let system: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("system_state.json")).unwrap())
            .unwrap();
    assert!(system["memory_total_kb"].as_u64().unwrap() > 0, "{system}");
    assert!(
        system["disk"].as_array().is_some_and(|d| !d.is_empty()),
        "{system}"
    );
    let unit_toml = std::fs::read_to_string(bundle.join("unit.toml")).unwrap();
    let parsed: toml::Table = toml::from_str(&unit_toml).unwrap();
    assert_eq!(
        parsed["units"]["crashy"]["max_restarts"].as_integer(),
        Some(3)
    );

    let intents = app
        .store()
        .unwrap()
        .intents(&IntentQuery::default())
        .unwrap();
    let exhausted = intents
        .iter()
        .find(|i| i.intent_type == "unit_exhausted")
        .expect("a unit_exhausted intent");
    assert_eq!(exhausted.priority, 10);
    assert_eq!(exhausted.data["unit"], "crashy");
    assert_eq!(exhausted.data["bundle"], bundle.display().to_string());
    assert!(intents.iter().any(|i| i.intent_type == "repair_unit"));

    // The daemon restarts: the unit stays quarantined (since the same time) and nothing is
    // started.
    let since = app
        .store()
        .unwrap()
        .unit("crashy")
        .unwrap()
        .unwrap()
        .since_ms;
    sup.detach().await;
    let app2 = common::supervisor::app(dir.path(), CRASHY);
    let (sup, _rx) = start(&app2).await;
    let s = wait(&sup, "crashy", "quarantined again", |s| {
        s.state == UnitState::Quarantined
    })
    .await;
    assert_eq!(s.starts, 0);
    let rec = app2.store().unwrap().unit("crashy").unwrap().unwrap();
    assert_eq!(rec.state, "quarantined");
    assert_eq!(
        rec.since_ms, since,
        "degraded since the first daemon quarantined it"
    );
    assert_eq!(app2.metrics.degraded.get(&["crashy"]), 1.0);
    assert_eq!(rec.bundle.as_deref(), Some(bundle.to_str().unwrap()));
    assert_eq!(
        sup.status("crashy").unwrap().starts,
        0,
        "still nothing started"
    );
    sup.stop_all().await;

    // The CLI reads the same store: list, show, release.
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(&cfg, CRASHY).unwrap();
    let cli = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let list: serde_json::Value = serde_json::from_str(&cli(&["units", "list", "--json"])).unwrap();
    assert_eq!(list[0]["name"], "crashy");
    assert_eq!(list[0]["state"], "quarantined");
    assert_eq!(list[0]["tier"], 2);
    assert_eq!(list[0]["restarts_in_window"], 3);
    let show: serde_json::Value =
        serde_json::from_str(&cli(&["units", "show", "crashy", "--json"])).unwrap();
    assert_eq!(show["bundle"], bundle.display().to_string());
    assert_eq!(show["last_exit"], "exit code 3");
    assert_eq!(show["last_error"], "fatal: cannot open /etc/crashy.conf");
    let logs = cli(&["units", "logs", "crashy", "-n", "2"]);
    assert_eq!(logs.lines().count(), 2, "{logs}");
    assert!(
        logs.contains("fatal: cannot open /etc/crashy.conf"),
        "{logs}"
    );
    cli(&["units", "release", "crashy"]);
    let list: serde_json::Value = serde_json::from_str(&cli(&["units", "list", "--json"])).unwrap();
    assert_eq!(list[0]["state"], "stopped");
    assert_eq!(list[0]["restarts_in_window"], 0);
}

#[tokio::test]
async fn a_unit_waits_for_the_units_it_comes_after() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(
        dir.path(),
        r#"
[units.api]
command = ["/bin/sh", "-c", "exec sleep 1000"]
after = ["db"]

[units.db]
command = ["/bin/sh", "-c", "exec sleep 1000"]
"#,
    );
    let (sup, mut rx) = start(&app).await;
    wait(&sup, "api", "running", |s| s.state == UnitState::Running).await;
    let started: Vec<String> = drain(&mut rx)
        .into_iter()
        .filter(|e| e.kind == "unit_started")
        .map(|e| e.data["unit"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(started, vec!["db", "api"]);
    sup.stop_all().await;
}

#[tokio::test]
async fn failures_spread_wider_than_the_window_never_exhaust() {
    let dir = tempfile::tempdir().unwrap();
    // Each run lasts longer than the window, so no two restarts are ever in it together.
    let app = app(
        dir.path(),
        r#"
[units.slowfail]
command = ["/bin/sh", "-c", "sleep 0.3; exit 1"]
backoff = { initial = "5ms", max = "5ms", reset = "30s" }
max_restarts = 1
restart_window = "200ms"
"#,
    );
    let (sup, _rx) = start(&app).await;
    let s = wait(&sup, "slowfail", "five starts", |s| {
        s.starts >= 5 || s.state == UnitState::Quarantined
    })
    .await;
    assert_ne!(s.state, UnitState::Quarantined);
    assert!(s.total_restarts >= 4);
    sup.stop_all().await;
}

#[tokio::test]
async fn a_units_output_line_becomes_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(
        dir.path(),
        r#"
[units.judge]
command = ["/bin/sh", "-c", "echo 'torch: CUDA out of memory. Tried to allocate 2.50 GiB' >&2; exec sleep 1000"]

[[units.judge.match]]
regex = 'CUDA out of memory\. Tried to allocate (?P<alloc_gib>[0-9.]+) GiB'
event = "gpu_oom"
"#,
    );
    let (sup, mut rx) = start(&app).await;
    let ev = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            let e = rx.recv().await.unwrap();
            if e.kind == "gpu_oom" {
                return e;
            }
        }
    })
    .await
    .expect("a gpu_oom event");
    assert_eq!(ev.source, "units.judge");
    assert_eq!(ev.data["alloc_gib"], "2.50");
    assert_eq!(ev.data["unit"], "judge");
    let log = dir.path().join("units/judge/unit.log");
    common::wait_within("the line in the unit's log", 20, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("CUDA out of memory"))
    })
    .await;
    assert!(sup
        .lines("judge", 10)
        .iter()
        .any(|l| l.contains("CUDA out of memory")));
    sup.stop_all().await;
}

#[tokio::test]
async fn an_exhausted_tier_1_unit_fails_over_to_its_replica() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(
        dir.path(),
        r#"
[units.primary]
command = ["/bin/sh", "-c", "echo 'bind: address in use'; exit 1"]
tier = 1
replica = "standby"
max_restarts = 1
backoff = { initial = "5ms", max = "5ms", reset = "30s" }

[units.standby]
command = ["/bin/sh", "-c", "exec sleep 1000"]
"#,
    );
    let (sup, mut rx) = start(&app).await;
    let s = wait(&sup, "primary", "failed over", |s| {
        s.state == UnitState::FailedOver
    })
    .await;
    assert_eq!(s.starts, 2);
    let standby = wait(&sup, "standby", "serving", |s| {
        s.state == UnitState::Running
    })
    .await;
    assert_eq!(
        standby.starts, 1,
        "the standby started once, at the failover"
    );
    let events = drain(&mut rx);
    let q = events
        .iter()
        .find(|e| e.kind == "unit_quarantined")
        .unwrap();
    assert_eq!(q.data["failed_over_to"], "standby");
    let first_standby_start = events
        .iter()
        .position(|e| e.kind == "unit_started" && e.data["unit"] == "standby")
        .unwrap();
    let exhausted = events
        .iter()
        .position(|e| e.kind == "unit_exhausted")
        .unwrap();
    assert!(
        exhausted < first_standby_start,
        "a cold standby waits for the failover"
    );
    assert_eq!(
        app.store().unwrap().unit("primary").unwrap().unwrap().state,
        "failed_over"
    );
    sup.stop_all().await;
}
