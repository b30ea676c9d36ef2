//! The daemon in-process on a temp dir, driven through its public interface.
#![allow(dead_code)]

mod both_stores;
pub mod browser;
pub mod env;
pub mod invariants;
pub mod redis_server;
pub mod rules;
pub mod store;
pub mod supervisor;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use vigil::app::App;
use vigil::clock::{SharedClock, SystemClock};
use vigil::config::Config;
use vigil::daemon::{self, Summary};
use vigil::intent::Intent;
use vigil::store::{IntentQuery, IntentStore};

/// The API token every test daemon uses.
pub const TOKEN: &str = "test-token";

pub struct TestDaemon {
    pub app: Arc<App>,
    pub dir: tempfile::TempDir,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<Result<Summary, daemon::DaemonError>>,
}

impl TestDaemon {
    /// Starts the daemon with `config` (TOML; `{dir}` is replaced by the temp dir). The API
    /// listens on a free loopback port.
    pub async fn start(config: &str) -> Self {
        Self::start_with(config, Arc::new(SystemClock), daemon::Options::default()).await
    }

    pub async fn start_with(config: &str, clock: SharedClock, opts: daemon::Options) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), config, clock, opts).await
    }

    /// `api` holds more keys for the daemon's `[api]` table (TOML lines).
    pub async fn start_with_api(api: &str) -> Self {
        let api = format!("token = \"{TOKEN}\"\n{api}");
        Self::launch(
            tempfile::tempdir().unwrap(),
            &api,
            "",
            Arc::new(SystemClock),
            Default::default(),
        )
        .await
    }

    /// A daemon with no `[api] token`: it generates one into DATA_DIR/api.token.
    pub async fn start_without_token(config: &str) -> Self {
        Self::launch(
            tempfile::tempdir().unwrap(),
            "",
            config,
            Arc::new(SystemClock),
            Default::default(),
        )
        .await
    }

    /// The data dir is `dir/data`, so a test can put files there before the daemon starts.
    pub async fn start_in(
        dir: tempfile::TempDir,
        config: &str,
        clock: SharedClock,
        opts: daemon::Options,
    ) -> Self {
        Self::launch(dir, &format!("token = \"{TOKEN}\"\n"), config, clock, opts).await
    }

    async fn launch(
        dir: tempfile::TempDir,
        api: &str,
        config: &str,
        clock: SharedClock,
        opts: daemon::Options,
    ) -> Self {
        let text = format!(
            "[api]\nlisten = \"127.0.0.1:0\"\n{api}{}",
            config.replace("{dir}", dir.path().to_str().unwrap())
        );
        let config = Config::parse("test.toml", &text).unwrap_or_else(|e| panic!("{e}"));
        let app = Arc::new(App::new(config, dir.path().join("data"), clock));
        let (stop, rx) = watch::channel(false);
        let handle = tokio::spawn(daemon::run(app.clone(), opts, rx));
        let d = TestDaemon {
            app,
            dir,
            stop,
            handle,
        };
        d.wait_until("API listening", || d.app.api_addr.get().is_some())
            .await;
        d
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn api(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.api_addr.get().unwrap())
    }

    /// POSTs `body` as JSON to the API at `path`, with the token.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.post_as(Some(TOKEN), path, Some(body)).await
    }

    /// POSTs an event of type `kind` with `data`, with the token; asserts it was accepted.
    pub async fn post_event(&self, kind: &str, data: serde_json::Value) {
        let r = self
            .post(
                "/api/events",
                &serde_json::json!({"type": kind, "data": data}),
            )
            .await;
        assert_eq!(r.status(), 202, "event {kind} accepted");
    }

    /// POSTs to the API at `path` with `token` (`None`: no Authorization header) and, if
    /// given, `body` as JSON.
    pub async fn post_as(
        &self,
        token: Option<&str>,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> reqwest::Response {
        let mut req = reqwest::Client::new().post(self.api(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.unwrap()
    }

    /// GETs `path` from the API (reads need no token) and parses its JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path).await.json().await.unwrap()
    }

    /// GETs `path` from the API (reads need no token) as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.get(path).await.text().await.unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(self.api(path)).await.unwrap()
    }

    pub fn intents(&self) -> Vec<Intent> {
        self.app
            .store()
            .unwrap()
            .intents(&IntentQuery::default())
            .unwrap()
    }

    /// Polls `cond` until it holds; panics with `what` after 10 s.
    pub async fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        wait_until(what, &mut cond).await
    }

    pub async fn stop(self) -> Summary {
        let _ = self.stop.send(true);
        self.handle.await.unwrap().unwrap()
    }
}

pub async fn wait_until(what: &str, cond: &mut impl FnMut() -> bool) {
    wait_within(what, 10, cond).await
}

/// Polls `cond` (real processes, real files) until it holds; panics with `what` after `secs`.
pub async fn wait_within(what: &str, secs: u64, cond: impl FnMut() -> bool) {
    wait_within_msg(|| what.to_string(), secs, cond).await
}

/// `wait_within` whose message is made when it times out (for logs read at that moment).
pub async fn wait_within_msg(what: impl Fn() -> String, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for: {}",
            what()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `wait_within` for a condition that must itself wait (an HTTP call).
pub async fn wait_within_async<F: std::future::Future<Output = bool>>(
    what: &str,
    secs: u64,
    mut cond: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `wait_within` for tests without a runtime: blocks the thread between polls.
pub fn wait_blocking(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` runs: a zombie waiting for its parent to reap it does not count.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The built `vigil` binary, for tests of the command line.
pub fn vigil(data_dir: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"));
    c.env_remove("VIGIL_CONFIG")
        .env("VIGIL_DATA_DIR", data_dir)
        .env("NO_COLOR", "1");
    c
}

/// Runs `c` to the end: its exit code (-1 if killed by a signal), stdout and stderr.
pub fn out(c: &mut std::process::Command) -> (i32, String, String) {
    let o = c.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// One source running under the real supervisor (or, with `start_unsupervised`, on its own),
/// with its events, metrics and health at hand.
pub struct RunningSource {
    pub events: tokio::sync::mpsc::Receiver<vigil::event::Event>,
    pub metrics: Arc<vigil::metrics::Metrics>,
    pub health: Arc<vigil::sources::Health>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), vigil::sources::SourceError>>,
}

impl RunningSource {
    pub fn start(name: &str, source: Box<dyn vigil::sources::Source>) -> Self {
        Self::spawn(name, None, true, Arc::new(SystemClock), None, source)
    }

    /// Supervised with `store` for its state (a file source's checkpoints), as the daemon
    /// runs it; returns once it is up.
    pub async fn start_with_store(
        name: &str,
        store: Arc<dyn vigil::store::SourceStore>,
        source: Box<dyn vigil::sources::Source>,
    ) -> Self {
        let run = Self::spawn(name, None, true, Arc::new(SystemClock), Some(store), source);
        wait_until("the source is up", &mut || {
            run.health.snapshot().iter().any(|s| s.up)
        })
        .await;
        run
    }

    /// Supervised, on `clock` (a `ManualClock` for timers a test moves by hand).
    pub fn start_with_clock(
        name: &str,
        clock: SharedClock,
        source: Box<dyn vigil::sources::Source>,
    ) -> Self {
        Self::spawn(name, None, true, clock, None, source)
    }

    /// Registered first as `kind` (down, "starting"), as the daemon does, then supervised.
    pub fn start_registered(
        name: &str,
        kind: &str,
        source: Box<dyn vigil::sources::Source>,
    ) -> Self {
        Self::spawn(name, Some(kind), true, Arc::new(SystemClock), None, source)
    }

    /// One run of `source` without the supervisor, so its error is not retried: `stop` asserts
    /// it ended Ok, `error` expects it to fail.
    pub fn start_unsupervised(name: &str, source: Box<dyn vigil::sources::Source>) -> Self {
        Self::spawn(name, None, false, Arc::new(SystemClock), None, source)
    }

    fn spawn(
        name: &str,
        register: Option<&str>,
        supervised: bool,
        clock: SharedClock,
        store: Option<Arc<dyn vigil::store::SourceStore>>,
        mut source: Box<dyn vigil::sources::Source>,
    ) -> Self {
        let (tx, events) = tokio::sync::mpsc::channel(1024);
        let (stop, shutdown) = watch::channel(false);
        let metrics = Arc::new(vigil::metrics::Metrics::default());
        let health = Arc::new(vigil::sources::Health::new(metrics.clone()));
        if let Some(kind) = register {
            health.register(name, kind, clock.now_ms());
        }
        let ctx = vigil::sources::SourceContext::new(
            name,
            clock,
            metrics.clone(),
            tx,
            health.clone(),
            shutdown,
        );
        let ctx = match store {
            Some(store) => ctx.with_store(store, None),
            None => ctx,
        };
        let task = tokio::spawn(async move {
            if supervised {
                vigil::sources::supervise(source, ctx).await;
                Ok(())
            } else {
                source.run(&ctx).await
            }
        });
        RunningSource {
            events,
            metrics,
            health,
            stop,
            task,
        }
    }

    /// The next event, or a panic after 10 s.
    pub async fn next(&mut self) -> vigil::event::Event {
        tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .expect("an event within 10 s")
            .expect("source still running")
    }

    /// Asserts nothing more arrives for a short while (used after the last expected event).
    pub async fn quiet(&mut self) {
        if let Ok(Some(ev)) =
            tokio::time::timeout(Duration::from_millis(300), self.events.recv()).await
        {
            panic!("unexpected event: {ev:?}");
        }
    }

    /// Asserts no event is waiting right now.
    pub fn no_event(&mut self) {
        if let Ok(ev) = self.events.try_recv() {
            panic!("unexpected event {ev:?}");
        }
    }

    pub fn state(&self) -> Option<vigil::sources::SourceState> {
        self.health.snapshot().into_iter().next()
    }

    pub async fn wait_state(
        &self,
        what: &str,
        mut cond: impl FnMut(&vigil::sources::SourceState) -> bool,
    ) {
        wait_until(what, &mut || self.state().is_some_and(|s| cond(&s))).await
    }

    /// Stops the source and asserts it ended cleanly.
    pub async fn stop(self) {
        self.stop.send(true).expect("source still running at stop");
        let r = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("source stops on shutdown")
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
    }

    /// Stops the source (a file source saves its last checkpoint then), asserts it ended
    /// cleanly, and returns the events it sent that the test had not taken.
    pub async fn stop_and_take(mut self) -> Vec<vigil::event::Event> {
        self.stop.send(true).expect("source still running at stop");
        let r = tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("source stops on shutdown")
            .unwrap();
        assert!(r.is_ok(), "{r:?}");
        let mut left = Vec::new();
        while let Ok(ev) = self.events.try_recv() {
            left.push(ev);
        }
        left
    }

    /// The error an unsupervised source ended with, within 10 s.
    pub async fn error(self) -> String {
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("source fails within 10 s")
            .unwrap()
            .expect_err("source fails")
            .to_string()
    }
}

/// Asserts `promtool check metrics` (Debian package prometheus; scripts/setup installs it)
/// accepts `text`, a `/metrics` page.
pub fn promtool_check_metrics(text: &str) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/setup installs it)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
