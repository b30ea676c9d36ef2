//! The deploy/ files are real artefacts: Prometheus must accept the alert rules and their unit
//! tests must pass.

#[test]
fn prometheus_rules_check_and_their_unit_tests_pass() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
    for args in [
        ["check", "rules", "prometheus-rules.yml"],
        ["test", "rules", "prometheus-rules.test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(dir)
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
