//! The sql collector against a real PostgreSQL server started by the test (initdb + pg_ctl from
//! /usr/lib/postgresql/*/bin on a free port in a temp dir). Skipped, with a message, only when
//! those binaries are absent.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use vigil::clock::ManualClock;
use vigil::config::Config;
use vigil::invariants::Harness;
use vigil::store::SqliteStore;

fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

/// Runs a PostgreSQL program as the `postgres` user when we are root (initdb refuses root).
fn pg(bin: &Path, prog: &str, args: &[&str]) -> std::process::Output {
    let exe = bin.join(prog);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut c = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let out = c.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct Server {
    bin: PathBuf,
    data: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            pg(
                &self.bin,
                "pg_ctl",
                &["-D", &self.data, "-m", "immediate", "stop"],
            )
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_collector_reads_postgres() {
    let Some(bin) = pg_bin() else {
        eprintln!("SKIPPED: no initdb/pg_ctl under /usr/lib/postgresql/*/bin; install postgresql to run this test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The postgres user must be able to write there.
    Command::new("chmod")
        .arg("777")
        .arg(dir.path())
        .status()
        .unwrap();
    let data = dir.path().join("pg").display().to_string();
    let sock = dir.path().display().to_string();
    pg(
        &bin,
        "initdb",
        &["-D", &data, "-U", "vigil", "--auth=trust", "-E", "UTF8"],
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opts = format!("-p {port} -k {sock} -h 127.0.0.1");
    let log = format!("{sock}/pg.log");
    pg(
        &bin,
        "pg_ctl",
        &["-D", &data, "-o", &opts, "-l", &log, "-w", "start"],
    );
    let _server = Server {
        bin: bin.clone(),
        data: data.clone(),
    };
    let url = format!("postgres://vigil@127.0.0.1:{port}/postgres");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "CREATE TABLE agents (name text, max_parallel_tasks int, weight numeric);
             INSERT INTO agents VALUES ('a1', 2, 1.5), ('a2', 1, NULL);",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let text = format!(
        r#"
[snapshot.pg]
type = "sql"
url = "{url}"
tables = {{ agents = "SELECT name, max_parallel_tasks, weight FROM agents" }}

[invariants.P-01]
name = "Agents with more than one slot"
severity = "minor"
query = "SELECT name, max_parallel_tasks, weight FROM agents WHERE max_parallel_tasks > 1"
"#
    );
    let config = Config::parse("pg.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    let h = Harness::new(
        Arc::new(config.invariants),
        Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap()),
        Arc::new(ManualClock::at("2026-01-15T10:00:00Z")),
        Arc::default(),
    );
    let r = h.run_cycle(None).await.unwrap();
    assert!(r.sources_unavailable.is_empty(), "{r:?}");
    assert_eq!(r.violations.len(), 1, "{r:?}");
    let v = &r.violations[0].observed_state;
    assert_eq!(v["name"], "a1");
    assert_eq!(v["max_parallel_tasks"], 2, "integers stay integers: {v:?}");
    assert_eq!(v["weight"], 1.5);

    // A server that is gone is a source unavailable, not a violation.
    drop(_server);
    let r = h.run_cycle(None).await.unwrap();
    assert!(r.violations.is_empty(), "{r:?}");
    assert_eq!(r.sources_unavailable[0].source, "pg");
    assert!(!r.sources_unavailable[0].error.is_empty());
}
