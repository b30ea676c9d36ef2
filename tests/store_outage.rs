//! PostgreSQL going away under a store and coming back, on a server this test starts and stops
//! itself (initdb and pg_ctl from the packaged PostgreSQL, run as the postgres user): the
//! health check says degraded with the reason while it is away, writes fail with an error
//! (nothing is half-written), and the store reconnects by itself when it is back.
//!
//! And the daemon (`vigil run`, a process of its own) through it: it starts while PostgreSQL
//! is away, keeps what its rules propose in the inbox, delivers each intent once when the
//! store is back (a file read again after a crash is not stored twice), runs nothing
//! meanwhile, and logs and counts each outage once; its supervised units, and a canary restore
//! a dead daemon left pending, wait for the store and then go ahead.

mod canary_support;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use vigil::intent::NewIntent;
use vigil::store::prelude::*;
use vigil::store::{AnyStore, IntentQuery, PgStore};

/// A PostgreSQL cluster of this test's own, stopped (and its files removed) when dropped.
struct Server {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

fn as_postgres(bin: &Path, tool: &str, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join(tool))
        .args(args)
        .current_dir("/")
        .output()
        .unwrap()
}

impl Server {
    fn start() -> Server {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (scripts/setup installs it)")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .max()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::process::Command::new("chown")
            .args(["postgres", dir.path().to_str().unwrap()])
            .status()
            .unwrap();
        let data = dir.path().join("data");
        let out = as_postgres(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        );
        assert!(out.status.success(), "initdb: {:?}", out);
        let port = common::redis_server::free_port();
        let s = Server { bin, dir, port };
        s.up();
        s
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        let out = as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"],
        );
        assert!(out.status.success(), "pg_ctl start: {out:?}");
    }

    fn down(&self) {
        let out = as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", "fast", "-w", "stop"],
        );
        assert!(out.status.success(), "pg_ctl stop: {out:?}");
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = as_postgres(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}

fn intent(n: u32) -> NewIntent {
    NewIntent {
        intent_type: "alert_x".into(),
        priority: 5,
        reason: "r".into(),
        data: serde_json::json!({ "n": n }).as_object().unwrap().clone(),
        dedup_key: None,
        origin: "test".into(),
    }
}

#[test]
fn the_store_says_postgresql_is_away_and_reconnects_when_it_is_back() {
    let server = Server::start();
    let store = AnyStore::new(PgStore::open(&server.url()).unwrap());
    assert_eq!(store.health(), Ok(()));
    store.put_intent(&intent(1), 0, 0).unwrap();

    server.down();
    let why = store
        .health()
        .expect_err("degraded while PostgreSQL is away");
    assert!(
        why.contains("is PostgreSQL running and reachable?"),
        "{why}"
    );
    assert!(store.put_intent(&intent(2), 0, 0).is_err());

    server.up();
    assert_eq!(store.health(), Ok(()), "reconnected");
    store.put_intent(&intent(3), 0, 0).unwrap();
    let ns: Vec<i64> = store
        .intents(&IntentQuery::default())
        .unwrap()
        .iter()
        .map(|i| i.data["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, vec![3, 1], "the write made while away is not there");
}

const TOKEN: &str = "outage-test-token-0123456789";

/// `vigil run` as a process of its own, its log in a file; stopped (SIGTERM) when dropped.
struct Daemon {
    child: std::process::Child,
    dir: tempfile::TempDir,
    api: String,
}

/// A file source whose `disk MOUNT full` lines make `alert_disk_full` intents (one per mount),
/// a playbook that notes each alert, and a supervised unit.
const DAEMON_CONFIG: &str = r#"
host = "outage"

[api]
listen = "127.0.0.1:{port}"
token = "outage-test-token-0123456789"

[store]
url = "{url}"

[sources.app]
type = "file"
path = "{dir}/app.log"
[[sources.app.match]]
regex = 'disk (?P<mount>\S+) full'
event = "disk_full"

[rules.disk_full]
on = "disk_full"
intent = "alert_disk_full"
priority = 8
reason = "disk {mount} full"

[playbooks.note]
on = "alert_*"
steps = [{ log = "noted: {reason}" }]

[units.worker]
command = ["sleep", "600"]
"#;

impl Daemon {
    fn start(url: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let port = common::redis_server::free_port();
        let config = DAEMON_CONFIG
            .replace("{port}", &port.to_string())
            .replace("{url}", url)
            .replace("{dir}", dir.path().to_str().unwrap());
        std::fs::write(dir.path().join("vigil.toml"), config).unwrap();
        std::fs::write(dir.path().join("app.log"), "").unwrap();
        let log = std::fs::File::create(dir.path().join("vigil.log")).unwrap();
        let child = common::vigil(&dir.path().join("data"))
            .arg("run")
            .arg("--config")
            .arg(dir.path().join("vigil.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon {
            child,
            dir,
            api: format!("http://127.0.0.1:{port}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("vigil.log")).unwrap()
    }

    fn lines(&self, containing: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(containing))
            .map(String::from)
            .collect()
    }

    fn append(&self, line: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("app.log"))
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }

    /// The intent files waiting in the inbox.
    fn inbox(&self) -> Vec<serde_json::Value> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("data/inbox")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| vigil::intent::inbox::is_intent_file(&e.path()))
            .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
            .collect()
    }

    /// `/healthz`: its status code and body, or `None` while the API is not listening yet.
    async fn health(&self) -> Option<(u16, serde_json::Value)> {
        let r = reqwest::get(format!("{}/healthz", self.api)).await.ok()?;
        Some((r.status().as_u16(), r.json().await.ok()?))
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.api))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    async fn wait_health(&self, status: &str) {
        let want = status.to_string();
        common::wait_within_async(&format!("/healthz {status}"), 30, || {
            let want = want.clone();
            async move {
                self.health()
                    .await
                    .is_some_and(|(_, b)| b["status"] == want)
            }
        })
        .await;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Rows of the store's `intents` (type, status, origin, reason), or none while PostgreSQL is
/// away or vigil has not made the table yet.
fn stored(url: &str) -> Vec<String> {
    common::store::try_pg_query(
        url,
        "SELECT concat_ws(' ', status, origin, reason) FROM intents ORDER BY id",
    )
    .unwrap_or_default()
    .into_iter()
    .flatten()
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_keeps_what_it_proposes_while_postgresql_is_away_and_delivers_it_once_back() {
    let server = Server::start();
    server.down();
    let d = Daemon::start(&server.url());

    // It starts and observes; /healthz says what is wrong, without waiting for PostgreSQL.
    for _ in 0..600 {
        if d.health().await.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(d.health().await.is_some(), "no API:\n{}", d.log());
    let (code, body) = d.health().await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["status"], "degraded", "{body}");
    let why = body["store"].as_str().unwrap();
    assert!(why.contains(&server.url()), "{why}");
    assert!(why.contains("error connecting to server"), "{why}");
    common::wait_within_async("the file source attached", 30, || async {
        reqwest::get(format!("{}/readyz", d.api))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;

    // What a rule proposes now waits in the inbox, with its origin.
    d.append("disk /data full");
    common::wait_blocking("the intent kept in the inbox", 30, || d.inbox().len() == 1);
    let kept = &d.inbox()[0];
    assert_eq!(kept["intent_type"], "alert_disk_full", "{kept}");
    assert_eq!(kept["origin"], "rule:disk_full", "{kept}");
    // What the API is given too: accepted (202), not an error to retry.
    let r = reqwest::Client::new()
        .post(format!("{}/api/intents", d.api))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"intent_type": "alert_api", "priority": 5, "reason": "posted while away"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["deferred"], true, "{body}");
    assert_eq!(d.inbox().len(), 2);
    assert_eq!(d.metric("vigil_inbox_deferred_total").await, 2.0);
    assert_eq!(d.metric("vigil_store_up").await, 0.0);
    assert_eq!(d.metric("vigil_store_outages_total").await, 1.0);

    // PostgreSQL is back: the intent arrives once, and runs (gates and all) only now.
    server.up();
    common::wait_blocking("the kept intent stored and run", 60, || {
        stored(&server.url())
            == [
                "done rule:disk_full disk /data full",
                "done api posted while away",
            ]
    });
    d.wait_health("ok").await;
    assert!(d.inbox().is_empty());
    // The supervisor waited for its units' records (what the last vigil left running), then
    // started them.
    common::wait_within_async("the unit running", 30, || async {
        let units: serde_json::Value = reqwest::get(format!("{}/api/units", d.api))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        units[0]["name"] == "worker" && units[0]["state"] == "running"
    })
    .await;
    assert_eq!(d.metric("vigil_store_up").await, 1.0);
    assert_eq!(d.metric("vigil_store_outages_total").await, 1.0);
    assert!(d.metric("vigil_store_outage_seconds_total").await > 0.0);

    // PostgreSQL goes away under the running daemon: the same path.
    server.down();
    d.wait_health("degraded").await;
    d.append("disk /var full");
    common::wait_blocking("the second intent kept in the inbox", 30, || {
        d.inbox().len() == 1
    });
    server.up();
    common::wait_blocking("the second intent stored and run", 60, || {
        stored(&server.url())
            == [
                "done rule:disk_full disk /data full",
                "done api posted while away",
                "done rule:disk_full disk /var full",
            ]
    });
    d.wait_health("ok").await;
    assert_eq!(d.metric("vigil_store_outages_total").await, 2.0);
    assert_eq!(d.metric("vigil_inbox_deferred_total").await, 3.0);

    // Each outage is two lines: away with the reason, back with how long and what was kept.
    let away = d.lines("store away: ");
    assert_eq!(away.len(), 2, "{}", d.log());
    assert!(away.iter().all(|l| l.contains(&server.url())), "{away:?}");
    let back = d.lines("store back after ");
    assert_eq!(back.len(), 2, "{}", d.log());
    assert!(
        back[0].contains("intents kept in the inbox meanwhile: 2; inbox files delivered: 2"),
        "{back:?}"
    );
    assert!(
        back[1].contains("intents kept in the inbox meanwhile: 1; inbox files delivered: 1"),
        "{back:?}"
    );
    // Nothing else says it every tick: the orchestrator waited quietly.
    let errors: Vec<String> = d.lines("ERROR");
    assert_eq!(
        errors.len(),
        2,
        "only the two outages:\n{}",
        errors.join("\n")
    );
}

on_both_stores!(
    #[test]
    fn an_inbox_file_read_again_after_a_crash_is_stored_once(b) {
        let dir = tempfile::tempdir().unwrap();
        let config = match b.fresh_url() {
            Some(url) => format!("[store]\nurl = \"{url}\"\n"),
            None => String::new(),
        };
        let config = vigil::config::Config::parse("test.toml", &config).unwrap();
        let clock = vigil::clock::ManualClock::at("2026-11-30T10:00:00Z");
        let app = vigil::app::App::new(
            config,
            dir.path().join("data"),
            std::sync::Arc::new(clock.clone()),
        );
        let count = || app.store().unwrap().intents(&IntentQuery::default()).unwrap().len();
        let kept = vigil::intent::inbox::defer(&app.inbox_dir(), &intent(1), 0).unwrap();
        let bytes = std::fs::read(&kept).unwrap();
        assert_eq!(vigil::intent::inbox::drain(&app).taken, 1);
        assert_eq!(count(), 1);
        assert!(!kept.exists());

        // A crash between the store's commit and the file's removal leaves the file; the
        // daemon comes back after the dedup window (an hour): reading it again stores nothing.
        std::fs::write(&kept, &bytes).unwrap();
        clock.advance(std::time::Duration::from_secs(2 * 3600));
        assert_eq!(vigil::intent::inbox::drain(&app).taken, 1);
        assert!(!kept.exists());
        assert_eq!(count(), 1, "delivered once");

        // The same intent proposed again later is a proposal of its own.
        vigil::intent::inbox::defer(&app.inbox_dir(), &intent(1), 1).unwrap();
        assert_eq!(vigil::intent::inbox::drain(&app).taken, 1);
        assert_eq!(count(), 2);
        let stored = app.store().unwrap().intents(&IntentQuery::default()).unwrap();
        assert!(stored.iter().all(|i| i.origin == "test"), "{stored:?}");
    }
);

/// A child process killed when dropped, so a failed test leaves no daemon behind.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills the supervised unit's process group (its pid from the store at `url`) when dropped:
/// a failed test must not leave a server behind.
struct PgUnitGuard {
    url: String,
    unit: &'static str,
}

impl Drop for PgUnitGuard {
    fn drop(&mut self) {
        let sql = format!("SELECT pid FROM units WHERE name = '{}'", self.unit);
        let pid = common::store::try_pg_query(&self.url, &sql)
            .ok()
            .and_then(|rows| rows.into_iter().flatten().next())
            .and_then(|p| p.parse::<i32>().ok());
        if let Some(pid) = pid.filter(|p| *p > 1) {
            // SAFETY: kill(2) on the unit's own group (it runs in a session of its own).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
}

/// As tests/canary_restart.rs, on PostgreSQL, and the next daemon starts while it is away:
/// production, which the dead daemon left stopped, is restored once the store answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_restore_left_pending_waits_for_postgresql_and_then_restores_production() {
    use canary_support::*;
    let server = Server::start();
    let url = server.url();
    let p = Ports::pick();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let text = open_window_config(
        p,
        "prod_pg",
        dir.path(),
        &format!("[store]\nurl = \"{url}\""),
    );
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(&cfg, text).unwrap();
    let _guard = PgUnitGuard {
        url: url.clone(),
        unit: "prod_pg",
    };
    let run_daemon = |log: &str| {
        Proc(
            common::vigil(&data)
                .args(["--config", cfg.to_str().unwrap(), "run"])
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(dir.path().join(log)).unwrap())
                .spawn()
                .unwrap(),
        )
    };
    let mut first = run_daemon("first.log");
    wait_healthy(p.production, 20).await;
    let mut cli = Proc(
        common::vigil(&data)
            .args(["--config", cfg.to_str().unwrap(), "canary", "run", "judge"])
            .args(["--candidate", r#"{"flag": "--fail-health"}"#])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
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
    let pending = || {
        common::store::try_pg_query(
            &url,
            "SELECT concat_ws(' ', restore_pending, result) FROM canary_runs",
        )
        .unwrap_or_default()
    };
    assert_eq!(pending(), [Some("t".to_string())], "the pending restore");

    // The next daemon starts while PostgreSQL is away: it cannot know what to restore yet.
    server.down();
    let mut second = run_daemon("second.log");
    let log = || std::fs::read_to_string(dir.path().join("second.log")).unwrap();
    common::wait_within_msg(&log, 30, || log().contains("vigil running")).await;
    assert!(
        !listening(p.production),
        "nothing to act on without the store"
    );

    server.up();
    common::wait_within_msg(&log, 60, || pending() == [Some("f failed".to_string())]).await;
    assert!(healthy(p.production).await, "restored and healthy");
    assert!(
        !listening(p.first),
        "the dead daemon's candidate was killed"
    );
    // A clean stop (the unit is left running for the next daemon: the guard stops it).
    unsafe { libc::kill(second.0.id() as i32, libc::SIGTERM) };
    second.0.wait().unwrap();
}
