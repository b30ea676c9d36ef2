//! The `vigil` binary: exit codes, messages, and the CLI beside a running daemon.

mod common;

use common::{out, vigil};
use std::time::{Duration, Instant};

#[test]
fn check_exits_1_with_the_place_and_0_when_valid() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[rules.gpu_oom]\non = \"gpu_oom\"\nintent = \"alert_gpu_oom\"\npririty = 9\n",
    )
    .unwrap();
    let (code, _, err) = out(vigil(dir.path()).arg("check").arg("--config").arg(&bad));
    assert_eq!(code, 1);
    assert_eq!(
        err.trim(),
        format!(
            "{}:4:1: unknown key \"pririty\" in [rules.gpu_oom]; did you mean \"priority\"?",
            bad.display()
        )
    );

    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[rules.gpu_oom]\non = \"gpu_oom\"\nintent = \"alert_gpu_oom\"\npriority = 9\n",
    )
    .unwrap();
    let (code, stdout, err) = out(vigil(dir.path()).args(["check", "-c"]).arg(&good));
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("valid (0 sources, 1 rules, 0 playbooks, 0 invariants)"),
        "{stdout}"
    );
    assert!(
        err.contains("warning: [rules.gpu_oom] waits for event \"gpu_oom\""),
        "{err}"
    );

    let (code, _, err) =
        out(vigil(dir.path()).args(["check", "--config", "/nonexistent/vigil.toml"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot read config /nonexistent/vigil.toml"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, _) = out(vigil(dir.path()).arg("frobnicate"));
    assert_eq!(code, 2);
    let (code, _, _) = out(vigil(dir.path()).args([
        "intents",
        "submit",
        "alert_x",
        "--priority",
        "11",
        "--reason",
        "r",
    ]));
    assert_eq!(code, 2);
}

#[test]
fn submit_list_show_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (code, path, err) = out(vigil(dir.path()).args([
        "intents",
        "submit",
        "alert_gpu_oom",
        "--priority",
        "9",
        "--reason",
        "OOM on gpu0",
        "--data",
        r#"{"alloc_gib": 2.5}"#,
    ]));
    assert_eq!(code, 0, "{err}");
    let path = path.trim().to_string();
    let name = std::path::Path::new(&path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        name.contains("_alert_gpu_oom_") && name.ends_with(".json"),
        "{name}"
    );
    let (code, stdout, _) = out(vigil(dir.path()).args(["intents", "verify", &path]));
    assert_eq!(code, 0);
    assert!(stdout.contains("valid"));

    let tampered = dir.path().join("tampered.json");
    std::fs::write(
        &tampered,
        std::fs::read_to_string(&path).unwrap().replace("2.5", "25"),
    )
    .unwrap();
    let (code, _, err) = out(vigil(dir.path()).args(["intents", "verify"]).arg(&tampered));
    assert_eq!(code, 1);
    assert!(err.contains("checksum mismatch"), "{err}");

    let (code, _, err) = out(vigil(dir.path()).args([
        "intents", "submit", "alert_x", "-p", "1", "-r", "r", "--data", "[1]",
    ]));
    assert_eq!(code, 1);
    assert!(err.contains("--data must be a JSON object"), "{err}");

    // Without a daemon nothing reads the inbox: the store is empty, and list --json says so.
    let (code, stdout, _) = out(vigil(dir.path()).args(["intents", "list", "--json"]));
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap(),
        serde_json::json!([])
    );
    let (code, _, err) = out(vigil(dir.path()).args(["intents", "show", "42"]));
    assert_eq!(code, 1);
    assert!(err.contains("no intent with id 42"), "{err}");
}

/// The daemon and the CLI share the store from two processes: never "database is locked".
#[test]
fn cli_beside_a_running_daemon_and_a_clean_stop_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, "[api]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let mut daemon = vigil(dir.path())
        .args(["run", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let n = 40;
    for i in 0..n {
        let (code, _, err) = out(vigil(dir.path())
            .args([
                "intents",
                "submit",
                &format!("alert_n{i}"),
                "-p",
                "5",
                "-r",
                "load",
            ])
            .arg("-c")
            .arg(&config));
        assert_eq!(code, 0, "{err}");
        let (code, stdout, err) = out(vigil(dir.path())
            .args(["intents", "list", "--json", "-n", "1000"])
            .arg("-c")
            .arg(&config));
        assert_eq!(code, 0, "{err}");
        assert!(!err.contains("locked"), "{err}");
        serde_json::from_str::<serde_json::Value>(&stdout).expect("list --json prints JSON only");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, stdout, _) = out(vigil(dir.path())
            .args(["intents", "list", "--json", "-n", "1000"])
            .arg("-c")
            .arg(&config));
        let list: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
        if list.len() == n {
            let first = &list[0];
            for key in [
                "id",
                "intent_type",
                "priority",
                "reason",
                "data",
                "created_at",
                "status",
            ] {
                assert!(first.get(key).is_some(), "list --json lacks {key}: {first}");
            }
            assert!(first["created_at"].as_str().unwrap().ends_with('Z'));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "daemon stored {} of {n}",
            list.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(last.starts_with("vigil stopped: uptime="), "{err}");
    assert!(last.ends_with(&format!("events=0, intents={n}")), "{last}");
}
