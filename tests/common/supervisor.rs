//! The supervisor on its own: an app on a temp dir, a supervisor started on it, and the events
//! it sends (the daemon's units are reached through `TestDaemon`).

// For the supervisor tests that glob-import this module; unused by the others.
#[allow(unused_imports)]
pub use super::redis_server::free_port;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use vigil::app::App;
use vigil::clock::SystemClock;
use vigil::config::Config;
use vigil::event::Event;
use vigil::supervisor::{Status, Supervisor};

pub fn app(dir: &std::path::Path, config: &str) -> Arc<App> {
    let text = config.replace("{dir}", &dir.display().to_string());
    let config = Config::parse("test.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(App::new(config, dir.to_path_buf(), Arc::new(SystemClock)))
}

pub async fn start(app: &Arc<App>) -> (Supervisor, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel(4096);
    let sup = Supervisor::start(app.clone(), tx).await.unwrap();
    (sup, rx)
}

/// Waits for the unit's status to satisfy `pred` (woken by each change; bounded so a broken
/// supervisor fails the test instead of hanging it).
pub async fn wait(
    sup: &Supervisor,
    unit: &str,
    what: &str,
    pred: impl FnMut(&Status) -> bool,
) -> Status {
    tokio::time::timeout(Duration::from_secs(20), sup.wait_for(unit, pred))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "timed out waiting for {unit}: {what}; now {:?}",
                sup.status(unit)
            )
        })
        .unwrap()
}

/// Every event received so far.
pub fn drain(rx: &mut mpsc::Receiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

pub fn count(events: &[Event], kind: &str) -> usize {
    events.iter().filter(|e| e.kind == kind).count()
}

/// Is a process with this pid (and, if given, this start time) present in /proc at all,
/// zombie or not?
pub fn present(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Pids of processes whose environment holds `VIGIL_UNIT_ID=<prefix>...`.
pub fn marked(prefix: &str) -> Vec<i32> {
    let want = format!("VIGIL_UNIT_ID={prefix}");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            if env
                .split(|b| *b == 0)
                .any(|v| v.starts_with(want.as_bytes()))
            {
                out.push(pid);
            }
        }
    }
    out
}
/// Writes `DIR/server.py`: a real HTTP server for units to run, `server.py PORT DIR [DELAY]`.
/// It listens after DELAY seconds and answers every GET 200 `ok`, or 500 `sick` while the file
/// `DIR/sick` exists.
pub fn http_server(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("server.py");
    std::fs::write(
        &path,
        r#"import http.server, os, sys, time
port, d = int(sys.argv[1]), sys.argv[2]
time.sleep(float(sys.argv[3]) if len(sys.argv) > 3 else 0)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        sick = os.path.exists(os.path.join(d, "sick"))
        self.send_response(500 if sick else 200)
        self.end_headers()
        self.wfile.write(b"sick" if sick else b"ok")
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", port), H)
print("listening on", port, flush=True)
s.serve_forever()
"#,
    )
    .unwrap();
    path
}

/// Waits for the next event of `kind` (of any unit); panics after 20 s.
pub async fn next_event(rx: &mut mpsc::Receiver<Event>, kind: &str) -> Event {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let e = rx.recv().await.expect("the supervisor sends events");
            if e.kind == kind {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for event {kind}"))
}
