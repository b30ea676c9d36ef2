//! The `vigil` binary: symptoms, escalation and audit commands on the store, `status --json`,
//! and `kill -9` of the daemon in the middle of a playbook, then a restart that ends the
//! intent in a defined state with its budget and lock settled; two daemons on one store,
//! one stopped with SIGSTOP mid-step, and the fence that keeps it from acting once resumed.

mod common;
mod orchestrator_support;

use common::out;
use orchestrator_support::{fake_systemctl, script};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use vigil::intent::IntentStatus;
use vigil::store::prelude::*;
use vigil::store::{IntentQuery, SqliteStore};

/// The binary with DIR/data and DIR/vigil.toml.
fn vigil_in(dir: &Path) -> Command {
    let mut c = common::vigil(&dir.join("data"));
    c.arg("--config").arg(dir.join("vigil.toml"));
    c
}

fn write_config(dir: &Path, playbooks: &str) {
    let text = format!(
        r#"
[api]
enabled = false

[orchestrator]
systemctl = ["{d}/systemctl"]
lease = "30s"

[budgets.gpu_downtime]
seconds = 60

{playbooks}
"#,
        d = dir.display()
    )
    .replace("{dir}", dir.to_str().unwrap());
    std::fs::write(dir.join("vigil.toml"), text).unwrap();
}

#[test]
fn symptoms_escalation_and_audit_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "");
    for i in 1..=2 {
        let (code, stdout, err) = out(vigil_in(dir.path()).args([
            "symptoms",
            "record",
            "vllm_oom",
            &format!("deficit_mb={i}000"),
        ]));
        assert_eq!(code, 0, "{err}");
        assert!(
            stdout.contains(&format!("recorded vllm_oom: {i} in the window")),
            "{stdout}"
        );
    }
    let (_, stdout, _) = out(vigil_in(dir.path()).args(["escalation", "status", "--json"]));
    let flags: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(flags[0]["armed"], false);
    assert_eq!(flags[0]["symptom_count"], 2);

    let (_, stdout, _) =
        out(vigil_in(dir.path()).args(["symptoms", "record", "vllm_oom", "deficit_mb=3000"]));
    assert!(
        stdout.contains("escalation armed: 3 vllm_oom in last 24h (threshold: 3)"),
        "{stdout}"
    );
    let (_, stdout, _) = out(vigil_in(dir.path()).args(["escalation", "status", "--json"]));
    let flags: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(flags[0]["kind"], "vllm_oom");
    assert_eq!(flags[0]["armed"], true);
    assert_eq!(flags[0]["symptom_count"], 3);
    assert_eq!(flags[0]["reason"], "3 vllm_oom in last 24h (threshold: 3)");
    assert!(flags[0]["expires_at"].is_string());

    let (_, stdout, _) = out(vigil_in(dir.path()).args(["symptoms", "list", "--json"]));
    let list: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert_eq!(list[0]["meta"]["deficit_mb"], 3000);

    let (code, stdout, _) = out(vigil_in(dir.path()).args(["escalation", "clear", "vllm_oom"]));
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "cleared vllm_oom");
    let (_, stdout, _) = out(vigil_in(dir.path()).args(["escalation", "status", "--json"]));
    let flags: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(flags[0]["armed"], false);

    let (_, stdout, _) = out(vigil_in(dir.path()).args(["audit", "tail", "-n", "2", "--json"]));
    let tail: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let events: Vec<&str> = tail
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["escalation_armed", "escalation_cleared"]);
    let (_, stdout, _) = out(vigil_in(dir.path()).args(["audit", "count", "--json"]));
    let counts: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(counts["symptom_recorded"], 3);
    // The same trail as JSON lines in DATA_DIR/audit/YYYYMMDD.jsonl.
    let files: Vec<_> = std::fs::read_dir(dir.path().join("data/audit"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
    assert_eq!(text.lines().count(), 5);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for k in ["ts", "event", "intent", "playbook", "details"] {
            assert!(v.get(k).is_some(), "{k} in {line}");
        }
    }

    let (code, stdout, err) = out(vigil_in(dir.path()).args(["status", "--json"]));
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["budgets"][0]["name"], "gpu_downtime");
    assert_eq!(status["budgets"][0]["remaining_s"], 60.0);
    assert_eq!(status["flags"][0]["kind"], "vllm_oom");
}

const CANARY: &str = r#"
[playbooks.canary]
on = "trigger_canary"
budget = "gpu_downtime"
lock = "gpu0"
expected_downtime = "20s"
steps = [
  { systemd = "stop", unit = "judge.service", downtime = true },
  { run = ["sh", "-c", "echo $$ > {dir}/hang.pid; exec sleep 60"], timeout = "2m" },
  { systemd = "start", unit = "judge.service", restore = true },
]
on_failure = [{ systemd = "start", unit = "judge.service", restore = true }]
"#;

fn daemon(dir: &Path) -> Child {
    vigil_in(dir)
        .args(["run", "--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// `vigil intents submit trigger_canary` at priority 8; asserts it was taken.
fn submit_canary(dir: &Path, reason: &str) {
    let (code, _, err) = out(vigil_in(dir).args([
        "intents",
        "submit",
        "trigger_canary",
        "-p",
        "8",
        "-r",
        reason,
    ]));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn kill_9_mid_playbook_then_restart_settles_the_intent_budget_and_lock() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fake_systemctl(d, true);
    write_config(d, CANARY);
    let mut first = daemon(d);
    submit_canary(d, "crash test");
    common::wait_blocking("the hanging step to start", 20, || {
        d.join("hang.pid").exists()
    });
    let store = SqliteStore::open_dir(&d.join("data")).unwrap();
    let intent = store
        .intents(&IntentQuery::default())
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(intent.status, IntentStatus::Running);
    let run = store.runs(None, i64::MIN, true).unwrap().pop().unwrap();
    let day = run.budget_day.clone().unwrap();
    assert_eq!(
        store
            .budget_usage("gpu_downtime", &day)
            .unwrap()
            .reserved_ms,
        20_000
    );
    assert_eq!(store.locks().unwrap().len(), 1);

    // SAFETY: signalling our own child.
    unsafe { libc::kill(first.id() as i32, libc::SIGKILL) };
    first.wait().unwrap();
    let orphan: i32 = std::fs::read_to_string(d.join("hang.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        common::alive(orphan),
        "kill -9 of vigil leaves its step running"
    );

    let mut second = daemon(d);
    common::wait_blocking("the intent to end", 20, || {
        store
            .intent(intent.id)
            .unwrap()
            .unwrap()
            .status
            .is_finished()
    });
    let ended = store.intent(intent.id).unwrap().unwrap();
    assert_eq!(ended.status, IntentStatus::Failed, "{:?}", ended.note);
    let note = ended.note.unwrap();
    assert!(
        note.contains("vigil stopped during step 2 of playbook canary"),
        "{note}"
    );
    assert!(
        note.contains("production was down: ran on_failure"),
        "{note}"
    );
    assert!(note.contains("processes its step left running"), "{note}");
    assert!(
        !common::alive(orphan),
        "the step the dead vigil left running was stopped"
    );
    // Reservation released; the real downtime (stop until on_failure's start) charged once.
    let u = store.budget_usage("gpu_downtime", &day).unwrap();
    assert_eq!(u.reserved_ms, 0);
    assert!(u.used_ms > 0 && u.used_ms < 60_000, "{u:?}");
    assert!(store.locks().unwrap().is_empty());
    assert_eq!(
        std::fs::read_to_string(d.join("systemctl.log")).unwrap(),
        "stop judge.service\nstart judge.service\n"
    );
    let runs = store.runs(None, i64::MIN, false).unwrap();
    assert_eq!(runs.len(), 1, "not run twice");
    assert_eq!(runs[0].result.as_deref(), Some("failed"));
    let events: Vec<String> = store
        .audit_tail(100)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert!(events.contains(&"run_recovered".to_string()), "{events:?}");

    // SAFETY: signalling our own child.
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    assert!(second.wait().unwrap().success());
}

#[test]
fn dry_run_acts_on_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fake_systemctl(d, true);
    write_config(d, CANARY);
    script(&d.join("unused"), "exit 0");
    submit_canary(d, "dry");
    let log = d.join("daemon.log");
    let mut child = vigil_in(d)
        .args(["run", "--dry-run", "--log-level", "info"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    common::wait_blocking("the dry-run plan", 20, || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("dry run: intent")
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(
            "playbook canary (mode default) would run: systemd stop judge.service; run [\"sh\""
        ),
        "{text}"
    );
    assert!(!d.join("systemctl.log").exists(), "nothing ran");
    let store = SqliteStore::open_dir(&d.join("data")).unwrap();
    let intents = store.intents(&IntentQuery::default()).unwrap();
    assert_eq!(intents[0].status, IntentStatus::Pending);
    assert!(store.runs(None, i64::MIN, false).unwrap().is_empty());
}

/// Two daemons share one store with a 2 s lease. Daemon A is stopped (SIGSTOP) during step 1
/// of intent 1, which holds lock gpu0; B recovers intent 1 (failed, gpu0 released) and starts
/// intent 2 under gpu0. When A resumes it must not run step 2 of intent 1 (inside intent 2's
/// lock), nor overwrite intent 1's status: it audits `lease_lost` and writes nothing more.
#[test]
fn a_daemon_stopped_mid_step_does_not_act_after_another_took_its_run_over() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = r#"
[api]
enabled = false

[orchestrator]
lease = "2s"
workers = 1

[playbooks.gpu]
on = "trigger_*"
lock = "gpu0"
steps = [
  { run = ["sh", "-c", "echo {intent}-1 >> {dir}/steps; touch {dir}/in-step-{intent}; sleep 1; while [ -f {dir}/hold-{intent} ]; do sleep 0.05; done"], timeout = "1m" },
  { run = ["sh", "-c", "echo {intent}-2 >> {dir}/steps"] },
]
"#
    .replace("{dir}", d.to_str().unwrap());
    std::fs::write(d.join("vigil.toml"), text).unwrap();
    let store = SqliteStore::open_dir(&d.join("data")).unwrap();
    let submit = |kind: &str| {
        let i = vigil::intent::NewIntent {
            intent_type: kind.into(),
            priority: 5,
            reason: "fence test".into(),
            data: Default::default(),
            dedup_key: None,
            origin: "test".into(),
        };
        let now = jiff::Timestamp::now().as_millisecond();
        store.put_intent(&i, now, 0).unwrap().id()
    };
    let steps = || std::fs::read_to_string(d.join("steps")).unwrap_or_default();
    let events = |name: &str| {
        store
            .audit_tail(1000)
            .unwrap()
            .into_iter()
            .filter(|e| e.event == name)
            .collect::<Vec<_>>()
    };

    let mut a = daemon(d);
    let first = submit("trigger_one");
    common::wait_blocking("A to run step 1 of intent 1", 20, || {
        d.join(format!("in-step-{first}")).exists()
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(a.id() as i32, libc::SIGSTOP) };
    // Step 1's command ends on its own (its exit waits for A to reap it); then A holds a
    // finished step it has not seen yet.

    let mut b = daemon(d);
    common::wait_blocking("B to recover intent 1", 30, || {
        store.intent(first).unwrap().unwrap().status.is_finished()
    });
    let i1 = store.intent(first).unwrap().unwrap();
    assert_eq!(i1.status, IntentStatus::Failed, "{:?}", i1.note);
    let recovered_note = i1.note.clone().unwrap();
    assert!(recovered_note.contains("not run again"), "{recovered_note}");

    // B starts intent 2 under gpu0 and stays in its step 1.
    std::fs::write(d.join("hold-2"), "").unwrap();
    let second = submit("trigger_two");
    assert_eq!(second, 2);
    common::wait_blocking("B to run step 1 of intent 2", 20, || {
        d.join(format!("in-step-{second}")).exists()
    });
    let locks = store.locks().unwrap();
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].name, "gpu0");
    assert!(locks[0].holder.ends_with("/2"), "{locks:?}");

    // A resumes: it finds the run is no longer its own.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(a.id() as i32, libc::SIGCONT) };
    // A audits lease_lost when it gives the run up, after the point where it would have run
    // step 2 and settled.
    common::wait_blocking("A to resume and give up (or act)", 20, || {
        !events("lease_lost").is_empty() || steps().contains("1-2")
    });
    assert_eq!(steps(), "1-1\n2-1\n", "A ran no step 2 of intent 1");
    let i1 = store.intent(first).unwrap().unwrap();
    assert_eq!(
        (i1.status, i1.note.as_deref()),
        (IntentStatus::Failed, Some(recovered_note.as_str())),
        "intent 1 keeps B's ending"
    );
    let lost = events("lease_lost");
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].intent, Some(first));
    assert_eq!(store.runs(None, i64::MIN, false).unwrap().len(), 2);
    assert!(events("run_end_ignored").is_empty(), "A wrote no ending");

    // Intent 2 is untouched by A and finishes under B.
    std::fs::remove_file(d.join("hold-2")).unwrap();
    common::wait_blocking("intent 2 to finish", 20, || {
        store.intent(second).unwrap().unwrap().status.is_finished()
    });
    assert_eq!(
        store.intent(second).unwrap().unwrap().status,
        IntentStatus::Done
    );
    assert_eq!(steps(), "1-1\n2-1\n2-2\n");
    assert!(store.locks().unwrap().is_empty());

    for child in [&mut a, &mut b] {
        // SAFETY: signalling our own children.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert!(child.wait().unwrap().success());
    }
}
