//! `vigil acceptance` through the binary: one line per check, exit 0 only when all pass; an
//! invalid config and a failing test service each fail it with their line.

mod canary_support;
mod common;

use canary_support::*;

fn config(p: Ports, service_args: &str) -> String {
    format!(
        r#"
[windows.maintenance]
at = "03:00-07:00"
[budgets.gpu_downtime]
seconds = 60

[canaries.test_service]
production = {{ systemd = "judge.service" }}
command = ["python3", "{SERVICE}", "--port", "{{port}}"{service_args}]
ports = "{}-{}"
path = "spare"
health = {{ http = "http://127.0.0.1:{{port}}/health", timeout = "10s" }}
probe = {{ http = "http://127.0.0.1:{{port}}/v1/completions", body = "{{}}", requests = 20, concurrency = 4 }}
judge = {{ max_error_rate = 0.01, max_p95_ms = 5000 }}
"#,
        p.first,
        p.first + 2
    )
}

fn acceptance(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(&cfg, text).unwrap();
    common::out(common::vigil(&dir.path().join("data")).args([
        "acceptance",
        "--config",
        cfg.to_str().unwrap(),
    ]))
}

#[test]
fn every_check_passes_on_a_healthy_test_service() {
    let p = Ports::pick();
    let (code, out, err) = acceptance(&config(p, ""));
    assert_eq!(code, 0, "{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 7, "{out}");
    for (line, check) in lines.iter().zip([
        "config valid",
        "predictive mode, no downtime",
        "budget ledger",
        "locks free",
        "audit trail writable",
        "spare-path canary",
    ]) {
        assert!(line.starts_with(&format!("ok    {check}: ")), "{line}");
    }
    assert!(lines[1].contains("test_service predicted"), "{out}");
    assert!(
        lines[2].contains("gpu_downtime 60.0s of 60.0s left"),
        "{out}"
    );
    assert!(
        lines[5].contains(&format!("test_service passed on port {}", p.first)),
        "{out}"
    );
    assert_eq!(lines[6], "acceptance: all 6 checks passed");
    assert!(!listening(p.first), "the candidate was stopped");
}

#[test]
fn an_invalid_config_or_a_failing_service_fails_with_its_line() {
    let p = Ports::pick();
    let (code, out, _) = acceptance(&config(p, "").replace("requests = 20", "requets = 20"));
    assert_eq!(code, 1);
    assert!(out.starts_with("FAIL  config valid: "), "{out}");
    assert!(
        out.contains("unknown key \\\"requets\\\"") || out.contains("unknown key \"requets\""),
        "{out}"
    );

    // Every other answer an error: the judge rolls it back, the check fails, exit 1.
    let (code, out, _) = acceptance(&config(p, r#", "--error-every", "2""#));
    assert_eq!(code, 1, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("spare-path canary"))
        .unwrap();
    assert!(
        line.starts_with(
            "FAIL  spare-path canary: test_service rolled_back: error rate 50.0% (10 of 20)"
        ),
        "{line}"
    );
    assert_eq!(out.lines().last(), Some("acceptance: 1 of 6 checks failed"));
}
