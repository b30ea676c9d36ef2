//! The file source on real files with inotify: appends, partial lines, rotation, truncation,
//! long and invalid lines, and a file that appears late.

mod common;

use common::RunningSource;
use std::io::Write;
use std::path::Path;
use vigil::sources::file::{FileConfig, FileSource};

const OOM: &str = r#"[[match]]
regex = 'CUDA out of memory\. Tried to allocate (?P<alloc_gib>[0-9.]+) GiB'
event = "gpu_oom"
"#;

fn config(path: &Path, extra: &str) -> FileConfig {
    toml::from_str(&format!(
        "path = {:?}\n{extra}\n{OOM}",
        path.to_str().unwrap()
    ))
    .unwrap()
}

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

async fn started(path: &Path, extra: &str) -> RunningSource {
    let s = RunningSource::start("log", Box::new(FileSource::new(config(path, extra))));
    s.wait_state("file source up", |st| st.up).await;
    s
}

#[tokio::test]
async fn appended_matching_lines_become_events_with_fields() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    append(&log, &oom("9.99")); // before start: not new, not reported
    let mut s = started(&log, "").await;
    append(&log, "INFO all good\n");
    append(&log, &oom("2.50"));
    let ev = s.next().await;
    assert_eq!((ev.source.as_str(), ev.kind.as_str()), ("log", "gpu_oom"));
    assert_eq!(ev.data["alloc_gib"], "2.50");
    assert!(ev.data["line"]
        .as_str()
        .unwrap()
        .starts_with("RuntimeError: CUDA out of memory"));
    s.quiet().await;
    s.stop().await;
}

#[tokio::test]
async fn from_start_reads_what_is_there_and_partial_lines_wait() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    append(&log, &oom("1.0"));
    let mut s = started(&log, "from_start = true").await;
    assert_eq!(s.next().await.data["alloc_gib"], "1.0");
    append(&log, "CUDA out of memory. Tried to allocate 3.");
    s.quiet().await;
    append(&log, "5 GiB\n");
    assert_eq!(s.next().await.data["alloc_gib"], "3.5");
    s.stop().await;
}

#[tokio::test]
async fn rotation_finishes_the_old_file_then_follows_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    append(&log, "");
    let mut s = started(&log, "").await;
    append(&log, &oom("1.1"));
    assert_eq!(s.next().await.data["alloc_gib"], "1.1");
    // logrotate's default: rename away, then a new file at the path.
    std::fs::rename(&log, dir.path().join("server.log.1")).unwrap();
    append(&dir.path().join("server.log.1"), &oom("1.2"));
    append(&log, &oom("2.1"));
    assert_eq!(
        s.next().await.data["alloc_gib"],
        "1.2",
        "the old file is read to its end"
    );
    assert_eq!(
        s.next().await.data["alloc_gib"],
        "2.1",
        "then the new one from its start"
    );
    append(&log, &oom("2.2"));
    assert_eq!(s.next().await.data["alloc_gib"], "2.2");
    s.stop().await;
}

#[tokio::test]
async fn truncation_restarts_from_the_beginning() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    append(&log, "");
    let mut s = started(&log, "").await;
    append(
        &log,
        &format!(
            "{}{}",
            oom("1"),
            "padding padding padding padding padding\n"
        ),
    );
    assert_eq!(s.next().await.data["alloc_gib"], "1");
    // copytruncate: same file, emptied in place.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    s.quiet().await;
    append(&log, &oom("7"));
    assert_eq!(s.next().await.data["alloc_gib"], "7");
    s.stop().await;
}

#[tokio::test]
async fn long_lines_are_cut_and_counted_and_bad_utf8_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    append(&log, "");
    let cfg: FileConfig = toml::from_str(&format!(
        "path = {:?}\nmax_line = 64\n",
        log.to_str().unwrap()
    ))
    .unwrap();
    let mut s = RunningSource::start("raw", Box::new(FileSource::new(cfg)));
    s.wait_state("up", |st| st.up).await;
    append(&log, &format!("{}\n", "x".repeat(1000)));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"bad \xff\xfe bytes\n")
        .unwrap();
    let ev = s.next().await;
    assert_eq!(ev.kind, "line", "without [[match]] every line is an event");
    assert_eq!(ev.data["line"].as_str().unwrap().len(), 64);
    assert_eq!(s.next().await.data["line"], "bad \u{fffd}\u{fffd} bytes");
    assert_eq!(s.metrics.lines_truncated_total.get(&["raw"]), 1.0);
    s.stop().await;
}

#[tokio::test]
async fn a_missing_file_is_reported_and_followed_once_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("late.log");
    let mut s = RunningSource::start("log", Box::new(FileSource::new(config(&log, ""))));
    s.wait_state("down while the file is missing", |st| {
        !st.up
            && st
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("waiting for") && r.contains("late.log"))
    })
    .await;
    append(&log, &oom("4.0"));
    s.wait_state("up once it exists", |st| st.up).await;
    // The first lines of a file that appears after start are new: they count.
    assert_eq!(s.next().await.data["alloc_gib"], "4.0");
    s.stop().await;
}

#[tokio::test]
async fn a_missing_directory_is_an_error_that_names_it() {
    let s = RunningSource::start(
        "log",
        Box::new(FileSource::new(config(
            Path::new("/nonexistent/dir/x.log"),
            "",
        ))),
    );
    s.wait_state("down with reason", |st| {
        !st.up
            && st.reason.as_deref().is_some_and(|r| {
                r.contains("cannot watch /nonexistent/dir") && r.contains("create the directory")
            })
    })
    .await;
    s.stop().await;
}

#[tokio::test]
async fn a_file_in_a_directory_made_after_start_is_read_from_its_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let late = dir.path().join("logs/late");
    let log = late.join("app.log");
    let mut s = RunningSource::start("log", Box::new(FileSource::new(config(&log, ""))));
    s.wait_state("down: no directory yet", |st| {
        !st.up
            && st
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("cannot watch"))
    })
    .await;
    // An app that creates its log directory and writes two lines a moment later.
    std::fs::create_dir_all(&late).unwrap();
    append(&log, &format!("{}{}", oom("1.5"), oom("1.6")));
    assert_eq!(s.next().await.data["alloc_gib"], "1.5", "new in full");
    assert_eq!(s.next().await.data["alloc_gib"], "1.6");
    s.stop().await;
}

#[tokio::test]
async fn lines_written_to_the_rotated_file_after_the_new_one_appeared_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let old = dir.path().join("app.log.1");
    append(&log, "");
    let clock = std::sync::Arc::new(vigil::clock::ManualClock::at("2026-11-30T00:00:00Z"));
    let mut s = RunningSource::start_with_clock(
        "log",
        clock.clone(),
        Box::new(FileSource::new(config(&log, "rotate_grace = \"5s\""))),
    );
    s.wait_state("up", |st| st.up).await;
    std::fs::rename(&log, &old).unwrap();
    append(&log, &oom("2.1"));
    assert_eq!(s.next().await.data["alloc_gib"], "2.1");
    // The writer has not reopened yet: it still appends to the renamed file.
    append(&old, &oom("1.3"));
    append(&old, &oom("1.4"));
    assert_eq!(s.next().await.data["alloc_gib"], "1.3");
    assert_eq!(s.next().await.data["alloc_gib"], "1.4");
    // Idle for the grace period: released (closed), while the new file is still followed.
    let holds = |path: &Path| {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .any(|p| p == path)
    };
    assert!(
        holds(&old),
        "the rotated file is held open within the grace"
    );
    clock.advance(std::time::Duration::from_secs(6));
    append(&log, &oom("2.2"));
    assert_eq!(s.next().await.data["alloc_gib"], "2.2");
    common::wait_until("the rotated file released", &mut || !holds(&old)).await;
    append(&old, &oom("1.5"));
    s.quiet().await;
    s.stop().await;
}

#[tokio::test]
async fn copytruncate_nul_runs_do_not_swallow_the_next_line() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let mut s = started(&log, "").await;
    append(&log, &oom("1.0"));
    assert_eq!(s.next().await.data["alloc_gib"], "1.0");
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    s.quiet().await;
    // A writer without O_APPEND goes on at its old offset: the file is sparse up to there,
    // ~100 KB of NULs (more than max_line) before the next line.
    let writer = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    writer
        .write_all_at(format!("ERROR {}", oom("9.0")).as_bytes(), 100_000)
        .unwrap();
    let ev = s.next().await;
    assert_eq!(ev.data["alloc_gib"], "9.0");
    assert!(
        ev.data["line"].as_str().unwrap().starts_with("ERROR "),
        "{ev:?}"
    );
    assert_eq!(s.metrics.lines_truncated_total.get(&["log"]), 0.0);
    s.stop().await;
}
