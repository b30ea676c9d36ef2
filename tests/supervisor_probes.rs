//! `ready` and `health` probes against real HTTP servers run as units: a unit that comes
//! `after` another waits until that one is ready; a failing health check restarts a live
//! process, counted like a failure, and `unit_recovered` follows when it passes again; a unit
//! that is never ready is stopped at the ready timeout.

mod common;

use common::supervisor::*;
use vigil::supervisor::UnitState;

#[tokio::test]
async fn after_waits_until_the_unit_it_comes_after_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let server = http_server(dir.path());
    let port = free_port();
    // The server listens only after 0.5 s: spawned is not ready.
    let app = app(
        dir.path(),
        &format!(
            r#"
[units.web]
command = ["/usr/bin/python3", "{server}", "{port}", "{{dir}}", "0.5"]
ready = {{ http = "http://127.0.0.1:{port}/health", interval = "20ms", timeout = "20s" }}

[units.client]
command = ["/bin/sh", "-c", "exec sleep 1000"]
after = ["web"]
"#,
            server = server.display()
        ),
    );
    let (sup, mut rx) = start(&app).await;
    let s = wait(&sup, "web", "starting", |s| s.state == UnitState::Starting).await;
    assert!(s.healthy_since_ms.is_none());
    wait(&sup, "client", "running", |s| s.state == UnitState::Running).await;
    let order: Vec<(String, String)> = drain(&mut rx)
        .into_iter()
        .filter(|e| e.source == "supervisor")
        .map(|e| (e.data["unit"].as_str().unwrap().to_string(), e.kind))
        .collect();
    let at = |unit: &str, kind: &str| {
        order
            .iter()
            .position(|(u, k)| u == unit && k == kind)
            .unwrap_or_else(|| panic!("{unit} {kind} in {order:?}"))
    };
    assert!(at("web", "unit_started") < at("web", "unit_ready"));
    assert!(
        at("web", "unit_ready") < at("client", "unit_started"),
        "{order:?}"
    );
    let web = sup.status("web").unwrap();
    assert_eq!(web.state, UnitState::Running);
    assert!(web.healthy_since_ms.is_some());
    sup.stop_all().await;
}

#[tokio::test]
async fn a_failing_health_check_restarts_the_live_process_and_recovery_is_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let server = http_server(dir.path());
    let port = free_port();
    let app = app(
        dir.path(),
        &format!(
            r#"
[units.web]
command = ["/usr/bin/python3", "{server}", "{port}", "{{dir}}"]
ready = {{ http = "http://127.0.0.1:{port}/", interval = "20ms", timeout = "20s" }}
health = {{ http = "http://127.0.0.1:{port}/", interval = "20ms", timeout = "1s", failures = 2 }}
backoff = {{ initial = "10ms", max = "10ms", reset = "30s" }}
max_restarts = 5
"#,
            server = server.display()
        ),
    );
    let (sup, mut rx) = start(&app).await;
    let first = wait(&sup, "web", "running", |s| s.state == UnitState::Running).await;
    next_event(&mut rx, "unit_ready").await;
    std::fs::write(dir.path().join("sick"), "").unwrap();
    let unhealthy = next_event(&mut rx, "unit_unhealthy").await;
    assert_eq!(unhealthy.data["failures"], 2);
    assert!(
        unhealthy.data["reason"].as_str().unwrap().contains("500"),
        "{unhealthy:?}"
    );
    std::fs::remove_file(dir.path().join("sick")).unwrap();
    let exited = next_event(&mut rx, "unit_exited").await;
    assert_eq!(exited.data["pid"], first.pid.unwrap());
    assert!(
        exited.data["exit"]
            .as_str()
            .unwrap()
            .starts_with("unhealthy: "),
        "{exited:?}"
    );
    next_event(&mut rx, "unit_recovered").await;
    let s = wait(&sup, "web", "running again", |s| {
        s.state == UnitState::Running && s.pid != first.pid
    })
    .await;
    assert_eq!(s.starts, 2, "restarted once");
    assert_eq!(s.total_restarts, 1, "counted like a failure");
    assert!(
        !alive_pid(first.pid.unwrap()),
        "the unhealthy process is gone"
    );
    let rec = {
        use vigil::store::UnitStore;
        app.store().unwrap().unit("web").unwrap().unwrap()
    };
    assert!(rec.last_exit.unwrap().starts_with("unhealthy: "));
    sup.stop_all().await;
}

#[tokio::test]
async fn a_unit_never_ready_is_stopped_at_the_ready_timeout_and_counts_as_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let app = app(
        dir.path(),
        &format!(
            r#"
[units.mute]
command = ["/bin/sh", "-c", "echo never listening; exec sleep 1000"]
ready = {{ tcp = "127.0.0.1:{port}", interval = "20ms", timeout = "200ms" }}
backoff = {{ initial = "10ms", max = "10ms", reset = "30s" }}
max_restarts = 1
"#
        ),
    );
    let (sup, mut rx) = start(&app).await;
    let s = wait(&sup, "mute", "quarantined", |s| {
        s.state == UnitState::Quarantined
    })
    .await;
    assert_eq!(s.starts, 2);
    let events = drain(&mut rx);
    assert_eq!(count(&events, "unit_ready"), 0);
    assert_eq!(count(&events, "unit_unhealthy"), 2);
    let e = events.iter().find(|e| e.kind == "unit_exited").unwrap();
    assert_eq!(e.data["exit"], "not ready within 0.2s");
    assert!(marked("mute:").is_empty(), "no process of the unit is left");
    sup.stop_all().await;
}

fn alive_pid(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}
