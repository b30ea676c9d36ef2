//! exec::Cmd against real processes.

mod common;

use std::time::Duration;
use vigil::exec::{Cmd, ExecError, OUTPUT_TAIL};

fn sh(script: &str, timeout: Duration) -> Cmd {
    Cmd::new(["sh", "-c", script], timeout)
}

#[tokio::test]
async fn exit_codes_and_output() {
    let out = sh("echo hello; echo oops >&2; exit 3", Duration::from_secs(10))
        .run()
        .await
        .unwrap();
    assert_eq!(out.code, Some(3));
    assert!(!out.success());
    assert!(!out.timed_out);
    assert_eq!(out.stdout, "hello\n");
    assert_eq!(out.stderr, "oops\n");
    assert_eq!(out.describe(), "exit status 3");

    let ok = Cmd::new(["true"], Duration::from_secs(10))
        .run()
        .await
        .unwrap();
    assert!(ok.success());
}

#[tokio::test]
async fn env_and_cwd_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let out = sh("echo \"$GREETING\"; pwd", Duration::from_secs(10))
        .env("GREETING", "hi there")
        .cwd(dir.path())
        .run()
        .await
        .unwrap();
    let canon = dir.path().canonicalize().unwrap();
    assert_eq!(out.stdout, format!("hi there\n{}\n", canon.display()));

    let err = sh("true", Duration::from_secs(1))
        .cwd(dir.path().join("missing"))
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::NoCwd(..)), "{err}");
}

#[tokio::test]
async fn missing_program_is_a_clear_error() {
    let err = Cmd::new(["vigil-no-such-program"], Duration::from_secs(1))
        .run()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "command `vigil-no-such-program` not found: install it or give its full path"
    );
    let err = Cmd::new(Vec::<String>::new(), Duration::from_secs(1))
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Empty));
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // The child starts a grandchild that sleeps, records both pids, then sleeps itself.
    let script = format!(
        "sleep 300 & echo $! > {p}; echo $$ >> {p}; sleep 300",
        p = pids.display()
    );
    let out = sh(&script, Duration::from_millis(500)).run().await.unwrap();
    assert!(out.timed_out);
    assert!(!out.success());
    assert_eq!(out.signal, Some(libc::SIGKILL));
    assert!(
        out.describe().starts_with("timed out"),
        "{}",
        out.describe()
    );

    let text = std::fs::read_to_string(&pids).unwrap();
    let pids: Vec<i32> = text.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(pids.len(), 2, "{text}");
    // The grandchild is reparented to init, which reaps it; wait for that with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| common::alive(*p)) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for p in pids {
        assert!(!common::alive(p), "pid {p} survived the timeout");
    }
}

#[tokio::test]
async fn output_tail_is_bounded() {
    // 1 MiB of 'x' then a marker: only the last OUTPUT_TAIL bytes are kept, marker included.
    let out = sh(
        "head -c 1048576 /dev/zero | tr '\\0' x; echo END",
        Duration::from_secs(20),
    )
    .run()
    .await
    .unwrap();
    assert!(out.success(), "{}", out.describe());
    assert_eq!(out.stdout.len(), OUTPUT_TAIL);
    assert!(out.stdout.ends_with("xEND\n"));
}

#[tokio::test]
async fn background_child_holding_pipes_does_not_hang() {
    // The shell exits at once but leaves a sleeper holding stdout open.
    let out = sh("sleep 300 & echo started", Duration::from_millis(700))
        .run()
        .await
        .unwrap();
    assert_eq!(out.code, Some(0));
    assert_eq!(out.stdout, "started\n");
}

#[tokio::test]
async fn a_helper_in_its_own_session_holding_the_pipes_does_not_hold_the_command() {
    // `setsid` takes the helper out of the group, so no group kill reaches it: the command used
    // to stay "running" for as long as the helper held its output pipe (25 s and more).
    let started = std::time::Instant::now();
    let out = sh("setsid sleep 60 & echo $!", Duration::from_secs(3))
        .run()
        .await
        .unwrap();
    assert!(!out.timed_out, "{}", out.describe());
    assert_eq!(out.code, Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "ended with its direct child, not at the timeout"
    );
    let helper: i32 = out.stdout.trim().parse().unwrap();
    assert!(
        common::alive(helper),
        "the helper is the command's business"
    );
    unsafe { libc::kill(helper, libc::SIGKILL) };
}

#[tokio::test]
async fn a_cleared_environment_keeps_the_base_and_what_is_given() {
    let out = Cmd::new(["env"], Duration::from_secs(5))
        .clear_env()
        .env("STEP_VAR", "1")
        .run()
        .await
        .unwrap();
    let keys: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(
        keys.contains(&"PATH") && keys.contains(&"STEP_VAR"),
        "{keys:?}"
    );
    // cargo gives the test process CARGO_* variables: the daemon's environment stays out.
    assert!(std::env::var("CARGO_MANIFEST_DIR").is_ok());
    assert!(
        keys.iter()
            .all(|k| vigil::exec::BASE_ENV.contains(k) || *k == "STEP_VAR"),
        "{keys:?}"
    );
}
