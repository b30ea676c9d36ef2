//! With inotify used up, the file source and the inbox fall back to polling, say so, and lose
//! nothing. inotify instances are limited per user (fs.inotify.max_user_instances): a helper
//! process running as `nobody` takes them all, and a real `vigil run` as `nobody` starts beside
//! it. Other tests, running as another user, are not touched.

mod common;

use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use vigil::intent::{inbox, NewIntent};

const NOBODY: u32 = 65534;
const TOKEN: &str = "t";

fn chown(path: &Path) {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// A process as `nobody` holding every inotify instance that user may have.
fn hog() -> (Child, usize) {
    let script = "import ctypes, time\n\
libc = ctypes.CDLL(None, use_errno=True)\n\
n = 0\n\
while libc.inotify_init() >= 0:\n    n += 1\n\
print(n, flush=True)\n\
time.sleep(300)\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().parse().unwrap())
}

async fn get(port: u16, path: &str) -> serde_json::Value {
    reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_inotify_used_up_the_file_source_and_the_inbox_poll_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (data, logs) = (dir.path().join("data"), dir.path().join("logs"));
    std::fs::create_dir_all(data.join("inbox")).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("app.log");
    std::fs::write(&log, "").unwrap();
    for p in [dir.path(), &data, &data.join("inbox"), &logs, &log] {
        chown(p);
    }
    let port = common::redis_server::free_port();
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            r#"data_dir = "{data}"
[api]
listen = "127.0.0.1:{port}"
token = "{TOKEN}"
[sources.log]
type = "file"
path = "{log}"
[[sources.log.match]]
regex = 'CUDA out of memory'
event = "gpu_oom"
[rules.gpu_oom]
on = "gpu_oom"
intent = "alert_gpu_oom"
priority = 9
reason = "GPU OOM"
"#,
            data = data.display(),
            log = log.display()
        ),
    )
    .unwrap();

    let (mut hog, taken) = hog();
    assert!(taken > 0, "the hog holds inotify instances");
    // A copy nobody can run, wherever the build put the binary.
    let bin = dir.path().join("vigil");
    std::fs::copy(env!("CARGO_BIN_EXE_vigil"), &bin).unwrap();
    chown(&bin);
    let mut daemon = Command::new(&bin)
        .env_remove("VIGIL_CONFIG")
        .args(["run", "--config"])
        .arg(&config)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let polling = |state: &serde_json::Value, name: &str| {
        state.as_array().unwrap().iter().any(|s| {
            s["source"] == name
                && s["up"] == true
                && s["reason"].as_str().is_some_and(|r| {
                    r.contains("polling every second")
                        && r.contains("raise fs.inotify.max_user_instances")
                })
        })
    };
    common::wait_within_async(
        "both watches fall back to polling, and say so",
        15,
        || async {
            let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/api/sources")).await else {
                return false;
            };
            let s: serde_json::Value = r.json().await.unwrap_or_default();
            s.is_array() && polling(&s, "log") && polling(&s, "inbox")
        },
    )
    .await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("vigil_source_degraded{source=\"log\"} 1")
            && metrics.contains("vigil_source_degraded{source=\"inbox\"} 1"),
        "{metrics}"
    );

    // A line in the log and a file in the inbox still become intents.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"torch: CUDA out of memory\n")
        .unwrap();
    let body = serde_json::json!({"intent_type": "alert_from_inbox", "priority": 5});
    inbox::write(
        &data.join("inbox"),
        &NewIntent::from_body(body.as_object().unwrap(), "test").unwrap(),
        1,
    )
    .unwrap();
    common::wait_within_async("both intents stored", 15, || async {
        let list = get(port, "/api/intents").await;
        let types: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["intent_type"].as_str())
            .collect();
        types.contains(&"alert_gpu_oom") && types.contains(&"alert_from_inbox")
    })
    .await;

    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(daemon.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("by polling every 1s: inotify instances used up"),
        "the log says so: {stderr}"
    );
    hog.kill().unwrap();
    hog.wait().unwrap();
}
