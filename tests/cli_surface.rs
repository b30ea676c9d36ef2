//! The command line's own surface: `vigil init`, completions and the man page from the clap
//! definition, and listings that say when they are empty (in human mode only).

mod common;

use common::{out, vigil};

#[test]
fn init_writes_a_starter_that_passes_check_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    let (code, stdout, err) = out(vigil(dir.path()).arg("init").arg(&etc));
    assert_eq!(code, 0, "{err}");
    let file = etc.join("vigil.toml");
    assert!(
        stdout.contains(&format!("wrote {}", file.display())),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("# vigil.toml: a starter config"),
        "commented"
    );
    for part in [
        "type = \"host\"",
        "[rules.disk_full]",
        "mode = \"predictive\"",
    ] {
        assert!(text.contains(part), "{part} in the starter");
    }
    let has_journal = ["/run/log/journal", "/var/log/journal"]
        .iter()
        .any(|d| std::path::Path::new(d).is_dir());
    if !has_journal {
        assert!(!text.contains("type = \"journald\""), "no journal here");
    }

    let (code, stdout, err) = out(vigil(dir.path()).arg("check").arg("--config").arg(&file));
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("valid ("), "{stdout}");
    assert!(stdout.contains("1 playbooks"), "{stdout}");
    assert!(!err.contains("warning"), "the starter checks clean: {err}");

    // A second init leaves the file alone, says where it is and how to replace it.
    std::fs::write(&file, "# mine\n").unwrap();
    let (code, stdout, err) = out(vigil(dir.path()).arg("init").arg(&etc));
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        err.contains(&format!("{} already exists", file.display())),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "# mine\n");
    let (code, _, err) = out(vigil(dir.path()).arg("init").arg("--force").arg(&etc));
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    // Without DIR it writes ./vigil.toml, even beside nothing else; a broken config there
    // does not stop it.
    let here = dir.path().join("here");
    std::fs::create_dir(&here).unwrap();
    let (code, _, err) = out(vigil(dir.path()).arg("init").current_dir(&here));
    assert_eq!(code, 0, "{err}");
    assert!(here.join("vigil.toml").is_file());
}

#[test]
fn completions_and_man_page_come_from_the_command_definition() {
    let dir = tempfile::tempdir().unwrap();
    // The bash script, run by bash, completes vigil's subcommands.
    let (code, script, err) = out(vigil(dir.path()).args(["completions", "bash"]));
    assert_eq!(code, 0, "{err}");
    for sub in [
        "intents",
        "invariants",
        "escalation",
        "init",
        "completions",
        "man",
    ] {
        assert!(script.contains(sub), "{sub} in the bash completions");
    }
    let file = dir.path().join("vigil.bash");
    std::fs::write(&file, &script).unwrap();
    let probe = format!(
        "source {}; COMP_WORDS=(vigil inv); COMP_CWORD=1; _vigil vigil inv vigil; echo \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let (code, words, err) = out(std::process::Command::new("bash").arg("-c").arg(&probe));
    assert_eq!(code, 0, "{err}");
    assert_eq!(words.trim(), "invariants");
    for shell in ["zsh", "fish"] {
        let (code, script, err) = out(vigil(dir.path()).args(["completions", shell]));
        assert_eq!(code, 0, "{err}");
        assert!(
            script.contains("intents") && script.contains("json"),
            "{shell}"
        );
    }
    let (code, _, _) = out(vigil(dir.path()).args(["completions", "tcsh"]));
    assert_eq!(code, 2, "an unknown shell is a usage error");

    let (code, roff, err) = out(vigil(dir.path()).arg("man"));
    assert_eq!(code, 0, "{err}");
    assert!(roff.contains(".TH vigil 1"), "{roff}");
    assert!(roff.contains("intents"), "subcommands listed");
    // Rendered by man itself when it is installed.
    if std::process::Command::new("man")
        .arg("--version")
        .output()
        .is_ok()
    {
        let mut man = std::process::Command::new("man")
            .args(["-l", "-"])
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "80")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(man.stdin.as_mut().unwrap(), roff.as_bytes()).unwrap();
        let o = man.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            text.contains("NAME") && text.contains("self-healing daemon"),
            "{text}"
        );
    }
}

#[test]
fn empty_listings_say_so_and_json_stays_json() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str, serde_json::Value); 5] = [
        (
            &["audit", "tail"],
            "the audit trail is empty",
            serde_json::json!([]),
        ),
        (
            &["audit", "count"],
            "the audit trail is empty",
            serde_json::json!({}),
        ),
        (
            &["invariants", "list"],
            "no invariants configured",
            serde_json::json!([]),
        ),
        (&["intents", "list"], "no intents", serde_json::json!([])),
        (
            &["symptoms", "list"],
            "no symptoms in the window",
            serde_json::json!([]),
        ),
    ];
    for (args, says, empty) in cases {
        let (code, stdout, err) = out(vigil(dir.path()).args(args));
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(stdout.contains(says), "{args:?}: {stdout:?}");
        let (code, stdout, err) = out(vigil(dir.path()).args(args).arg("--json"));
        assert_eq!(code, 0, "{args:?}: {err}");
        let v: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("{args:?} --json prints only JSON ({e}): {stdout}"));
        assert_eq!(v, empty, "{args:?}");
    }
}
