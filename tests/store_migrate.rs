//! `vigil store migrate`: a store with intents, runs, budgets, symptoms, flags and an audit
//! trail copied from SQLite into PostgreSQL and back, verified by counts and checksums, and
//! the copy goes on working (new rows take new ids).

mod common;

use common::env::*;
use common::store::{fresh_postgres_url, open_postgres};
use serde_json::Value;
use vigil::intent::NewIntent;
use vigil::store::migrate::{self, Side};
use vigil::store::prelude::*;
use vigil::store::{IntentQuery, SqliteStore};

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
    let source = migrate::summary(&Side::Sqlite(&SqliteStore::open_dir(&data).unwrap())).unwrap();
    let rows = |t: &str| source.iter().find(|c| c.table == t).unwrap().rows;
    assert_eq!(rows("intents"), 5);
    assert_eq!(rows("runs"), 5);
    assert!(rows("audit") >= 10 && rows("symptoms") == 3 && rows("escalation_flags") == 1);

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
}
