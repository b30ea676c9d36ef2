//! `vigil store migrate`: a store with intents, runs, budgets, symptoms, flags, file source
//! checkpoints and an audit trail copied from SQLite into PostgreSQL and back, verified by
//! counts and checksums, and the copy goes on working (new rows take new ids, a file source
//! resumes where it was).

mod common;

use common::env::*;
use common::store::{fresh_postgres_url, open_postgres};
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use vigil::intent::NewIntent;
use vigil::sources::file::{FileConfig, FileSource};
use vigil::store::migrate::{self, Side};
use vigil::store::prelude::*;
use vigil::store::{Checkpoint, FilePosition, IntentQuery, SqliteStore};

const PLAYBOOK: &str = r#"
[playbooks.tune]
on = "alert_*"
window = "maintenance"
budget = "gpu_downtime"
steps = [{ log = "tuning" }]
"#;

fn migrate(data: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    common::out(
        common::vigil(data)
            .env_remove("VIGIL_STORE_URL")
            .args(["store", "migrate", "--json"])
            .args(args),
    )
}

#[tokio::test]
async fn a_store_copied_into_postgresql_and_back_is_the_same_store() {
    let env = Env::new(&format!("{BASE}{PLAYBOOK}"), IN_WINDOW);
    for n in 0..5 {
        env.submit("alert_gpu_oom", n);
    }
    env.orchestrator().drain().await.unwrap();
    for n in 0..3 {
        vigil::escalation::record(
            &env.app,
            "vllm_oom",
            serde_json::json!({ "n": n }).as_object().unwrap().clone(),
        )
        .unwrap();
    }
    let data = env.app.data_dir().to_path_buf();
    let checkpoints = checkpoints();
    for (source, path, c) in &checkpoints {
        SqliteStore::open_dir(&data)
            .unwrap()
            .save_checkpoint(source, path, c)
            .unwrap();
    }
    let source = migrate::summary(&Side::Sqlite(&SqliteStore::open_dir(&data).unwrap())).unwrap();
    let rows = |t: &str| source.iter().find(|c| c.table == t).unwrap().rows;
    assert_eq!(rows("intents"), 5);
    assert_eq!(rows("runs"), 5);
    assert!(rows("audit") >= 10 && rows("symptoms") == 3 && rows("escalation_flags") == 1);
    assert_eq!(rows("source_checkpoints"), 2);

    let url = fresh_postgres_url();
    let (code, stdout, stderr) = migrate(&data, &["--to", &url]);
    assert_eq!(code, 0, "{stderr}");
    let copied: Vec<migrate::TableCopy> = serde_json::from_str::<Vec<Value>>(&stdout)
        .unwrap()
        .into_iter()
        .map(|v| migrate::TableCopy {
            table: v["table"].as_str().unwrap().into(),
            rows: v["rows"].as_u64().unwrap(),
            checksum: v["checksum"].as_str().unwrap().into(),
        })
        .collect();
    assert_eq!(copied, source, "every table, same rows, same checksums");

    let pg = open_postgres(&url);
    assert_eq!(
        migrate::summary(&Side::Postgres(&pg)).unwrap(),
        source,
        "read again from PostgreSQL"
    );
    let sqlite = SqliteStore::open_dir(&data).unwrap();
    assert_eq!(
        pg.intents(&IntentQuery::default()).unwrap(),
        sqlite.intents(&IntentQuery::default()).unwrap()
    );
    assert_eq!(
        pg.budget_usage("gpu_downtime", "2026-11-23").unwrap(),
        sqlite.budget_usage("gpu_downtime", "2026-11-23").unwrap()
    );
    for (source, path, c) in &checkpoints {
        assert_eq!(
            pg.checkpoint(source, path).unwrap().as_ref(),
            Some(c),
            "{path}"
        );
    }
    // Every table of the schema is copied (a table a migration adds and the copier does not
    // list would be left behind without a word).
    let mut tables: Vec<String> = common::store::pg_query(
        &url,
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_name <> 'vigil_schema'",
    )
    .into_iter()
    .flatten()
    .collect();
    let mut copied: Vec<String> = source.iter().map(|t| t.table.clone()).collect();
    tables.sort();
    copied.sort();
    assert_eq!(copied, tables);

    // Into a store that holds rows: refused, nothing written.
    let (code, _, stderr) = migrate(&data, &["--to", &url]);
    assert_eq!(code, 1);
    assert!(stderr.contains("not empty"), "{stderr}");
    assert_eq!(migrate::summary(&Side::Postgres(&pg)).unwrap(), source);

    // The copy goes on: a new intent takes an id after the copied ones.
    let next = NewIntent {
        intent_type: "alert_new".into(),
        priority: 5,
        reason: "after the move".into(),
        data: Default::default(),
        dedup_key: None,
        origin: "test".into(),
    };
    let max = pg
        .intents(&IntentQuery::default())
        .unwrap()
        .iter()
        .map(|i| i.id)
        .max()
        .unwrap();
    assert!(pg.put_intent(&next, 0, 0).unwrap().id() > max);

    // And back into a new SQLite store.
    let back = tempfile::tempdir().unwrap();
    let (code, _, stderr) = migrate(back.path(), &["--from", &url]);
    assert_eq!(code, 0, "{stderr}");
    let returned =
        migrate::summary(&Side::Sqlite(&SqliteStore::open_dir(back.path()).unwrap())).unwrap();
    assert_eq!(returned, migrate::summary(&Side::Postgres(&pg)).unwrap());
    assert_eq!(
        returned.iter().find(|t| t.table == "intents").unwrap().rows,
        6
    );
    let back = SqliteStore::open_dir(back.path()).unwrap();
    for (source, path, c) in &checkpoints {
        assert_eq!(
            back.checkpoint(source, path).unwrap().as_ref(),
            Some(c),
            "{path}"
        );
    }
}

/// Two checkpoints whose every column counts: inodes past `i64::MAX` (kept as negative
/// BIGINTs), fingerprints with bytes that are not UTF-8, a rotated file and none.
fn checkpoints() -> Vec<(&'static str, &'static str, Checkpoint)> {
    let pos = |ino: u64, fill: u8, offset: u64| FilePosition {
        dev: 2049,
        ino,
        head_sha256: std::array::from_fn(|i| fill.wrapping_add((i as u8).wrapping_mul(37))),
        head_len: 1024,
        offset,
    };
    vec![
        (
            "vllm_log",
            "/var/log/vllm/server.log",
            Checkpoint {
                file: pos(u64::MAX - 6, 0xff, 123_456_789_012),
                rotated: Some(pos(1 << 63, 0x00, 77)),
                saved_ms: 1_764_000_000_000,
            },
        ),
        (
            "vllm_log",
            "/var/log/vllm/other.log",
            Checkpoint {
                file: pos(42, 0x80, 0),
                rotated: None,
                saved_ms: 1_764_000_000_001,
            },
        ),
    ]
}

fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "request failed code={line}").unwrap();
}

/// The file source "log" on `log` with `store`, under the real supervisor, as the daemon runs
/// it (its events come to the test).
struct FileRun(common::RunningSource);

impl FileRun {
    async fn start(store: Arc<dyn SourceStore>, log: &Path) -> FileRun {
        let config: FileConfig = toml::from_str(&format!(
            "path = {:?}\n[[match]]\nregex = 'code=(?P<code>[0-9]+)'\nevent = \"failed\"\n",
            log.to_str().unwrap()
        ))
        .unwrap();
        FileRun(
            common::RunningSource::start_with_store(
                "log",
                store,
                Box::new(FileSource::new(config)),
            )
            .await,
        )
    }

    async fn next(&mut self) -> String {
        code(&self.0.next().await)
    }

    /// Stops the source (its last checkpoint is saved then); the events it sent that the
    /// test had not taken.
    async fn stop(self) -> Vec<String> {
        self.0.stop_and_take().await.iter().map(code).collect()
    }
}

fn code(ev: &vigil::event::Event) -> String {
    ev.data["code"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_file_source_resumes_where_it_was_on_the_migrated_store_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log) = (dir.path().join("data"), dir.path().join("server.log"));
    append(&log, "1");
    let sqlite: Arc<dyn SourceStore> = Arc::new(SqliteStore::open_dir(&data).unwrap());
    let mut run = FileRun::start(sqlite.clone(), &log).await;
    append(&log, "2");
    assert_eq!(run.next().await, "2", "a first start skips what was there");
    assert!(run.stop().await.is_empty());
    drop(sqlite);

    // Written while vigil is stopped and its store moves: read from the checkpoint, once. A
    // store without it would start at the end of the file and never see these lines.
    append(&log, "3");
    let url = fresh_postgres_url();
    let (code, _, stderr) = migrate(&data, &["--to", &url]);
    assert_eq!(code, 0, "{stderr}");
    let mut run = FileRun::start(Arc::new(open_postgres(&url)), &log).await;
    assert_eq!(run.next().await, "3", "resumed on PostgreSQL");
    append(&log, "4");
    assert_eq!(run.next().await, "4");
    assert!(run.stop().await.is_empty(), "nothing twice");

    append(&log, "5");
    let back = tempfile::tempdir().unwrap();
    let (code, _, stderr) = migrate(back.path(), &["--from", &url]);
    assert_eq!(code, 0, "{stderr}");
    let mut run = FileRun::start(Arc::new(SqliteStore::open_dir(back.path()).unwrap()), &log).await;
    assert_eq!(run.next().await, "5", "resumed on the SQLite copy");
    assert!(run.stop().await.is_empty(), "nothing twice");
}
