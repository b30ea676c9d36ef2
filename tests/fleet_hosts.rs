//! Hosts sharing one PostgreSQL store: an intent belongs to the host that proposed it unless
//! its data names another host or any (`"*"`); each host claims only what it may run; runs,
//! audit entries and source states carry their host; the fleet view lists every host.

mod common;

use common::env::*;
use vigil::intent::IntentStatus;
use vigil::sources::SourceState;
use vigil::store::prelude::*;
use vigil::store::Scope;

const PLAYBOOK: &str = r#"
[playbooks.restart]
on = "trigger_*"
steps = [{ log = "restarting on this host" }]
"#;

#[tokio::test]
async fn each_host_runs_its_own_intents_and_the_named_ones() {
    let a = Env::on(Backend::Postgres, "", IN_WINDOW).join("a", &format!("{BASE}{PLAYBOOK}"));
    let b = a.join("b", &format!("{BASE}{PLAYBOOK}"));
    let mine = a.submit("trigger_restart", 1);
    let for_b = a.submit_data("trigger_restart", serde_json::json!({"n": 2, "host": "b"}));
    let for_any = a.submit_data("trigger_restart", serde_json::json!({"n": 3, "host": "*"}));

    let hosts: Vec<String> = [mine, for_b, for_any]
        .iter()
        .map(|i| a.intent(*i).host)
        .collect();
    assert_eq!(hosts, ["a", "b", "*"]);
    let (code, out, err) = common::out(
        common::vigil(a.app.data_dir())
            .env("VIGIL_STORE_URL", a.store_url.as_ref().unwrap())
            .args(["intents", "list"]),
    );
    assert_eq!(code, 0, "{err}");
    let header = out.lines().next().unwrap();
    assert!(
        header.contains("CREATED                   HOST         TYPE"),
        "{out}"
    );
    assert!(out.contains("Z  b            trigger_restart"), "{out}");

    // b runs what names it and what any host may run; a's own intent waits for a.
    b.orchestrator().drain().await.unwrap();
    b.assert_status(for_b, IntentStatus::Done);
    b.assert_status(for_any, IntentStatus::Done);
    a.assert_status(mine, IntentStatus::Pending);
    a.orchestrator().drain().await.unwrap();
    a.assert_status(mine, IntentStatus::Done);

    let url = a.store_url.clone().unwrap();
    let hosts = common::store::pg_query(&url, "SELECT host FROM runs ORDER BY intent_id");
    let by_intent: Vec<Option<String>> = hosts;
    let mut want = [(mine, "a"), (for_b, "b"), (for_any, "b")];
    want.sort();
    assert_eq!(
        by_intent,
        want.iter()
            .map(|(_, h)| Some(h.to_string()))
            .collect::<Vec<_>>()
    );
    let audit_hosts =
        common::store::pg_query(&url, "SELECT DISTINCT host FROM audit ORDER BY host");
    assert_eq!(
        audit_hosts,
        vec![Some("a".to_string()), Some("b".to_string())]
    );
}

#[test]
fn the_fleet_view_lists_every_host_with_its_sources_down_and_runs_in_flight() {
    let a = Env::on(Backend::Postgres, "", IN_WINDOW).join("a", BASE);
    let b = a.join("b", BASE);
    let (sa, sb) = (a.app.store().unwrap(), b.app.store().unwrap());
    let state = |source: &str, up: bool| SourceState {
        source: source.into(),
        kind: "file".into(),
        up,
        reason: (!up).then(|| "gone".into()),
        since_ms: 0,
    };
    sa.put_source_states(&[state("log", true), state("gpu", false)])
        .unwrap();
    sb.put_source_states(&[state("log", false)]).unwrap();
    // Each host's own states are its own: b's write did not replace a's.
    assert_eq!(sa.source_states().unwrap().len(), 2);
    assert_eq!(sb.source_states().unwrap().len(), 1);
    // The orchestrators' heartbeats.
    sa.renew_leases("a:1:0", 30_000, 1_000).unwrap();
    sb.renew_leases("b:1:0", 30_000, 2_000).unwrap();
    let id = b.submit("trigger_restart", 1);
    let claim = sb.claim_intent("b:1:0", 30_000, 3_600_000, 2_000).unwrap();
    assert_eq!(claim.map(|c| c.intent.id), Some(id));
    let req = vigil::store::RunRequest {
        intent_id: id,
        playbook: "restart".into(),
        mode: "default".into(),
        holder: format!("b:1:0/{id}"),
        cooldown_ms: None,
        cooldown_scope: Scope::Host,
        max_runs: None,
        max_runs_scope: Scope::Host,
        lock: None,
        lock_scope: Scope::Host,
        lease_ms: 30_000,
        budget: None,
        lease: None,
    };
    sb.begin_run(&req, 2_000, true).unwrap().unwrap();

    let fleet = sa.fleet().unwrap();
    let view: Vec<(&str, Option<i64>, Vec<&str>, u64)> = fleet
        .iter()
        .map(|h| {
            (
                h.host.as_str(),
                h.last_seen_ms,
                h.sources_down.iter().map(String::as_str).collect(),
                h.runs_in_flight,
            )
        })
        .collect();
    assert_eq!(
        view,
        vec![
            ("a", Some(1_000), vec!["gpu"], 0),
            ("b", Some(2_000), vec!["log"], 1)
        ]
    );
    assert_eq!(sa.host(), "a");
}

#[test]
fn an_operator_releases_the_lock_of_a_dead_host_and_it_is_audited() {
    let a = Env::on(Backend::Postgres, "", IN_WINDOW).join("a", BASE);
    let store = a.app.store().unwrap();
    // Host a took the fleet lock and died: its lease would run for an hour more.
    assert!(store
        .acquire_lock("rolling", Scope::Fleet, "a:1:0/7", 3_600_000, 0)
        .unwrap()
        .is_ok());
    store.renew_leases("a:1:0", 3_600_000, 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "host = \"ops\"\n[store]\nurl = \"{}\"\n",
            a.store_url.as_ref().unwrap()
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        common::out(
            common::vigil(&dir.path().join("data"))
                .env_remove("VIGIL_STORE_URL")
                .arg("--config")
                .arg(&config)
                .args(args),
        )
    };
    let (code, out, err) = cli(&["locks", "--json"]);
    assert_eq!(code, 0, "{err}");
    let locks: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(locks[0]["holder"], "a:1:0/7");

    let (code, out, err) = cli(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["host"], "ops");
    assert_eq!(status["fleet"][0]["host"], "a");

    let (code, out, err) = cli(&["locks", "release", "rolling"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("held by a:1:0/7"), "{out}");
    assert!(store.locks().unwrap().is_empty());
    let (code, _, err) = cli(&["locks", "release", "rolling"]);
    assert_eq!(code, 1, "nothing to release");
    assert!(err.contains("no lock \"rolling\""), "{err}");
    let tail = store.audit_tail(1).unwrap();
    assert_eq!(tail[0].event, "lock_released");
    assert_eq!(tail[0].details["holder"], "a:1:0/7");
}

#[test]
fn an_operator_settles_the_run_of_a_host_that_will_not_return() {
    let a = Env::on(Backend::Postgres, "", IN_WINDOW).join("a", BASE);
    let ops = a.join("ops", BASE);
    let store = a.app.store().unwrap();
    // Host a started a run under the fleet lock with 25 s of the fleet budget, and died.
    let id = a.submit("trigger_restart", 1);
    store
        .claim_intent("a:1:0", 30_000, 3_600_000, 0)
        .unwrap()
        .unwrap();
    let req = vigil::store::RunRequest {
        intent_id: id,
        playbook: "restart".into(),
        mode: "canary".into(),
        holder: format!("a:1:0/{id}"),
        cooldown_ms: None,
        cooldown_scope: Scope::Host,
        max_runs: None,
        max_runs_scope: Scope::Host,
        lock: Some("rolling".into()),
        lock_scope: Scope::Fleet,
        lease_ms: 30_000,
        budget: Some(vigil::store::BudgetRequest {
            name: "gpu_downtime".into(),
            day: "2026-11-23".into(),
            limit_ms: 60_000,
            want_ms: 25_000,
            scope: Scope::Fleet,
        }),
        lease: None,
    };
    let run = store.begin_run(&req, 0, true).unwrap().unwrap();
    let cli = |args: &[&str]| {
        common::out(
            common::vigil(ops.app.data_dir())
                .env("VIGIL_STORE_URL", a.store_url.as_ref().unwrap())
                .args(args),
        )
    };
    let (code, out, err) = cli(&["runs"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("run {:<6} restart", run.id))
            && out.contains("host a ")
            && out.contains("25 s of gpu_downtime reserved, lock rolling"),
        "{out}"
    );
    let (code, out, err) = cli(&["locks"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rolling              fleet"), "{out}");

    let (code, out, err) = cli(&["runs", "settle", &run.id.to_string(), "--downtime", "12s"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("12 s charged"), "{out}");
    assert!(store.locks().unwrap().is_empty(), "the lock is freed");
    let usage = ops
        .app
        .store()
        .unwrap()
        .budget_usage("gpu_downtime", "2026-11-23")
        .unwrap();
    assert_eq!((usage.used_ms, usage.reserved_ms), (12_000, 0));
    assert_eq!(a.status(id), IntentStatus::Failed);
    let tail = store.audit_tail(1).unwrap();
    assert_eq!(
        (
            tail[0].event.as_str(),
            tail[0].details["host"].as_str(),
            tail[0].details["by"].as_str()
        ),
        ("run_settled", Some("a"), Some("operator"))
    );
    // Twice is refused, saying why.
    let (code, _, err) = cli(&["runs", "settle", &run.id.to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("has ended already"), "{err}");
}

#[test]
fn escalation_status_counts_the_symptoms_of_the_scope() {
    let a = Env::on(Backend::Postgres, "", IN_WINDOW).join("a", BASE);
    let b = a.join("b", BASE);
    for _ in 0..2 {
        vigil::escalation::record(&a.app, "vllm_oom", Default::default()).unwrap();
    }
    vigil::escalation::record(&b.app, "vllm_oom", Default::default()).unwrap();
    let count = |e: &Env| vigil::escalation::status(&e.app).unwrap()[0].symptom_count;
    // Host scope (BASE): each host counts its own; b's next one would be its second.
    assert_eq!((count(&a), count(&b)), (2, 1));
    assert_eq!(vigil::escalation::preview(&b.app, "vllm_oom").unwrap().0, 2);
    // Fleet scope: all three count, and the next one anywhere arms the flag.
    let fleet = BASE.replace("flag_ttl = \"4h\"", "flag_ttl = \"4h\"\nscope = \"fleet\"");
    let c = a.join("c", &fleet);
    assert_eq!(count(&c), 3);
    let (n, flag) = vigil::escalation::preview(&c.app, "vllm_oom").unwrap();
    assert_eq!((n, flag.is_some()), (4, true));
}
