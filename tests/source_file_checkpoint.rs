//! File source checkpoints on real files and a real SQLite store: what was written while vigil
//! was stopped becomes events exactly once, through rotation and truncation, and a `kill -9`
//! of the daemon in the middle of a stream loses no line.

mod common;

use common::{vigil, wait_blocking, RunningSource};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;
use vigil::clock::SystemClock;
use vigil::sources::file::{FileConfig, FileSource};
use vigil::store::{IntentQuery, IntentStore, SourceStore, SqliteStore};

const OOM: &str = r#"[[match]]
regex = 'CUDA out of memory\. Tried to allocate (?P<alloc_gib>[0-9.]+) GiB'
event = "gpu_oom"
"#;

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

fn oom(gib: &str) -> String {
    format!("RuntimeError: CUDA out of memory. Tried to allocate {gib} GiB (GPU 0)\n")
}

/// One run of the file source "log" with the store, under the real supervisor, as the daemon
/// runs it (the events go to the test instead of the pipeline).
struct Run(RunningSource);

impl Run {
    async fn start(store: &Arc<SqliteStore>, log: &Path, extra: &str) -> Run {
        let config: FileConfig = toml::from_str(&format!(
            "path = {:?}\n{extra}\n{OOM}",
            log.to_str().unwrap()
        ))
        .unwrap();
        Run(RunningSource::start_with_store(
            "log",
            store.clone(),
            Box::new(FileSource::new(config)),
        )
        .await)
    }

    async fn next(&mut self) -> String {
        gib(&self.0.next().await)
    }

    /// Stops vigil's side (the final checkpoint is saved then) and returns the events that
    /// were sent but not yet taken by the test.
    async fn stop(self) -> Vec<String> {
        self.0.stop_and_take().await.iter().map(gib).collect()
    }
}

fn gib(ev: &vigil::event::Event) -> String {
    ev.data["alloc_gib"].as_str().unwrap().to_string()
}

fn store(dir: &Path) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open_dir(&dir.join("data")).unwrap())
}

#[tokio::test]
async fn a_first_start_skips_old_lines_and_a_restart_reads_what_was_appended_while_stopped_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = (store(dir.path()), dir.path().join("server.log"));
    append(&log, &oom("0.1"));
    let mut run = Run::start(&store, &log, "").await;
    append(&log, &oom("1"));
    assert_eq!(
        run.next().await,
        "1",
        "the line before the first start is skipped"
    );
    assert_eq!(run.stop().await, Vec::<String>::new());
    assert!(store
        .checkpoint("log", log.to_str().unwrap())
        .unwrap()
        .is_some());

    append(&log, &oom("2"));
    append(&log, "CUDA out of memory. Tried to allocate 3"); // half a line when vigil stops
    let mut run = Run::start(&store, &log, "").await;
    append(&log, ".5 GiB\n");
    assert_eq!(run.next().await, "2", "appended while stopped");
    assert_eq!(run.next().await, "3.5", "the half line is read whole");
    assert_eq!(run.stop().await, Vec::<String>::new(), "nothing twice");

    let run = Run::start(&store, &log, "").await;
    assert_eq!(
        run.stop().await,
        Vec::<String>::new(),
        "a third start repeats nothing"
    );
}

#[tokio::test]
async fn a_stop_right_after_the_first_start_still_saves_where_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = (store(dir.path()), dir.path().join("server.log"));
    append(&log, &oom("0.1"));
    // Stopped as soon as it is up, before its first read may have finished.
    for _ in 0..5 {
        let run = Run::start(&store, &log, "").await;
        assert!(run.stop().await.is_empty());
        let saved = store.checkpoint("log", log.to_str().unwrap()).unwrap();
        let len = std::fs::metadata(&log).unwrap().len();
        assert_eq!(saved.map(|c| c.file.offset), Some(len));
    }
    append(&log, &oom("1"));
    let mut run = Run::start(&store, &log, "").await;
    assert_eq!(run.next().await, "1", "not taken for a first start");
    assert!(run.stop().await.is_empty());
}

#[tokio::test]
async fn from_start_only_counts_at_the_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = (store(dir.path()), dir.path().join("server.log"));
    append(&log, &oom("1"));
    let mut run = Run::start(&store, &log, "from_start = true").await;
    assert_eq!(run.next().await, "1");
    assert_eq!(run.stop().await, Vec::<String>::new());
    append(&log, &oom("2"));
    let mut run = Run::start(&store, &log, "from_start = true").await;
    assert_eq!(
        run.next().await,
        "2",
        "resumed, not read from the start again"
    );
    assert_eq!(run.stop().await, Vec::<String>::new());
}

#[tokio::test]
async fn rotation_while_stopped_reads_the_old_files_tail_then_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = (store(dir.path()), dir.path().join("server.log"));
    let rotated = dir.path().join("server.log.1");
    append(&log, "");
    let mut run = Run::start(&store, &log, "").await;
    append(&log, &oom("1"));
    assert_eq!(run.next().await, "1");
    assert!(run.stop().await.is_empty());

    append(&log, &oom("2"));
    std::fs::rename(&log, &rotated).unwrap();
    append(&rotated, &oom("3")); // the writer had not reopened yet
    append(&log, &oom("4"));
    let mut run = Run::start(&store, &log, "").await;
    let got = [run.next().await, run.next().await, run.next().await];
    assert_eq!(got, ["2", "3", "4"], "the old file's tail first");
    append(&log, &oom("5"));
    assert_eq!(run.next().await, "5");
    assert!(run.stop().await.is_empty());
}

#[tokio::test]
async fn a_rotated_file_still_being_read_at_stop_is_read_on_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = (store(dir.path()), dir.path().join("server.log"));
    let rotated = dir.path().join("server.log.1");
    append(&log, "");
    // A long grace: the rotated file is still followed when vigil stops.
    let mut run = Run::start(&store, &log, "rotate_grace = \"1h\"").await;
    append(&log, &oom("1"));
    assert_eq!(run.next().await, "1");
    std::fs::rename(&log, &rotated).unwrap();
    append(&log, &oom("2"));
    assert_eq!(run.next().await, "2");
    assert!(run.stop().await.is_empty());
    let saved = store
        .checkpoint("log", log.to_str().unwrap())
        .unwrap()
        .unwrap();
    assert!(saved.rotated.is_some(), "both files are in the checkpoint");

    append(&rotated, &oom("3"));
    append(&log, &oom("4"));
    let mut run = Run::start(&store, &log, "rotate_grace = \"1h\"").await;
    assert_eq!(run.next().await, "3", "the rotated file on from its offset");
    assert_eq!(
        run.next().await,
        "4",
        "the new file on from its offset, not its start"
    );
    assert!(run.stop().await.is_empty());
}

#[tokio::test]
async fn a_file_truncated_or_replaced_while_stopped_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = (store(dir.path()), dir.path().join("server.log"));
    append(&log, "");
    let mut run = Run::start(&store, &log, "").await;
    append(&log, &format!("{}{}", oom("1"), oom("2")));
    assert_eq!([run.next().await, run.next().await], ["1", "2"]);
    assert!(run.stop().await.is_empty());

    // copytruncate: the same file, emptied in place, then one short line.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, &oom("3"));
    let mut run = Run::start(&store, &log, "").await;
    assert_eq!(run.next().await, "3");
    assert!(run.stop().await.is_empty());

    // Rewritten in place with other lines, longer than before: the first bytes differ.
    let text = format!("INFO a new life\n{}{}{}", oom("4"), oom("5"), oom("6"));
    std::fs::write(&log, text).unwrap();
    let mut run = Run::start(&store, &log, "").await;
    let got = [run.next().await, run.next().await, run.next().await];
    assert_eq!(got, ["4", "5", "6"]);
    assert!(run.stop().await.is_empty());
}

#[tokio::test]
async fn a_long_backlog_is_saved_as_it_is_read_not_only_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = (store(dir.path()), dir.path().join("server.log"));
    append(&log, "");
    let run = Run::start(&store, &log, "").await;
    assert!(run.stop().await.is_empty());
    // About 2.8 MB written while vigil was stopped.
    const BACKLOG: usize = 40_000;
    let text: String = (0..BACKLOG).map(|i| oom(&format!("{i}.0"))).collect();
    append(&log, &text);
    let len = text.len() as u64;

    let mut run = Run::start(&store, &log, "").await;
    let offset = || {
        store
            .checkpoint("log", log.to_str().unwrap())
            .unwrap()
            .unwrap()
            .file
            .offset
    };
    let mut taken = 0;
    while offset() == 0 {
        for _ in 0..500 {
            run.next().await;
            taken += 1;
        }
        assert!(
            taken < BACKLOG,
            "saved only once the whole backlog was sent"
        );
    }
    let saved = offset();
    assert!(saved < len, "saved in the middle: {saved} of {len} bytes");
    assert!(
        taken < BACKLOG - 4_000,
        "saved after {taken} of {BACKLOG} lines"
    );
    while taken < BACKLOG {
        run.next().await;
        taken += 1;
    }
    assert!(run.stop().await.is_empty());
    assert_eq!(offset(), len);
}

#[tokio::test]
async fn a_dry_run_reads_lines_but_saves_no_position() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    append(&log, "");
    let text = format!(
        "[api]\nenabled = false\n[sources.log]\ntype = \"file\"\npath = {:?}\n{}",
        log.to_str().unwrap(),
        OOM.replace("[[match]]", "[[sources.log.match]]")
    );
    let config = vigil::config::Config::parse("test.toml", &text).unwrap();
    let data = dir.path().join("data");
    let app = Arc::new(vigil::app::App::new(config, data, Arc::new(SystemClock)));
    let (stop, rx) = watch::channel(false);
    let opts = vigil::daemon::Options {
        dry_run: true,
        ..Default::default()
    };
    let daemon = tokio::spawn(vigil::daemon::run(app.clone(), opts, rx));
    let events = || app.metrics.events_total.get(&["log", "gpu_oom"]);
    // Appended until one is seen: the source attaches in its own time.
    common::wait_until("the dry run turns a line into an event", &mut || {
        if events() == 0.0 {
            append(&log, &oom("1"));
        }
        events() > 0.0
    })
    .await;
    let _ = stop.send(true);
    daemon.await.unwrap().unwrap();
    let store = app.store().unwrap();
    assert_eq!(
        store.checkpoint("log", log.to_str().unwrap()).unwrap(),
        None,
        "a dry run moves no real start's position on"
    );
}

/// A daemon config: every `tick n=N` line is an intent whose data holds the line, and intents
/// are not merged (a 1 ms dedup window), so each time a line becomes an event shows.
fn daemon_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("vigil.toml");
    std::fs::write(
        &path,
        format!(
            r#"data_dir = {data:?}
[api]
enabled = false
[intents]
dedup_window = "1ms"
[sources.log]
type = "file"
path = {log:?}
[[sources.log.match]]
regex = 'tick n=(?P<n>[0-9]+)'
event = "tick"
[rules.tick]
on = "tick"
intent = "alert_tick"
priority = 1
reason = "tick {{n}}"
"#,
            data = dir.join("data").to_str().unwrap(),
            log = dir.join("app.log").to_str().unwrap(),
        ),
    )
    .unwrap();
    path
}

/// `vigil run` in a child process, killed (SIGKILL) when dropped.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let child = vigil(&dir.join("data"))
            .args(["run", "--log-level", "warn", "--config"])
            .arg(daemon_config(dir))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let daemon = Daemon(child);
        // Attached: the source says it is up (persisted for `vigil status`). After a restart
        // the last run's state may answer first; nothing below depends on that moment.
        let db = dir.join("data").join("vigil.db");
        wait_blocking("the daemon's file source is up", 30, || {
            db.exists()
                && SqliteStore::open(&db)
                    .and_then(|s| s.source_states())
                    .is_ok_and(|st| st.iter().any(|s| s.source == "log" && s.up))
        });
        daemon
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let mut status = None;
        wait_blocking("vigil exits", 30, || {
            status = self.0.try_wait().unwrap();
            status.is_some()
        });
        assert!(status.unwrap().success(), "vigil stopped cleanly");
    }
}

/// How many intents each line number became.
fn ticks(dir: &Path) -> BTreeMap<u64, usize> {
    let store = SqliteStore::open_dir(&dir.join("data")).unwrap();
    let mut seen = BTreeMap::new();
    for i in store.intents(&IntentQuery::default()).unwrap() {
        let n = i.data["n"].as_str().unwrap().parse().unwrap();
        *seen.entry(n).or_insert(0) += 1;
    }
    seen
}

fn write_ticks(log: &Path, range: std::ops::Range<u64>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    for chunk in range.collect::<Vec<_>>().chunks(50) {
        let text: String = chunk.iter().map(|n| format!("tick n={n}\n")).collect();
        f.write_all(text.as_bytes()).unwrap();
    }
}

fn wait_for_all(dir: &Path, upto: u64) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    wait_blocking("every line became an intent", 120, || {
        seen = ticks(dir);
        (0..upto).all(|n| seen.contains_key(&n))
    });
    seen
}

/// Lines in the stream the daemon is stopped in the middle of, and lines written while it is
/// stopped.
const STREAM: u64 = 10_000;
const WHILE_STOPPED: u64 = 1_000;

#[test]
fn a_clean_stop_of_the_daemon_mid_stream_repeats_and_loses_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "tick n=999999 (before the first start: skipped)\n");
    let daemon = Daemon::start(dir.path());
    write_ticks(&log, 0..STREAM);
    wait_blocking("the daemon is in the middle of the lines", 60, || {
        ticks(dir.path()).len() >= 300
    });
    daemon.stop();
    let before = ticks(dir.path()).len() as u64;
    write_ticks(&log, STREAM..STREAM + WHILE_STOPPED);

    let _daemon = Daemon::start(dir.path());
    let seen = wait_for_all(dir.path(), STREAM + WHILE_STOPPED);
    assert!(
        before < STREAM,
        "stopped in the middle ({before} of {STREAM} done)"
    );
    assert!(
        !seen.contains_key(&999_999),
        "the first start began at the end"
    );
    let twice: Vec<_> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| n)
        .collect();
    assert!(
        twice.is_empty(),
        "{} lines read twice after a clean stop, from {:?} to {:?}",
        twice.len(),
        twice.first(),
        twice.last()
    );
}

#[test]
fn kill_9_of_the_daemon_mid_stream_loses_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let daemon = Daemon::start(dir.path());
    write_ticks(&log, 0..STREAM);
    wait_blocking("the daemon is in the middle of the lines", 60, || {
        ticks(dir.path()).len() >= 300
    });
    drop(daemon); // SIGKILL: no stop, no final checkpoint
    let before = ticks(dir.path());
    assert!(
        (before.len() as u64) < STREAM,
        "killed in the middle of the stream ({} of {STREAM} done)",
        before.len()
    );
    write_ticks(&log, STREAM..STREAM + WHILE_STOPPED);

    let _daemon = Daemon::start(dir.path());
    let seen = wait_for_all(dir.path(), STREAM + WHILE_STOPPED);
    assert_eq!(seen.len() as u64, STREAM + WHILE_STOPPED, "none made up");
    // Lines finished after the last checkpoint before the kill come again: one run of
    // consecutive lines, each at most twice, all of them done before the kill.
    let twice: Vec<u64> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| *n)
        .collect();
    assert!(seen.values().all(|c| *c <= 2), "no line three times");
    if let (Some(first), Some(last)) = (twice.first(), twice.last()) {
        assert_eq!(
            (last - first + 1) as usize,
            twice.len(),
            "the repeated lines are one run ({} lines from {first} to {last})",
            twice.len()
        );
        assert!(
            twice.iter().all(|n| before.contains_key(n)),
            "only lines done before the kill repeat"
        );
    }
    eprintln!("repeated after kill -9: {} lines", twice.len());
}
