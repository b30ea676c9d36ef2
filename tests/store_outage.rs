//! PostgreSQL going away under a store and coming back, on a server this test starts and stops
//! itself (initdb and pg_ctl from the packaged PostgreSQL, run as the postgres user): the
//! health check says degraded with the reason while it is away, writes fail with an error
//! (nothing is half-written), and the store reconnects by itself when it is back.

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
