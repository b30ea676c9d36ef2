//! Recovery racing the holder it took over from: the first ending of a run wins, the second
//! is audited as `run_end_ignored` and changes nothing. On SQLite and on PostgreSQL.

mod common;

use common::env::*;
use std::io::{Read, Write};
use std::sync::mpsc;
use vigil::intent::IntentStatus;
use vigil::store::prelude::*;

/// A webhook receiver that answers 200 only when told to: `(port, got, answer)`.
fn held_webhook() -> (u16, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (got_tx, got) = mpsc::channel();
    let (answer, answer_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut chunk = [0u8; 4096];
        let _ = conn.read(&mut chunk).unwrap();
        got_tx.send(()).unwrap();
        answer_rx.recv().unwrap();
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
    });
    (port, got, answer)
}

on_both_stores!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_ending_of_a_run_wins_and_the_second_is_ignored(b) {
    let (port, got, answer) = held_webhook();
    let config = format!(
        "{BASE}\n[playbooks.notify]\non = \"alert_*\"\nsteps = [{{ webhook = \"http://127.0.0.1:{port}/hook\", timeout = \"5m\" }}]\n"
    );
    let env = Env::on(b, &config, IN_WINDOW);
    let id = env.submit("alert_disk_full", 1);
    let holder = std::sync::Arc::new(env.orchestrator());
    let first = {
        let holder = holder.clone();
        tokio::spawn(async move { holder.step().await })
    };
    tokio::task::spawn_blocking(move || got.recv().unwrap())
        .await
        .unwrap();

    // The holder is stuck in its step and its lease runs out (no heartbeat renews it here):
    // another orchestrator takes the run over and ends it first.
    env.advance_h(1.0);
    assert_eq!(env.orchestrator().recover().await.unwrap(), 1);
    let i = env.intent(id);
    assert_eq!(i.status, IntentStatus::Failed, "{:?}", i.note);
    let recovered_note = i.note.clone().unwrap();
    assert!(recovered_note.contains("not run again"), "{recovered_note}");

    // The holder's step returns and it ends the run as done: too late, it changes nothing.
    answer.send(()).unwrap();
    assert!(first.await.unwrap().unwrap());
    let i = env.intent(id);
    assert_eq!(
        (i.status, i.note.as_deref()),
        (IntentStatus::Failed, Some(recovered_note.as_str())),
        "the first ending stands"
    );
    let events = env.audit_events();
    let ends: Vec<&String> = events
        .iter()
        .filter(|e| ["run_recovered", "playbook_end", "run_end_ignored"].contains(&e.as_str()))
        .collect();
    assert_eq!(ends, ["run_recovered", "run_end_ignored"], "{events:?}");
    let store = env.app.store().unwrap();
    let tail = store.audit_tail(1).unwrap();
    assert_eq!(tail[0].details["ignored"], "playbook_end", "{tail:?}");
    assert_eq!(tail[0].details["details"]["result"], "done", "{tail:?}");
    let runs = store.runs(None, i64::MIN, false).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].result.as_deref(), Some("failed"));
    // Counted once, by the ending that won.
    let m = &env.app.metrics.playbook_runs_total;
    assert_eq!(m.get(&["notify", "failed", "default"]), 1.0);
    assert_eq!(m.total(), 1.0);
});
