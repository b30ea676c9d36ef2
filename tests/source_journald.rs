//! The journald source against real journal files, written in the journal export format and
//! converted by systemd-journal-remote, read through the real journalctl.

mod common;

use common::RunningSource;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use vigil::config::Pattern;
use vigil::sources::journald::{JournaldConfig, JournaldSource};
use vigil::sources::lines::{LineMatch, Matches};

const JOURNAL_REMOTE: &str = "/usr/lib/systemd/systemd-journal-remote";
const BOOT: &str = "0123456789abcdef0123456789abcdef";

enum Msg<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

/// One entry in the export format: text fields as `K=V`, binary ones as name, 64-bit LE size,
/// bytes.
fn entry(usec: u64, unit: &str, priority: u8, msg: Msg) -> Vec<u8> {
    let mut out = format!(
        "__REALTIME_TIMESTAMP={usec}\n__MONOTONIC_TIMESTAMP={usec}\n_BOOT_ID={BOOT}\n_SYSTEMD_UNIT={unit}\nPRIORITY={priority}\n"
    )
    .into_bytes();
    match msg {
        Msg::Text(t) => out.extend_from_slice(format!("MESSAGE={t}\n").as_bytes()),
        Msg::Binary(b) => {
            out.extend_from_slice(b"MESSAGE\n");
            out.extend_from_slice(&(b.len() as u64).to_le_bytes());
            out.extend_from_slice(b);
            out.push(b'\n');
        }
    }
    out.push(b'\n');
    out
}

/// Converts export-format entries into a journal file at `out` (must end in `.journal`).
fn write_journal(out: &Path, entries: &[Vec<u8>]) {
    let mut child = Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", out.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-journal-remote is installed (Debian package systemd-journal-remote)");
    let mut stdin = child.stdin.take().unwrap();
    for e in entries {
        stdin.write_all(e).unwrap();
    }
    drop(stdin);
    let done = child.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(out.exists());
}

fn sample() -> Vec<Vec<u8>> {
    vec![
        entry(
            1_700_000_000_000_000,
            "judge.service",
            3,
            Msg::Text("CUDA out of memory on gpu 2"),
        ),
        entry(
            1_700_000_001_000_000,
            "other.service",
            6,
            Msg::Binary(b"bin\x01ary\xff"),
        ),
        entry(
            1_700_000_002_000_000,
            "judge.service",
            6,
            Msg::Text("judge ready"),
        ),
    ]
}

fn config() -> JournaldConfig {
    JournaldConfig {
        units: vec![],
        file: None,
        directory: None,
        matches: Matches::default(),
        from_start: true,
        command: vec!["journalctl".into()],
        max_line: 64 * 1024,
    }
}

/// Runs the source on its own, so a test sees its error (`error`) instead of a retry.
fn start(config: JournaldConfig) -> RunningSource {
    RunningSource::start_unsupervised("journal", Box::new(JournaldSource::new(config)))
}

/// Up while following, even with nothing more to read.
async fn wait_up(run: &RunningSource) {
    common::wait_until("source marked up", &mut || {
        run.metrics.source_up.get(&["journal"]) == 1.0
    })
    .await;
}

#[tokio::test]
async fn reads_a_journal_file_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.journal");
    write_journal(&file, &sample());
    let mut run = start(JournaldConfig {
        file: Some(file),
        ..config()
    });
    let ev = run.next().await;
    assert_eq!(ev.kind, "line");
    assert_eq!(ev.source, "journal");
    assert_eq!(ev.data["line"], "CUDA out of memory on gpu 2");
    assert_eq!(ev.data["unit"], "judge.service");
    assert_eq!(ev.data["priority"], 3);
    // A MESSAGE that is not text comes as an array of bytes and is decoded lossily.
    let ev = run.next().await;
    assert_eq!(ev.data["line"], "bin\u{1}ary\u{fffd}");
    assert_eq!(ev.data["unit"], "other.service");
    assert_eq!(ev.data["priority"], 6);
    let ev = run.next().await;
    assert_eq!(ev.data["line"], "judge ready");
    wait_up(&run).await;
    run.stop().await;
}

#[tokio::test]
async fn directory_with_unit_filter_and_matches() {
    let dir = tempfile::tempdir().unwrap();
    write_journal(&dir.path().join("a.journal"), &sample());
    let mut run = start(JournaldConfig {
        directory: Some(dir.path().to_path_buf()),
        units: vec!["judge.service".into()],
        matches: Matches(vec![
            LineMatch {
                regex: Pattern(regex::Regex::new(r"out of memory on gpu (?P<gpu>\d+)").unwrap()),
                event: "gpu_oom".into(),
            },
            LineMatch {
                regex: Pattern(regex::Regex::new(r"^bin").unwrap()),
                event: "binary".into(),
            },
            LineMatch {
                regex: Pattern(regex::Regex::new(r"ready").unwrap()),
                event: "ready".into(),
            },
        ]),
        ..config()
    });
    let ev = run.next().await;
    assert_eq!(ev.kind, "gpu_oom");
    assert_eq!(ev.data["gpu"], "2");
    assert_eq!(ev.data["unit"], "judge.service");
    // other.service's binary entry is filtered out by the unit.
    let ev = run.next().await;
    assert_eq!(ev.kind, "ready");
    run.stop().await;
}

#[tokio::test]
async fn follows_new_journal_files_and_skips_old_entries() {
    let dir = tempfile::tempdir().unwrap();
    write_journal(&dir.path().join("old.journal"), &sample());
    let mut run = start(JournaldConfig {
        directory: Some(dir.path().to_path_buf()),
        from_start: false,
        ..config()
    });
    wait_up(&run).await;
    let tmp = tempfile::tempdir().unwrap();
    let fresh: PathBuf = tmp.path().join("new.journal");
    write_journal(
        &fresh,
        &[entry(
            1_800_000_000_000_000,
            "judge.service",
            4,
            Msg::Text("fresh entry"),
        )],
    );
    std::fs::rename(&fresh, dir.path().join("new.journal")).unwrap();
    // The first event is the new entry: the three old ones were not replayed.
    let ev = run.next().await;
    assert_eq!(ev.data["line"], "fresh entry");
    assert_eq!(ev.data["priority"], 4);
    run.stop().await;
}

#[tokio::test]
async fn long_messages_are_cut_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("long.journal");
    let long = "x".repeat(100);
    write_journal(
        &file,
        &[entry(
            1_700_000_000_000_000,
            "a.service",
            6,
            Msg::Text(&long),
        )],
    );
    let mut run = start(JournaldConfig {
        file: Some(file),
        max_line: 10,
        ..config()
    });
    let ev = run.next().await;
    assert_eq!(ev.data["line"], "xxxxxxxxxx");
    assert_eq!(run.metrics.lines_truncated_total.get(&["journal"]), 1.0);
    run.stop().await;
}

#[tokio::test]
async fn missing_journalctl_is_a_clear_error() {
    let run = start(JournaldConfig {
        command: vec!["/nonexistent/journalctl".into()],
        ..config()
    });
    let err = run.error().await;
    assert!(
        err.starts_with(
            "command `/nonexistent/journalctl` not found: install it or give its full path"
        ),
        "{err}"
    );
    assert!(err.contains("set `command`"), "{err}");
}

#[tokio::test]
async fn missing_journal_file_reports_journalctl_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let run = start(JournaldConfig {
        file: Some(dir.path().join("absent.journal")),
        ..config()
    });
    let err = run.error().await;
    assert!(err.contains("journalctl"), "{err}");
    assert!(err.contains("No such file or directory"), "{err}");
    assert!(err.contains("check that the journal"), "{err}");
}

/// One export-format entry with exactly these text fields.
fn raw_entry(usec: u64, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out =
        format!("__REALTIME_TIMESTAMP={usec}\n__MONOTONIC_TIMESTAMP={usec}\n_BOOT_ID={BOOT}\n");
    for (k, v) in fields {
        out.push_str(&format!("{k}={v}\n"));
    }
    out.push('\n');
    out.into_bytes()
}

/// What systemd writes when a unit's main process is killed: from PID 1, in init.scope,
/// with `UNIT=` naming the unit it is about.
fn pid1_about(usec: u64, unit: &str) -> Vec<u8> {
    raw_entry(
        usec,
        &[
            ("_PID", "1"),
            ("_UID", "0"),
            ("_SYSTEMD_UNIT", "init.scope"),
            ("UNIT", unit),
            ("PRIORITY", "5"),
            (
                "MESSAGE",
                &format!("{unit}: Main process exited, code=killed, status=9/KILL"),
            ),
        ],
    )
}

fn crash_match() -> Matches {
    Matches(vec![LineMatch {
        regex: Pattern(regex::Regex::new(r"Main process exited, code=killed").unwrap()),
        event: "unit_crashed".into(),
    }])
}

#[tokio::test]
async fn systemd_messages_about_a_unit_carry_that_unit() {
    let dir = tempfile::tempdir().unwrap();
    write_journal(
        &dir.path().join("a.journal"),
        &[
            pid1_about(1_700_000_000_000_000, "nginx.service"),
            pid1_about(1_700_000_001_000_000, "other.service"),
            // A process cannot make its line about another unit by setting UNIT= itself.
            raw_entry(
                1_700_000_002_000_000,
                &[
                    ("_PID", "4242"),
                    ("_UID", "1000"),
                    ("_SYSTEMD_UNIT", "app.service"),
                    ("UNIT", "nginx.service"),
                    (
                        "MESSAGE",
                        "app.service: Main process exited, code=killed (a lie)",
                    ),
                ],
            ),
            raw_entry(
                1_700_000_003_000_000,
                &[
                    ("_PID", "77"),
                    ("_UID", "33"),
                    ("_SYSTEMD_UNIT", "nginx.service"),
                    ("MESSAGE", "worker Main process exited, code=killed"),
                ],
            ),
        ],
    );
    // Following nginx.service: PID 1's entry about it and its own, labelled nginx.service.
    let mut run = start(JournaldConfig {
        directory: Some(dir.path().to_path_buf()),
        units: vec!["nginx.service".into()],
        matches: crash_match(),
        ..config()
    });
    let ev = run.next().await;
    assert_eq!(ev.kind, "unit_crashed");
    assert_eq!(
        ev.data["line"],
        "nginx.service: Main process exited, code=killed, status=9/KILL"
    );
    assert_eq!(ev.data["unit"], "nginx.service");
    let ev = run.next().await;
    assert_eq!(ev.data["line"], "worker Main process exited, code=killed");
    assert_eq!(ev.data["unit"], "nginx.service");
    wait_up(&run).await;
    run.no_event();
    run.stop().await;

    // The whole journal: each crash is about its own unit, so group_by = ["unit"] tells them
    // apart; the forged UNIT= stays the app's own.
    let mut run = start(JournaldConfig {
        directory: Some(dir.path().to_path_buf()),
        matches: crash_match(),
        ..config()
    });
    let units: Vec<String> = [
        run.next().await,
        run.next().await,
        run.next().await,
        run.next().await,
    ]
    .iter()
    .map(|e| e.data["unit"].as_str().unwrap().to_string())
    .collect();
    assert_eq!(
        units,
        [
            "nginx.service",
            "other.service",
            "app.service",
            "nginx.service"
        ]
    );
    run.stop().await;
}
