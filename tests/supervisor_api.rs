//! Acting on a running daemon's units: `GET /api/units` (with degraded units and their
//! bundles), `POST /api/units/{name}/{verb}` with the token, answered once the change is done,
//! `vigil units start|stop|restart|release` through the daemon, `vigil status` and
//! `vigil_degraded{unit}`; without a daemon, `release` works on the store and `start` says a
//! daemon is needed. `vigil units logs -f` follows a unit's log across rotation.

mod common;

use common::{out, vigil, TestDaemon, TOKEN};
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::PathBuf;
use vigil::supervisor::UnitState;

const UNITS: &str = r#"
[units.web]
command = ["/bin/sh", "-c", "exec sleep 1000"]

[units.crashy]
command = ["/bin/sh", "-c", "echo 'fatal: no config in /etc/crashy'; exit 2"]
max_restarts = 0
tier = 2
"#;

fn state(d: &TestDaemon, unit: &str) -> Option<UnitState> {
    d.app.supervisor.get()?.status(unit).map(|s| s.state)
}

/// Runs the CLI off the runtime's threads (the daemon answers it on them).
async fn cli(data: PathBuf, cfg: PathBuf, args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || out(vigil(&data).arg("--config").arg(&cfg).args(&args)))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_the_cli_act_on_the_running_daemons_units() {
    let d = TestDaemon::start(UNITS).await;
    d.wait_until("web running, crashy quarantined", || {
        state(&d, "web") == Some(UnitState::Running)
            && state(&d, "crashy") == Some(UnitState::Quarantined)
    })
    .await;
    let list = d.get_json("/api/units").await;
    let row = |name: &str| -> Value {
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {list}"))
    };
    assert_eq!(row("web")["state"], "running");
    assert_eq!(row("web")["degraded"], Value::Null);
    assert_eq!(row("crashy")["state"], "quarantined");
    assert!(row("crashy")["degraded"]["since"].is_string(), "{list}");
    let bundle = row("crashy")["bundle"].as_str().unwrap().to_string();
    assert!(std::path::Path::new(&bundle).join("error.json").exists());
    let show = d.get_json("/api/units/crashy").await;
    assert_eq!(show["last_error"], "fatal: no config in /etc/crashy");
    assert_eq!(show["fingerprint"].as_str().unwrap().len(), 16);
    let metrics = d.get_text("/metrics").await;
    assert!(
        metrics.contains("vigil_degraded{unit=\"crashy\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vigil_degraded{unit=\"web\"} 0"),
        "{metrics}"
    );

    // Changes need the token, and name a unit and a verb that exist.
    let r = d.post_as(None, "/api/units/web/restart", None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        d.post("/api/units/nope/stop", &json!({})).await.status(),
        404
    );
    assert_eq!(
        d.post("/api/units/web/explode", &json!({})).await.status(),
        404
    );
    let r = d.post("/api/units/crashy/start", &json!({})).await;
    assert_eq!(r.status(), 409);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("release"), "{e}");

    // A restart answers once the new process runs.
    let old = d
        .app
        .supervisor
        .get()
        .unwrap()
        .status("web")
        .unwrap()
        .pid
        .unwrap();
    let r = d.post("/api/units/web/restart", &json!({})).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["state"], "running", "{v}");
    let new = v["pid"].as_i64().unwrap() as i32;
    assert_ne!(new, old);
    assert!(
        !common::alive(old),
        "the old process is gone when the answer comes"
    );
    assert!(common::alive(new));

    // The CLI goes through the daemon.
    let data = d.app.data_dir.clone();
    let cfg = d.path("vigil.toml");
    std::fs::write(&cfg, format!("[api]\ntoken = \"{TOKEN}\"\n{UNITS}")).unwrap();
    let (code, stdout, stderr) = cli(data.clone(), cfg.clone(), &["units", "stop", "web"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("web: stopped"), "{stdout}");
    assert_eq!(state(&d, "web"), Some(UnitState::Stopped));
    assert!(!common::alive(new));
    let (code, stdout, stderr) = cli(data.clone(), cfg.clone(), &["units", "start", "web"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("web: running"), "{stdout}");
    assert_eq!(state(&d, "web"), Some(UnitState::Running));
    let (code, stdout, _) = cli(data.clone(), cfg.clone(), &["status", "--json"]).await;
    assert_eq!(code, 0);
    let status: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["degraded"][0]["unit"], "crashy", "{status}");
    assert_eq!(status["degraded"][0]["bundle"], bundle.as_str());
    let (_, text, _) = cli(data.clone(), cfg.clone(), &["status"]).await;
    assert!(text.contains("DEGRADED"), "{text}");
    // Released, it runs once more and (max_restarts = 0) is quarantined again.
    let starts = d
        .app
        .supervisor
        .get()
        .unwrap()
        .status("crashy")
        .unwrap()
        .starts;
    let (code, _, stderr) = cli(data.clone(), cfg.clone(), &["units", "release", "crashy"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        d.app
            .supervisor
            .get()
            .unwrap()
            .status("crashy")
            .unwrap()
            .starts,
        starts + 1,
        "started again before the answer"
    );

    d.app.supervisor.get().unwrap().stop_all().await;
    d.stop().await;

    // Without a daemon (a fresh data dir): starting needs one.
    let fresh = tempfile::tempdir().unwrap();
    let cfg = fresh.path().join("vigil.toml");
    std::fs::write(&cfg, UNITS).unwrap();
    let (code, _, stderr) = cli(fresh.path().to_path_buf(), cfg, &["units", "start", "web"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("needs the running daemon"), "{stderr}");
}

#[tokio::test]
async fn logs_follow_the_units_output_across_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let app = common::supervisor::app(
        dir.path(),
        r#"
[units.spew]
command = ["/bin/sh", "-c", "i=0; while [ $i -lt 300 ]; do echo \"line $i\"; i=$((i+1)); sleep 0.005; done; exec sleep 1000"]
log = { max_size = 200, keep = 5 }
"#,
    );
    let (sup, _rx) = common::supervisor::start(&app).await;
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(&cfg, "[units.spew]\ncommand = [\"/bin/true\"]\n").unwrap();
    let mut child = vigil(dir.path())
        .arg("--config")
        .arg(&cfg)
        .args(["units", "logs", "spew", "-n", "0", "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line == "line 299";
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    let lines = tokio::time::timeout(std::time::Duration::from_secs(30), lines)
        .await
        .expect("the follow printed the last line")
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let numbers: Vec<u32> = lines
        .iter()
        .map(|l| l.strip_prefix("line ").unwrap().parse().unwrap())
        .collect();
    let first = numbers[0];
    assert_eq!(
        numbers,
        (first..300).collect::<Vec<_>>(),
        "every line once, in order"
    );
    assert!(
        dir.path().join("units/spew/unit.log.1").exists(),
        "the log rotated while followed"
    );
    assert!(first < 250, "followed from early on: {first}");
    sup.stop_all().await;
}
