//! `vigil run --dry-run` changes nothing: over a pending intent whose playbook would record a
//! symptom, and events whose rule would propose intents and record the symptom that arms the
//! flag, the store's symptoms, flags, intents, runs, locks and audit trail are the same after
//! the dry run as before, and no audit file is written.

mod common;

use serde_json::json;
use std::sync::Arc;
use vigil::app::App;
use vigil::clock::{Clock, ManualClock};
use vigil::config::Config;
use vigil::escalation::SymptomPolicy;
use vigil::intent::NewIntent;
use vigil::store::prelude::*;
use vigil::store::{IntentQuery, SqliteStore};

const CONFIG: &str = r#"
[escalation]
threshold = 3
window = "24h"
flag_ttl = "4h"

[rules.gpu_oom]
on = "gpu_oom"
intent = "alert_gpu_oom"
priority = 9
symptom = "vllm_oom"

[playbooks.vllm_oom]
on = "alert_gpu_oom"
steps = [{ symptom = "vllm_oom" }, { run = ["touch", "{dir}/ran"] }]
"#;

/// Everything a dry run must leave as it was.
fn state(store: &SqliteStore) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        store.symptoms(None, i64::MIN, 100_000).unwrap(),
        store.flags().unwrap(),
        store.intents(&IntentQuery::default()).unwrap(),
        store.audit_tail(100_000).unwrap(),
        store.runs(None, i64::MIN, false).unwrap(),
        store.locks().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_leaves_the_store_as_it_was() {
    let clock = ManualClock::at("2026-11-23T08:30:00Z");
    let dir = tempfile::tempdir().unwrap();
    let before = {
        // Two symptoms already: the next one arms the flag. An intent is pending.
        let store = SqliteStore::open_dir(&dir.path().join("data")).unwrap();
        let policy = SymptomPolicy {
            window_ms: 24 * 3_600_000,
            threshold: 3,
            ttl_ms: 4 * 3_600_000,
            scope: Default::default(),
        };
        for _ in 0..2 {
            store
                .record_symptom("vllm_oom", &Default::default(), clock.now_ms(), policy)
                .unwrap();
        }
        let intent = NewIntent {
            intent_type: "alert_gpu_oom".into(),
            priority: 9,
            reason: "pending before the dry run".into(),
            data: Default::default(),
            dedup_key: None,
            origin: "test".into(),
        };
        store.put_intent(&intent, clock.now_ms(), 0).unwrap();
        state(&store)
    };
    // The daemon in-process on our own dir (which must outlive it: the store is read after).
    let data = dir.path().join("data");
    let text = format!(
        "[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"t\"\n{}",
        CONFIG.replace("{dir}", dir.path().to_str().unwrap())
    );
    let config = Config::parse("test.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    let app = Arc::new(App::new(config, data.clone(), Arc::new(clock.clone())));
    let opts = vigil::daemon::Options {
        dry_run: true,
        ..Default::default()
    };
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let daemon = tokio::spawn(vigil::daemon::run(app.clone(), opts, stopping));
    common::wait_until("the API", &mut || app.api_addr.get().is_some()).await;
    let url = format!("http://{}/api/events", app.api_addr.get().unwrap());
    for alloc in ["2.5", "3.0", "3.5"] {
        let r = reqwest::Client::new()
            .post(&url)
            .bearer_auth("t")
            .json(&json!({"type": "gpu_oom", "data": { "alloc_gib": alloc }}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    common::wait_until("the events", &mut || {
        app.metrics.events_total.total() >= 3.0
    })
    .await;
    // Stopping drains the pipeline: every event has been through the rules by then.
    stop.send(true).unwrap();
    daemon.await.unwrap().unwrap();

    let store = SqliteStore::open_dir(&data).unwrap();
    assert_eq!(state(&store), before);
    assert!(
        !data.join("audit").exists(),
        "no audit file: {:?}",
        std::fs::read_dir(data.join("audit")).map(|d| d.count())
    );
    assert!(!dir.path().join("ran").exists(), "no step ran");
}
