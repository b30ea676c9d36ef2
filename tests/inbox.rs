//! The inbox trusts nothing: only regular files of bounded size with UTF-8 names are read, a
//! store that fails is not a bad file, and rejected files never overwrite each other.

mod common;

use common::TestDaemon;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use vigil::intent::{inbox, NewIntent};

fn intent(kind: &str, reason: &str) -> NewIntent {
    NewIntent {
        intent_type: kind.into(),
        priority: 5,
        reason: reason.into(),
        data: Default::default(),
        dedup_key: None,
        origin: "test".into(),
    }
}

fn reason(rejected: &Path, name: &str) -> String {
    std::fs::read_to_string(rejected.join(format!("{name}.reason")))
        .unwrap_or_else(|e| panic!("{name}.reason: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifos_links_and_devices_are_rejected_and_intake_goes_on() {
    let d = TestDaemon::start("").await;
    let inbox_dir = d.app.inbox_dir();
    std::fs::create_dir_all(&inbox_dir).unwrap();
    let rejected = d.app.rejected_dir();
    // A FIFO blocked intake forever (and SIGTERM with it); a link to /dev/zero filled memory.
    let fifo = inbox_dir.join("1_alert_fifo_00000000.json");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink("/dev/zero", inbox_dir.join("2_alert_zero_00000000.json")).unwrap();
    std::fs::create_dir(inbox_dir.join("3_alert_dir_00000000.json")).unwrap();
    inbox::write(&inbox_dir, &intent("alert_after", "after the traps"), 4).unwrap();

    d.wait_until("the good file stored", || d.intents().len() == 1)
        .await;
    d.wait_until("three rejected", || {
        ["1_alert_fifo", "2_alert_zero", "3_alert_dir"]
            .iter()
            .all(|n| rejected.join(format!("{n}_00000000.json.reason")).exists())
    })
    .await;
    assert!(reason(&rejected, "1_alert_fifo_00000000.json").contains("a FIFO; only regular files"));
    assert!(reason(&rejected, "2_alert_zero_00000000.json").contains("a symbolic link"));
    assert!(reason(&rejected, "3_alert_dir_00000000.json").contains("a directory"));
    assert_eq!(d.intents()[0].intent_type, "alert_after");
    // The daemon still stops cleanly.
    let summary = d.stop().await;
    assert_eq!(summary.intents, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_over_the_size_limit_are_rejected_unread() {
    let d = TestDaemon::start("[intents]\nmax_file_size = 2000\n").await;
    let inbox_dir = d.app.inbox_dir();
    std::fs::create_dir_all(&inbox_dir).unwrap();
    // A valid intent, only too big.
    let big = inbox::write(&inbox_dir, &intent("alert_big", &"x".repeat(3000)), 1).unwrap();
    let name = big.file_name().unwrap().to_str().unwrap().to_string();
    inbox::write(&inbox_dir, &intent("alert_small", "small"), 2).unwrap();
    d.wait_until("the small one stored", || d.intents().len() == 1)
        .await;
    let rejected = d.app.rejected_dir();
    d.wait_until("the big one rejected", || {
        rejected.join(format!("{name}.reason")).exists()
    })
    .await;
    let why = reason(&rejected, &name);
    assert!(why.contains("over the inbox limit of 2000"), "{why}");
    assert!(why.contains("max_file_size"), "says how to raise it: {why}");
    assert_eq!(d.intents()[0].intent_type, "alert_small");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_that_are_not_utf8_and_repeated_names_are_rejected_apart() {
    let d = TestDaemon::start("").await;
    let inbox_dir = d.app.inbox_dir();
    std::fs::create_dir_all(&inbox_dir).unwrap();
    let rejected = d.app.rejected_dir();
    let bad_name = std::ffi::OsStr::from_bytes(b"5_alert_\xff\xfe_00000000.json");
    std::fs::write(inbox_dir.join(bad_name), "{}").unwrap();
    d.wait_until("rejected", || {
        std::fs::read_dir(&rejected).map(|r| r.count()).unwrap_or(0) == 2
    })
    .await;
    let names: Vec<_> = std::fs::read_dir(&rejected)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let lossy = "5_alert_\u{fffd}\u{fffd}_00000000.json";
    assert!(names.iter().any(|n| n == lossy), "{names:?}");
    assert!(reason(&rejected, lossy).contains("not UTF-8"));

    // The same bad name twice: the second does not overwrite the first.
    for (i, text) in ["{ first", "{ second"].iter().enumerate() {
        std::fs::write(inbox_dir.join("6_junk_00000000.json"), text).unwrap();
        d.wait_until("rejected", || {
            std::fs::read_dir(&rejected).map(|r| r.count()).unwrap_or(0) == 4 + 2 * i
        })
        .await;
    }
    assert_eq!(
        std::fs::read_to_string(rejected.join("6_junk_00000000.json")).unwrap(),
        "{ first"
    );
    assert_eq!(
        std::fs::read_to_string(rejected.join("6_junk_00000000.json.1")).unwrap(),
        "{ second"
    );
    assert!(reason(&rejected, "6_junk_00000000.json.1").contains("not valid JSON"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_error_is_not_a_bad_file() {
    let d = TestDaemon::start("").await;
    let inbox_dir = d.app.inbox_dir();
    std::fs::create_dir_all(&inbox_dir).unwrap();
    // A real SQLite failure on the daemon's own store: every insert of an intent aborts.
    let db = rusqlite::Connection::open(d.app.data_dir().join("vigil.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON intents BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    )
    .unwrap();
    let files: Vec<_> = (0..5)
        .map(|i| inbox::write(&inbox_dir, &intent(&format!("alert_{i}"), "kept"), i).unwrap())
        .collect();
    // The inbox is listed like a source, down with the store's reason.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let sources = d.get_json("/api/sources").await;
        let inbox = sources
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["source"] == "inbox")
            .cloned()
            .unwrap_or_default();
        let refused = inbox["reason"]
            .as_str()
            .is_some_and(|r| r.contains("database or disk is full"));
        if refused && inbox["up"] == false {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{inbox}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let health = d.get_json("/healthz").await;
    assert!(
        health["sources_down"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "inbox"),
        "{health}"
    );
    assert!(
        files.iter().all(|f| f.exists()),
        "the files wait in the inbox"
    );
    assert!(
        !d.app.rejected_dir().exists()
            || std::fs::read_dir(d.app.rejected_dir()).unwrap().count() == 0,
        "valid files are never rejected for a store error"
    );

    // The store recovers: every file is taken, none lost.
    db.execute_batch("DROP TRIGGER refuse;").unwrap();
    d.wait_until("all five stored", || d.intents().len() == 5)
        .await;
    d.wait_until("the inbox is empty", || {
        std::fs::read_dir(&inbox_dir).unwrap().count() == 0
    })
    .await;
    d.stop().await;
}
