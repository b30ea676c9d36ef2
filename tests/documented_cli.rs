//! What the README's command table promises, through the built binary: `intents list` with
//! `--json` (all twelve keys, with their values) and its `--status`/`--type` filters, plain-text
//! `vigil status`, `intents submit --dedup-key`, and SIGINT as a clean stop.

mod common;

use common::{out, vigil, TestDaemon};
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use vigil::app::App;
use vigil::clock::ManualClock;
use vigil::config::Config;
use vigil::intent::{queue, IntentStatus, NewIntent};
use vigil::sources::SourceState;
use vigil::store::prelude::*;

const T0: &str = "2026-11-23T08:00:00Z";
/// `T0` in milliseconds since the epoch.
const T0_MS: i64 = 1_795_420_800_000;

/// An App on `data` (what `vigil run` would use) on a clock at `T0`.
fn app(config: &str, data: &Path) -> (Arc<App>, ManualClock) {
    let clock = ManualClock::at(T0);
    let config = Config::parse("vigil.toml", config).unwrap_or_else(|e| panic!("{e}"));
    let app = Arc::new(App::new(
        config,
        data.to_path_buf(),
        Arc::new(clock.clone()),
    ));
    (app, clock)
}

fn submit(app: &App, intent_type: &str, n: u32, dedup_key: Option<&str>) -> i64 {
    let i = NewIntent {
        intent_type: intent_type.into(),
        priority: 6,
        reason: format!("reason {n}"),
        data: json!({"n": n}).as_object().unwrap().clone(),
        dedup_key: dedup_key.map(str::to_string),
        origin: "test".into(),
    };
    queue::submit(app, &i).unwrap().id()
}

fn list_json(data: &Path, args: &[&str]) -> Vec<Value> {
    let (code, stdout, err) = out(vigil(data).args(["intents", "list", "--json"]).args(args));
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn ids(list: &[Value]) -> Vec<i64> {
    list.iter().map(|i| i["id"].as_i64().unwrap()).collect()
}

#[test]
fn list_json_carries_every_documented_key_with_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let (app, clock) = app("", dir.path());
    let id = submit(&app, "alert_disk_full", 1, Some("disk-/"));
    clock.advance(Duration::from_millis(1500));
    app.store()
        .unwrap()
        .set_intent_status(id, IntentStatus::Done, Some("handled"), T0_MS + 1500)
        .unwrap();
    let list = list_json(dir.path(), &[]);
    assert_eq!(
        list,
        [json!({
            "id": id,
            "intent_type": "alert_disk_full",
            "priority": 6,
            "reason": "reason 1",
            "data": {"n": 1},
            "created_at": "2026-11-23T08:00:00.000Z",
            "updated_at": "2026-11-23T08:00:01.500Z",
            "status": "done",
            "dedup_key": "disk-/",
            "origin": "test",
            "note": "handled",
            "host": vigil::store::hostname(),
        })],
        "the README's twelve keys, no more"
    );
}

#[test]
fn list_filters_by_status_and_type_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _) = app("", dir.path());
    let a1 = submit(&app, "alert_a", 1, None);
    let b1 = submit(&app, "alert_b", 2, None);
    let a2 = submit(&app, "alert_a", 3, None);
    let a3 = submit(&app, "alert_a", 4, None);
    let store = app.store().unwrap();
    store
        .set_intent_status(a2, IntentStatus::Done, None, T0_MS)
        .unwrap();
    store
        .set_intent_status(b1, IntentStatus::Done, None, T0_MS)
        .unwrap();
    let d = dir.path();
    assert_eq!(ids(&list_json(d, &[])), [a3, a2, b1, a1]);
    assert_eq!(ids(&list_json(d, &["--type", "alert_a"])), [a3, a2, a1]);
    assert_eq!(ids(&list_json(d, &["--status", "done"])), [a2, b1]);
    assert_eq!(
        ids(&list_json(d, &["--status", "pending", "--type", "alert_a"])),
        [a3, a1]
    );
    assert_eq!(ids(&list_json(d, &["--type", "alert_a", "-n", "1"])), [a3]);
    // The plain listing filters the same way.
    let (code, text, _) = out(vigil(d).args(["intents", "list", "--status", "done"]));
    assert_eq!(code, 0);
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows.iter().all(|r| r.contains(" done ")), "{text}");
    let (code, _, err) = out(vigil(d).args(["intents", "list", "--status", "bogus"]));
    assert_eq!(
        code, 2,
        "a status that does not exist is a usage error: {err}"
    );
}

#[test]
fn status_in_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.toml");
    let text = "[budgets.gpu_downtime]\nseconds = 60\n\n[playbooks.fix_disk]\non = \"alert_disk_*\"\ncooldown = \"1h\"\nsteps = [{ log = \"fixing\" }]\n";
    std::fs::write(&config, text).unwrap();
    let data = dir.path().join("data");
    let (app, _) = app(text, &data);
    let store = app.store().unwrap();
    store
        .put_source_states(&[
            SourceState {
                source: "journal".into(),
                kind: "journald".into(),
                up: false,
                reason: Some("no journal files under /var/log/journal".into()),
                since_ms: T0_MS,
            },
            SourceState {
                source: "log".into(),
                kind: "file".into(),
                up: true,
                reason: None,
                since_ms: T0_MS + 1000,
            },
        ])
        .unwrap();
    let done = submit(&app, "alert_disk_full", 1, None);
    submit(&app, "alert_disk_full", 2, None);
    submit(&app, "alert_other", 3, None);
    store
        .set_intent_status(done, IntentStatus::Done, None, T0_MS)
        .unwrap();

    let (code, stdout, err) = out(vigil(&data).arg("status").arg("-c").arg(&config));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = stdout.lines().collect();
    let has = |want: &str| {
        assert!(
            lines.iter().any(|l| l.trim_end() == want),
            "no line {want:?} in:\n{stdout}"
        )
    };
    has(&format!("config: {}", config.display()));
    has(&format!("data dir: {}", data.display()));
    has("SOURCES (as last recorded by the daemon)");
    has("  journal              journald  DOWN  since 2026-11-23T08:00:00.000Z  (no journal files under /var/log/journal)");
    has("  log                  file      up    since 2026-11-23T08:00:01.000Z");
    has("INTENTS");
    has("  pending         2");
    has("  done            1");
    has("PLAYBOOKS");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  fix_disk             on alert_disk_*")
                && l.contains("ready")
                && l.contains("runs/24h 0")),
        "{stdout}"
    );
    has("BUDGETS (tonight)");
    assert!(
        lines.iter().any(|l| l.starts_with("  gpu_downtime")
            && l.ends_with("used 0.0s  reserved 0.0s  remaining 60.0s of 60s")),
        "{stdout}"
    );
    has("LOCKS");
    has("  none held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_with_a_dedup_key_is_stored_once_per_key() {
    let d = TestDaemon::start("").await;
    let data = d.path("data");
    let submit = |n: u32, key: &str| {
        let (code, _, err) = out(vigil(&data).args([
            "intents",
            "submit",
            "alert_gpu_oom",
            "--priority",
            "8",
            "--reason",
            "oom",
            "--data",
            &format!("{{\"n\": {n}}}"),
            "--dedup-key",
            key,
        ]));
        assert_eq!(code, 0, "{err}");
    };
    // Different data, one key: one intent (without the key, the data would make two).
    submit(1, "gpu0");
    submit(2, "gpu0");
    submit(3, "gpu1");
    let inbox = d.app.inbox_dir();
    d.wait_until("the inbox drained", || {
        std::fs::read_dir(&inbox).unwrap().next().is_none()
    })
    .await;
    let mut stored: Vec<(String, Value)> = d
        .intents()
        .into_iter()
        .map(|i| (i.dedup_key, Value::Object(i.data)))
        .collect();
    stored.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        stored,
        [
            ("gpu0".to_string(), json!({"n": 1})),
            ("gpu1".to_string(), json!({"n": 3}))
        ]
    );
    d.stop().await;
}

#[test]
fn sigint_stops_the_daemon_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, "[api]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let mut daemon = vigil(dir.path())
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read the log as it comes, until the daemon says it runs.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = daemon.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            let _ = tx.send(line.clone());
            all.push(line);
        }
        all
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("the daemon starts within 10 s");
        if line.contains("vigil running") {
            break;
        }
    }
    let (code, _, err) = out(vigil(dir.path())
        .args(["intents", "submit", "alert_x", "-p", "5", "-r", "r"])
        .arg("-c")
        .arg(&config));
    assert_eq!(code, 0, "{err}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while list_json(dir.path(), &["-c", config.to_str().unwrap()]).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon stores the intent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    unsafe { libc::kill(daemon.id() as i32, libc::SIGINT) };
    let status = daemon.wait().unwrap();
    let log = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{log:#?}");
    let last = log.last().map(String::as_str).unwrap_or("");
    assert!(last.starts_with("vigil stopped: uptime="), "{log:#?}");
    assert!(last.ends_with(", events=0, intents=1"), "{last}");
}
