//! Every shipped example config is valid as written.

#[test]
fn every_example_config_passes_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
                    .args(["check", "--config"])
                    .arg(&path)
                    // Packs that read another system's state name it through the environment.
                    .env("TRINITY_DB", "/tmp/trinity.db")
                    .env("TRINITY_REDIS_URL", "redis://127.0.0.1:6379")
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 3, "only {checked} example configs found");
}
