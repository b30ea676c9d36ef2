//! What every face of vigil (daemon, CLI, API) shares: the config, the data directory and its
//! layout, the store, the audit trail, the invariant harness, the clock and the metrics.

use crate::audit::Audit;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::invariants::Harness;
use crate::metrics::Metrics;
use crate::store::{AnyStore, PgStore, SqliteStore, StoreError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use tokio::sync::broadcast;

/// The store's file in the data directory (`SqliteStore::open_dir` opens this name).
const STORE_FILE: &str = "vigil.db";

pub struct App {
    pub config: Config,
    pub data_dir: PathBuf,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    /// Ids of intents as they are stored, for whoever wants to react at once (API, benches).
    pub stored: broadcast::Sender<i64>,
    /// What changed, as it happens, for live watchers (`GET /api/stream`, the dashboard).
    pub changes: crate::api::stream::Changes,
    /// The address the API listens on, once it does (port 0 in the config picks a free one).
    pub api_addr: OnceLock<std::net::SocketAddr>,
    /// The API's bearer token, once the daemon has resolved it (`api::token::resolve`).
    pub api_token: OnceLock<crate::api::token::ApiToken>,
    /// The daemon's supervised units, once the supervisor has started them (unset in the CLI
    /// and when no unit is configured): the API, playbook steps and canaries act through it.
    pub supervisor: OnceLock<Arc<crate::supervisor::Supervisor>>,
    /// Whether the store is away now (the daemon's inbox watch probes it).
    pub store_outage: crate::outage::StoreOutage,
    store: OnceLock<Arc<AnyStore>>,
    audit: OnceLock<Arc<Audit>>,
    harness: OnceLock<Arc<Harness>>,
}

impl App {
    pub fn new(config: Config, data_dir: PathBuf, clock: SharedClock) -> Self {
        let metrics = Arc::new(Metrics::new(&config.metrics));
        Self {
            config,
            data_dir,
            clock,
            metrics,
            stored: broadcast::channel(1024).0,
            changes: Default::default(),
            api_addr: OnceLock::new(),
            api_token: OnceLock::new(),
            supervisor: OnceLock::new(),
            store_outage: Default::default(),
            store: OnceLock::new(),
            audit: OnceLock::new(),
            harness: OnceLock::new(),
        }
    }

    /// The store, opened (and migrated) on first use: PostgreSQL when `[store] url` (or
    /// `VIGIL_STORE_URL`) names one, else SQLite under the data directory. PostgreSQL is
    /// connected (and migrated) on its first call, not here: while it is away the daemon
    /// starts, and each call returns the store's error until it answers. The data directory
    /// is made 0700 and the store file 0600 before SQLite opens it (its `-wal` and `-shm`
    /// files copy that mode): the store holds every intent's data and the audit trail every
    /// step's argv and output.
    pub fn store(&self) -> Result<Arc<AnyStore>, StoreError> {
        if let Some(s) = self.store.get() {
            return Ok(s.clone());
        }
        let dir_err = |source| StoreError::DataDir {
            path: self.data_dir.display().to_string(),
            source,
        };
        // On PostgreSQL too: the inbox, the audit files and the daemon's record stay local.
        crate::private_fs::create_dir(&self.data_dir).map_err(dir_err)?;
        if let Some(url) = self.config.store.resolve_url() {
            let s = Arc::new(AnyStore::new(
                PgStore::open_lazy(&url)?.with_host(&self.config.host()),
            ));
            return Ok(self.store.get_or_init(|| s).clone());
        }
        crate::private_fs::ensure_file(&self.data_dir.join(STORE_FILE)).map_err(dir_err)?;
        let s = Arc::new(AnyStore::new(
            SqliteStore::open_dir(&self.data_dir)?.with_host(&self.config.host()),
        ));
        Ok(self.store.get_or_init(|| s).clone())
    }

    /// The audit trail (the day's JSON-lines file and the store), made on first use.
    pub fn audit(&self) -> Result<Arc<Audit>, StoreError> {
        if let Some(a) = self.audit.get() {
            return Ok(a.clone());
        }
        let a = Arc::new(
            Audit::new(
                self.audit_dir(),
                self.config.timezone.0.clone(),
                self.clock.clone(),
                self.store()?,
            )
            .publishing(self.changes.clone())
            .on_host(&self.config.host()),
        );
        Ok(self.audit.get_or_init(|| a).clone())
    }

    /// The one invariant harness, shared by the background loop and the API so a cycle
    /// started by one makes the other wait (409) and `prev` is the last cycle of either.
    pub fn harness(&self) -> Result<Arc<Harness>, StoreError> {
        if let Some(h) = self.harness.get() {
            return Ok(h.clone());
        }
        let h = Arc::new(Harness::from_app(self)?);
        Ok(self.harness.get_or_init(|| h).clone())
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.data_dir.join(name)
    }

    /// Intents from other programs arrive here.
    pub fn inbox_dir(&self) -> PathBuf {
        self.dir("inbox")
    }

    /// Inbox files that failed to parse or verify, each with a `.reason` file.
    pub fn rejected_dir(&self) -> PathBuf {
        self.dir("rejected")
    }

    /// Raw events when `--spool-events` is on.
    pub fn events_dir(&self) -> PathBuf {
        self.dir("events")
    }

    /// Audit trail: `audit/YYYYMMDD.jsonl`.
    pub fn audit_dir(&self) -> PathBuf {
        self.dir("audit")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}
