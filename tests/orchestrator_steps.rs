//! Steps against real processes and a real HTTP server: templates fill whole argv elements,
//! a hanging step is killed at its timeout and on_failure restores production, a restore that
//! fails is `restore_failed` with an alert, webhooks POST JSON; intents end in one state each.

mod common;

use common::env::*;
use serde_json::json;
use std::io::{Read, Write};
use vigil::clock::Clock;
use vigil::intent::IntentStatus;
use vigil::store::prelude::*;
use vigil::store::IntentQuery;

const CANARY: &str = r#"
[playbooks.canary]
on = "trigger_canary"
budget = "gpu_downtime"
lock = "gpu0"
expected_downtime = "20s"
steps = [
  { systemd = "stop", unit = "judge.service", downtime = true },
  { run = ["sh", "-c", "echo $$ > {dir}/hang.pid; exec sleep 60"], timeout = "1s" },
  { systemd = "start", unit = "judge.service", restore = true },
]
on_failure = [
  { systemd = "start", unit = "judge.service", restore = true },
  { log = "restored after {reason}" },
]
"#;

#[tokio::test]
async fn a_hanging_step_is_killed_at_its_timeout_and_on_failure_restores() {
    let env = Env::new(&format!("{BASE}{CANARY}"), IN_WINDOW);
    let id = env.submit("trigger_canary", 1);
    env.orchestrator().drain().await.unwrap();
    let i = env.intent(id);
    assert_eq!(i.status, IntentStatus::Failed, "{:?}", i.note);
    let note = i.note.unwrap();
    assert!(note.contains("step 2 (run"), "{note}");
    assert!(note.contains("timed out after"), "{note}");
    // The hung process (and its group) is gone.
    let pid: i32 = std::fs::read_to_string(env.path("hang.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "sleep {pid} still running"
    );
    // Production was stopped once and brought back by on_failure, not by the skipped step 3.
    assert_eq!(
        env.systemctl_log(),
        "stop judge.service\nstart judge.service\n"
    );
    let events = env.audit_events();
    for e in [
        "playbook_start",
        "downtime_start",
        "step_failed",
        "restored",
        "playbook_end",
    ] {
        assert!(events.contains(&e.to_string()), "{e} in {events:?}");
    }
    // Budget settled (the manual clock did not move: no downtime charged), lock released.
    let store = env.app.store().unwrap();
    let u = store.budget_usage("gpu_downtime", "2026-11-23").unwrap();
    assert_eq!((u.used_ms, u.reserved_ms), (0, 0));
    assert!(store.locks().unwrap().is_empty());
    assert_eq!(
        env.app
            .metrics
            .playbook_runs_total
            .get(&["canary", "failed", "default"]),
        1.0
    );
}

#[tokio::test]
async fn a_restore_that_fails_is_restore_failed_and_raises_an_alert() {
    let env = Env::new(&format!("{BASE}{CANARY}"), IN_WINDOW);
    fake_systemctl(env.dir.path(), false);
    let id = env.submit("trigger_canary", 1);
    let orch = env.orchestrator();
    orch.drain().await.unwrap();
    let i = env.intent(id);
    assert_eq!(i.status, IntentStatus::RestoreFailed, "{:?}", i.note);
    assert!(i.note.unwrap().contains("production was not restored"));
    assert_eq!(env.app.metrics.restore_failures_total.get(&["canary"]), 1.0);
    let alerts = env
        .app
        .store()
        .unwrap()
        .intents(&IntentQuery {
            intent_type: Some("alert_restore_failed".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].priority, 10);
    assert_eq!(alerts[0].data["playbook"], "canary");
    // The alert itself has no playbook here: it ends unmatched, never lost.
    assert_eq!(alerts[0].status, IntentStatus::Unmatched);
}

const TEMPLATES: &str = r#"
[playbooks.fit]
on = "alert_gpu_*"
steps = [
  { run = ["{dir}/args", "--alloc", "{data.alloc_gib}", "--mode={mode}", "{reason}"] },
]
"#;

#[tokio::test]
async fn templates_fill_whole_arguments_and_never_reach_a_shell() {
    let env = Env::new(&format!("{BASE}{TEMPLATES}"), IN_WINDOW);
    let out = env.path("args.out");
    script(
        &env.path("args"),
        &format!(
            "for a in \"$@\"; do echo \"[$a]\" >> {}; done",
            out.display()
        ),
    );
    let id = env.submit_data(
        "alert_gpu_oom",
        json!({"alloc_gib": "2.5; touch /tmp/pwned"}),
    );
    env.orchestrator().drain().await.unwrap();
    env.assert_status(id, IntentStatus::Done);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "[--alloc]\n[2.5; touch /tmp/pwned]\n[--mode=default]\n[test alert_gpu_oom]\n"
    );

    // A missing data field fails the step with the field's name.
    let id = env.submit_data("alert_gpu_hot", json!({"temp": 90}));
    env.orchestrator().drain().await.unwrap();
    let i = env.intent(id);
    assert_eq!(i.status, IntentStatus::Failed);
    assert!(i.note.unwrap().contains("has no data field \"alloc_gib\""));
}

#[tokio::test]
async fn a_webhook_posts_json_with_templates() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // Read headers, then as many body bytes as Content-Length says.
        loop {
            let n = conn.read(&mut chunk).unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .unwrap();
                    return text;
                }
            }
        }
    });
    let config = format!(
        "{BASE}\n[playbooks.notify]\non = \"alert_*\"\nsteps = [{{ webhook = \"http://127.0.0.1:{port}/hook\", body = {{ text = \"{{reason}}\", mode = \"{{mode}}\" }} }}]\n"
    );
    let env = Env::new(&config, IN_WINDOW);
    let id = env.submit("alert_disk_full", 1);
    env.orchestrator().drain().await.unwrap();
    env.assert_status(id, IntentStatus::Done);
    let request = server.join().unwrap();
    assert!(request.starts_with("POST /hook "), "{request}");
    let body = request.split("\r\n\r\n").nth(1).unwrap();
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body,
        json!({"text": "test alert_disk_full", "mode": "default"})
    );
}

#[tokio::test]
async fn every_intent_ends_in_one_state_highest_priority_first() {
    let config = format!(
        "{BASE}\n[playbooks.log]\non = \"trigger_*\"\nsteps = [{{ log = \"ran {{intent}}\" }}]\n"
    );
    let env = Env::new(&config, IN_WINDOW);
    let store = env.app.store().unwrap();
    let low = env.submit("trigger_low", 1);
    let mut hi = vigil::intent::NewIntent {
        intent_type: "trigger_high".into(),
        priority: 10,
        reason: "urgent".into(),
        data: Default::default(),
        dedup_key: None,
        origin: "test".into(),
    };
    let high = vigil::intent::queue::submit(&env.app, &hi).unwrap().id();
    hi.intent_type = "nobody_handles_this".into();
    let unmatched = vigil::intent::queue::submit(&env.app, &hi).unwrap().id();
    env.advance_h(0.5);
    let claimed = store
        .claim_intent("x", 30_000, 3_600_000, env.clock.now_ms())
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, high, "priority first");
    store
        .set_intent_status(high, IntentStatus::Pending, None, env.clock.now_ms())
        .unwrap();
    env.advance_h(1.0); // past the 1h intent_ttl for all three
    let fresh = env.submit("trigger_low", 2);
    env.orchestrator().drain().await.unwrap();
    assert_eq!(env.status(high), IntentStatus::Expired);
    assert_eq!(env.status(low), IntentStatus::Expired);
    assert_eq!(env.status(unmatched), IntentStatus::Expired);
    assert_eq!(env.status(fresh), IntentStatus::Done);
    let id = {
        hi.reason = "again".into();
        vigil::intent::queue::submit(&env.app, &hi).unwrap().id()
    };
    env.orchestrator().drain().await.unwrap();
    assert_eq!(env.status(id), IntentStatus::Unmatched);
    let counts = store.intent_counts().unwrap();
    assert!(counts.iter().all(|(s, _)| s.is_finished()), "{counts:?}");
}

#[tokio::test]
async fn an_intent_claimed_by_a_dead_holder_before_it_ran_is_resumed() {
    let config =
        format!("{BASE}\n[playbooks.log]\non = \"trigger_*\"\nsteps = [{{ log = \"ran\" }}]\n");
    let env = Env::new(&config, IN_WINDOW);
    let id = env.submit("trigger_x", 1);
    let store = env.app.store().unwrap();
    // Another vigil claimed it and vanished before deciding anything.
    let claimed = store
        .claim_intent("otherhost:1:0", 30_000, 3_600_000, env.clock.now_ms())
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, id);
    let orch = env.orchestrator();
    assert_eq!(orch.recover().await.unwrap(), 0, "its lease is still valid");
    env.clock.advance(std::time::Duration::from_secs(31));
    assert_eq!(orch.recover().await.unwrap(), 1);
    assert_eq!(env.status(id), IntentStatus::Pending);
    orch.drain().await.unwrap();
    assert_eq!(env.status(id), IntentStatus::Done);
    assert!(env.audit_events().contains(&"intent_resumed".to_string()));
}

#[tokio::test]
async fn downtime_never_outlasts_the_reservation() {
    let config = format!(
        r#"{BASE}
[playbooks.slow]
on = "trigger_slow"
budget = "gpu_downtime"
expected_downtime = "1s"
steps = [
  {{ systemd = "stop", unit = "judge.service", downtime = true }},
  {{ run = ["sleep", "30"], timeout = "5m" }},
  {{ systemd = "start", unit = "judge.service", restore = true }},
]
on_failure = [{{ systemd = "start", unit = "judge.service", restore = true }}]
"#
    );
    // Real time: the reservation is measured on the clock the budget is charged on.
    let clock = vigil::clock::ManualClock::at(IN_WINDOW);
    let env = Env::with_clock(
        &config,
        clock,
        std::sync::Arc::new(vigil::clock::SystemClock),
    );
    let id = env.submit("trigger_slow", 1);
    env.orchestrator().drain().await.unwrap();
    let i = env.intent(id);
    assert_eq!(i.status, IntentStatus::Failed, "{:?}", i.note);
    let note = i.note.unwrap();
    assert!(
        note.contains("cut short: production may stay down only the 1.0s the run reserved"),
        "{note}"
    );
    assert_eq!(
        env.systemctl_log(),
        "stop judge.service\nstart judge.service\n"
    );
    let store = env.app.store().unwrap();
    let run = &store.runs(None, i64::MIN, false).unwrap()[0];
    let u = store
        .budget_usage("gpu_downtime", run.budget_day.as_deref().unwrap())
        .unwrap();
    assert_eq!(u.reserved_ms, 0);
    assert!(u.used_ms >= 1_000 && u.used_ms < 30_000, "{u:?}");
}

#[tokio::test]
async fn a_restore_slower_than_the_sla_is_killed_and_restore_failed() {
    let config = format!(
        r#"{BASE}
[playbooks.slow_restore]
on = "trigger_canary"
budget = "gpu_downtime"
restore_sla = "1s"
steps = [
  {{ systemd = "stop", unit = "judge.service", downtime = true }},
  {{ systemd = "start", unit = "judge.service", restore = true, timeout = "5m" }},
]
"#
    );
    let env = Env::new(&config, IN_WINDOW);
    // Starting hangs: the restore step must be cut at the 1 s SLA, not its 5 min timeout.
    script(
        &env.path("systemctl"),
        &format!(
            "echo \"$1 $2\" >> {}\n[ \"$1\" = start ] && exec sleep 60\nexit 0",
            env.path("systemctl.log").display()
        ),
    );
    let id = env.submit("trigger_canary", 1);
    env.orchestrator().drain().await.unwrap();
    let i = env.intent(id);
    assert_eq!(i.status, IntentStatus::RestoreFailed, "{:?}", i.note);
    let note = i.note.unwrap();
    assert!(note.contains("production was not restored"), "{note}");
    assert!(note.contains("timed out"), "{note}");
    assert_eq!(
        env.app
            .metrics
            .restore_failures_total
            .get(&["slow_restore"]),
        1.0
    );
}

/// Data from outside that would be read as an option (`systemctl restart --help`) is refused,
/// unless it follows a `--`; the operator's own `--flags` stay.
#[tokio::test]
async fn outside_data_that_would_be_an_option_is_refused() {
    let config = format!(
        "{BASE}\n[playbooks.restart]\non = \"alert_unit\"\nsteps = [{{ systemd = \"restart\", unit = \"{{data.unit}}\" }}]\n\
         [playbooks.fit]\non = \"alert_fit\"\nsteps = [{{ run = [\"{{dir}}/args\", \"--alloc\", \"--\", \"{{data.alloc}}\"] }}]\n"
    );
    let env = Env::new(&config, IN_WINDOW);
    let calls = env.path("systemctl.log");
    let id = env.submit_data("alert_unit", json!({"unit": "--help"}));
    env.orchestrator().drain().await.unwrap();
    let i = env.intent(id);
    assert_eq!(i.status, IntentStatus::Failed);
    let note = i.note.unwrap();
    assert!(
        note.contains("\"{data.unit}\" filled in as \"--help\", which the program would read as an option; refused"),
        "{note}"
    );
    assert!(!calls.exists(), "systemctl never ran");

    let out = env.path("args.out");
    script(
        &env.path("args"),
        &format!(
            "for a in \"$@\"; do echo \"[$a]\" >> {}; done",
            out.display()
        ),
    );
    let id = env.submit_data("alert_fit", json!({"alloc": "-1"}));
    env.orchestrator().drain().await.unwrap();
    env.assert_status(id, IntentStatus::Done);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "[--alloc]\n[--]\n[-1]\n",
        "after `--` a leading dash is data"
    );
}

/// Steps get a minimal environment plus their `env`, not the daemon's (which may hold secrets
/// given to the config through `${ENV}`); `inherit_env = true` passes it all on.
#[tokio::test]
async fn steps_run_with_an_explicit_environment() {
    let config = format!(
        "{BASE}\n[playbooks.plain]\non = \"alert_plain\"\nsteps = [{{ run = [\"sh\", \"-c\", \"env > {{dir}}/plain.env\"], env = {{ STEP_VAR = \"1\" }} }}]\n\
         [playbooks.all]\non = \"alert_all\"\nsteps = [{{ run = [\"sh\", \"-c\", \"env > {{dir}}/all.env\"], inherit_env = true }}]\n"
    );
    let env = Env::new(&config, IN_WINDOW);
    for kind in ["alert_plain", "alert_all"] {
        let id = env.submit(kind, 1);
        env.orchestrator().drain().await.unwrap();
        env.assert_status(id, IntentStatus::Done);
    }
    // cargo gives this process (the daemon here) CARGO_MANIFEST_DIR: a stand-in for a secret.
    let plain = std::fs::read_to_string(env.path("plain.env")).unwrap();
    assert!(
        plain.contains("STEP_VAR=1\n") && plain.contains("VIGIL_INTENT="),
        "{plain}"
    );
    assert!(plain.contains("PATH="), "{plain}");
    assert!(!plain.contains("CARGO_MANIFEST_DIR="), "{plain}");
    let all = std::fs::read_to_string(env.path("all.env")).unwrap();
    assert!(all.contains("CARGO_MANIFEST_DIR="), "{all}");
}
