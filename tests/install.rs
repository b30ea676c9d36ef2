//! Installed and safe by default: the data directory private (0700, files 0600), the API token
//! generated once and announced once, `vigil status` naming the config the running daemon
//! uses, audit day files kept bounded, and the systemd unit as `systemd-analyze` sees it.

mod common;

use common::{out, vigil};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// `vigil run --config CONFIG` on DATA, its stderr into LOG; returns once it has started
/// (its record says it runs).
fn start(data: &Path, config: &Path, log: &Path) -> Child {
    let record = data.join("daemon.json");
    let before = std::fs::read_to_string(&record).ok();
    let child = vigil(data)
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    common::wait_blocking("the daemon record", 20, || {
        let now = std::fs::read_to_string(&record).ok();
        now.is_some() && now != before
    });
    child
}

fn stop(mut child: Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_daemon_keeps_its_data_private_announces_its_token_once_and_status_names_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("etc/my-vigil.toml");
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::write(&conf, "[api]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let data = dir.path().join("var/data");
    let log = dir.path().join("first.log");
    let daemon = start(&data, &conf, &log);

    // The CLI from elsewhere (no vigil.toml there: it would pick the built-in default) names
    // the running daemon's config.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let conf_abs = conf.canonicalize().unwrap();
    let (code, stdout, err) = out(vigil(&data).arg("status").current_dir(&elsewhere));
    assert_eq!(code, 0, "{err}");
    let first = stdout.lines().next().unwrap();
    assert!(
        first.starts_with(&format!(
            "config: {} (the running daemon's: pid {}",
            conf_abs.display(),
            daemon.id()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("(built-in default)"), "{stdout}");
    let (_, stdout, _) = out(vigil(&data)
        .args(["status", "--json"])
        .current_dir(&elsewhere));
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["daemon"]["config"], conf_abs.to_str().unwrap());
    assert_eq!(status["daemon"]["running"], true);
    assert_eq!(status["daemon"]["pid"], daemon.id());

    // Something for the audit trail, through the CLI beside the daemon.
    let (code, _, err) = out(vigil(&data)
        .args(["symptoms", "record", "disk_slow"])
        .arg("--config")
        .arg(&conf));
    assert_eq!(code, 0, "{err}");

    assert_eq!(mode(&data), 0o700, "data dir");
    for f in ["vigil.db", "api.token", "daemon.json"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    // SQLite gives its WAL and shared-memory files the store's mode.
    for f in ["vigil.db-wal", "vigil.db-shm"] {
        if data.join(f).exists() {
            assert_eq!(mode(&data.join(f)), 0o600, "{f}");
        }
    }
    let audit: Vec<_> = std::fs::read_dir(data.join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(audit.len(), 1);
    assert_eq!(mode(&audit[0]), 0o600, "{}", audit[0].display());
    assert_eq!(mode(&data.join("audit")), 0o700);

    // The token is announced once, with how to use it.
    let token_file = data.join("api.token");
    let token = std::fs::read_to_string(&token_file).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!(
            "generated an API token in {}",
            token_file.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "curl -H \"Authorization: Bearer $(cat {})\"",
            token_file.display()
        )),
        "{text}"
    );
    assert!(
        !text.contains(token.trim()),
        "the secret itself is not logged"
    );
    stop(daemon);

    let (_, stdout, _) = out(vigil(&data).arg("status").current_dir(&elsewhere));
    assert!(
        stdout.contains(&format!(
            "daemon: not running (the last one ran with {}, stopped ",
            conf_abs.display()
        )),
        "{stdout}"
    );

    // A second start keeps the token and says nothing of it.
    let log2 = dir.path().join("second.log");
    let daemon = start(&data, &conf, &log2);
    stop(daemon);
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), token);
    let text = std::fs::read_to_string(&log2).unwrap();
    assert!(!text.contains("generated an API token"), "{text}");
}

#[test]
fn a_store_made_before_is_narrowed_to_0600() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let db = data.join("vigil.db");
    std::fs::write(&db, b"").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = out(vigil(&data).args(["intents", "list"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(mode(&db), 0o600);
}

#[test]
fn audit_day_files_past_retention_are_deleted_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let today: jiff::civil::Date = "2026-11-30".parse().unwrap();
    for name in [
        "20261029.jsonl", // 32 days before: gone
        "20261031.jsonl", // 30 days before: kept
        "20261130.jsonl",
        "notes.txt",
        "2026.jsonl",
    ] {
        std::fs::write(dir.path().join(name), "{}\n").unwrap();
    }
    let n =
        vigil::daemon::prune_audit_files(dir.path(), today, Duration::from_secs(30 * 24 * 3600));
    assert_eq!(n, 1);
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "2026.jsonl",
            "20261031.jsonl",
            "20261130.jsonl",
            "notes.txt"
        ]
    );
}

/// `systemd-analyze verify` on the shipped unit (installed by scripts/setup with systemd); its
/// binary path points at the built one, since verify checks that ExecStart exists.
#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let root = env!("CARGO_MANIFEST_DIR");
    let unit = std::fs::read_to_string(format!("{root}/deploy/vigil.service")).unwrap();
    for key in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/vigil",
        "Restart=on-failure",
        "LimitNOFILE=",
    ] {
        assert!(unit.contains(key), "{key} in deploy/vigil.service");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vigil.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/vigil", env!("CARGO_BIN_EXE_vigil")),
    )
    .unwrap();
    let o = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd; scripts/setup installs it)");
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
