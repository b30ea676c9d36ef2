//! The deploy/ files are real artefacts: Prometheus must accept the alert rules and their unit
//! tests must pass, and every alert has a runbook and a test that sees it fire and stay quiet.

const PROMETHEUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus");

#[test]
fn prometheus_rules_check_and_their_unit_tests_pass() {
    for args in [
        ["check", "rules", "vigil.rules.yml"],
        ["test", "rules", "vigil.rules.test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(PROMETHEUS)
            .output()
            .expect("promtool (Debian package prometheus; scripts/setup installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The alerts of the rules file, each with the lines of its rule (commented-out placeholders
/// are not alerts).
fn alerts(rules: &str) -> Vec<(String, Vec<&str>)> {
    let mut alerts: Vec<(String, Vec<&str>)> = Vec::new();
    for line in rules.lines() {
        let t = line.trim_start();
        if let Some(name) = t.strip_prefix("- alert: ") {
            alerts.push((name.trim().to_string(), Vec::new()));
        } else if t.starts_with("- record: ") || t.starts_with("- name: ") {
            // Only alerts are checked here; a recording rule or a new group ends the alert.
            alerts.push((String::new(), Vec::new()));
        } else if let Some((_, lines)) = alerts.last_mut() {
            lines.push(t);
        }
    }
    alerts.retain(|(name, _)| !name.is_empty());
    alerts
}

/// Every alert links its runbook in the README, and the promtool tests check each alert both
/// firing and quiet: a rule without a test could never fire and no one would know.
#[test]
fn every_alert_has_a_runbook_and_a_firing_and_a_quiet_test() {
    let rules = std::fs::read_to_string(format!("{PROMETHEUS}/vigil.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(format!("{PROMETHEUS}/vigil.rules.test.yml")).unwrap();
    let alerts = alerts(&rules);
    assert!(alerts.len() >= 15, "{alerts:?}");
    let test_lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for (name, lines) in &alerts {
        let runbook = lines
            .iter()
            .find_map(|l| l.strip_prefix("runbook_url: "))
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        assert!(
            runbook.starts_with("\"https://github.com/vigil/vigil#runbook-"),
            "{name}: {runbook}"
        );
        // The line after `alertname: NAME` says what the case expects.
        let expected: Vec<&str> = test_lines
            .windows(2)
            .filter(|w| w[0] == format!("alertname: {name}"))
            .map(|w| w[1])
            .collect();
        assert!(
            expected.contains(&"exp_alerts: []"),
            "{name}: no test that it stays quiet"
        );
        assert!(
            expected.contains(&"exp_alerts:"),
            "{name}: no test that it fires"
        );
    }
}
