//! Shared by the orchestrator tests: an App on a temp dir with an injected clock, on either
//! store (`Backend`), scripts that stand in for systemctl and the programs steps run, and
//! intent helpers.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vigil::app::App;
use vigil::clock::{ManualClock, SharedClock};
use vigil::config::Config;
use vigil::intent::{queue, Intent, IntentStatus, NewIntent};
use vigil::orchestrator::Orchestrator;
use vigil::store::prelude::*;

pub use super::store::Backend;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub app: Arc<App>,
    pub clock: ManualClock,
    pub backend: Backend,
    /// `[store] url` of the PostgreSQL schema of this test (`None` on SQLite).
    pub store_url: Option<String>,
}

/// 03:30 in New York (EST), inside a 03:00-07:00 window.
pub const IN_WINDOW: &str = "2026-11-23T08:30:00Z";

impl Env {
    /// `config` with `{dir}` replaced by the temp dir; a fake `systemctl` is in place.
    pub fn new(config: &str, start: &str) -> Env {
        Self::on(Backend::Sqlite, config, start)
    }

    /// Like `new`, on `backend` (PostgreSQL: a schema of this test's own).
    pub fn on(backend: Backend, config: &str, start: &str) -> Env {
        let clock = ManualClock::at(start);
        Self::with_clock_on(backend, config, clock.clone(), Arc::new(clock))
    }

    pub fn with_clock(config: &str, clock: ManualClock, shared: SharedClock) -> Env {
        Self::with_clock_on(Backend::Sqlite, config, clock, shared)
    }

    pub fn with_clock_on(
        backend: Backend,
        config: &str,
        clock: ManualClock,
        shared: SharedClock,
    ) -> Env {
        let dir = tempfile::tempdir().unwrap();
        fake_systemctl(dir.path(), true);
        let store_url = backend.fresh_url();
        let mut text = config.replace("{dir}", dir.path().to_str().unwrap());
        if let Some(url) = &store_url {
            text.push_str(&format!("\n[store]\nurl = \"{url}\"\n"));
        }
        let config = Config::parse("test.toml", &text).unwrap_or_else(|e| panic!("{e}"));
        let app = Arc::new(App::new(config, dir.path().join("data"), shared));
        Env {
            dir,
            app,
            clock,
            backend,
            store_url,
        }
    }

    /// Another host on this Env's PostgreSQL store and clock: `config` with `host = HOST`.
    pub fn join(&self, host: &str, config: &str) -> Env {
        let url = self
            .store_url
            .clone()
            .expect("hosts share a PostgreSQL store");
        let dir = tempfile::tempdir().unwrap();
        fake_systemctl(dir.path(), true);
        let text = format!(
            "host = \"{host}\"\n{}\n[store]\nurl = \"{url}\"\n",
            config.replace("{dir}", dir.path().to_str().unwrap())
        );
        let config = Config::parse("test.toml", &text).unwrap_or_else(|e| panic!("{e}"));
        let shared: SharedClock = Arc::new(self.clock.clone());
        let app = Arc::new(App::new(config, dir.path().join("data"), shared));
        Env {
            dir,
            app,
            clock: self.clock.clone(),
            backend: Backend::Postgres,
            store_url: Some(url),
        }
    }

    /// How many rows `table` of the store holds, read beside the store (not through it).
    pub fn count_rows(&self, table: &str) -> i64 {
        match &self.store_url {
            None => {
                let c = rusqlite::Connection::open(self.app.data_dir().join("vigil.db")).unwrap();
                c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                    .unwrap()
            }
            Some(url) => super::store::pg_count(url, table),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn orchestrator(&self) -> Orchestrator {
        Orchestrator::new(self.app.clone())
    }

    /// Stores an intent; `n` makes its data (and so its dedup key) unique.
    pub fn submit(&self, intent_type: &str, n: u32) -> i64 {
        self.submit_data(intent_type, serde_json::json!({ "n": n }))
    }

    pub fn submit_data(&self, intent_type: &str, data: serde_json::Value) -> i64 {
        let i = NewIntent {
            intent_type: intent_type.into(),
            priority: 9,
            reason: format!("test {intent_type}"),
            data: data.as_object().unwrap().clone(),
            dedup_key: None,
            origin: "test".into(),
        };
        queue::submit(&self.app, &i).unwrap().id()
    }

    pub fn intent(&self, id: i64) -> Intent {
        self.app.store().unwrap().intent(id).unwrap().unwrap()
    }

    pub fn status(&self, id: i64) -> IntentStatus {
        self.intent(id).status
    }

    /// Asserts intent `id` is in `want`, showing its note if not.
    pub fn assert_status(&self, id: i64, want: IntentStatus) {
        assert_eq!(self.status(id), want, "{:?}", self.intent(id).note);
    }

    pub fn advance_h(&self, h: f64) {
        self.clock
            .advance(std::time::Duration::from_secs_f64(h * 3600.0));
    }

    pub fn systemctl_log(&self) -> String {
        std::fs::read_to_string(self.path("systemctl.log")).unwrap_or_default()
    }

    pub fn audit_events(&self) -> Vec<String> {
        vigil::audit::tail(&self.app, 10_000)
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect()
    }
}

pub fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `DIR/systemctl VERB UNIT` appends "VERB UNIT" to DIR/systemctl.log; with `start_ok = false`
/// every start fails.
pub fn fake_systemctl(dir: &Path, start_ok: bool) {
    let log = dir.join("systemctl.log");
    let fail = if start_ok {
        String::new()
    } else {
        "[ \"$1\" = start ] && exit 3\n".into()
    };
    script(
        &dir.join("systemctl"),
        &format!("echo \"$1 $2\" >> {}\n{fail}exit 0", log.display()),
    );
}

/// The window, budget and escalation of the issue's example, in New York.
pub const BASE: &str = r#"
timezone = "America/New_York"

[orchestrator]
systemctl = ["{dir}/systemctl"]

[windows.maintenance]
at = "03:00-07:00"

[budgets.gpu_downtime]
seconds = 60

[escalation]
threshold = 3
window = "24h"
flag_ttl = "4h"
"#;
