//! The README's quickstart block, pasted as written, shows what the README says it shows.

use std::process::Command;

/// The first ```sh block after `heading`.
fn block_after(readme: &str, heading: &str) -> String {
    let at = readme
        .find(heading)
        .unwrap_or_else(|| panic!("{heading} in README"));
    let rest = &readme[at..];
    let start = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let len = rest[start..].find("```").expect("the block's end");
    rest[start..start + len].to_string()
}

#[test]
fn the_quickstart_block_works_when_pasted() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let block = block_after(&readme, "## Quickstart")
        .replace("./target/release/vigil", env!("CARGO_BIN_EXE_vigil"));
    let data = tempfile::tempdir().unwrap();
    let _ = std::fs::remove_dir_all("/tmp/vigil-quickstart");
    // The block leaves the daemon running in the background, as a user's shell would; stop it.
    let script = format!("set -e\n{block}\nkill %1\nwait %1 || true\n");
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(root)
        .env("VIGIL_DATA_DIR", data.path())
        .env_remove("VIGIL_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains("pending")).collect();
    assert_eq!(rows.len(), 2, "two intents, as the README says:\n{stdout}");
    assert!(
        rows[0].contains("trigger_gpu_fit_check")
            && rows[0].contains("3 GPU OOMs within 10m, the last one 4.25 GiB"),
        "{stdout}"
    );
    assert!(
        rows[1].contains("alert_gpu_oom")
            && rows[1].contains("GPU OOM: tried to allocate 2.50 GiB"),
        "{stdout}"
    );
}
