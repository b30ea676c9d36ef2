//! The store: all of vigil's durable state, and all of its SQL. One small trait per concern
//! (intents, escalation, runs, audit, invariant state, source state), so another backend
//! (PostgreSQL for fleets) can arrive one concern at a time; `Store` is all of them. SQLite
//! (embedded, the default) implements them in `sqlite/`, a file per concern, and PostgreSQL
//! (a fleet of hosts sharing one database) in `postgres/`, the same way. Calls are blocking:
//! async code calls them through `tokio::task::spawn_blocking`.
//!
//! Dependencies point down: the store uses the domain types (`Intent`, `Symptom`, `Flag`,
//! `AuditEntry`, `SourceState`) and the records below, never the orchestrator or the harness.

mod any;
mod audit;
mod canaries;
mod escalation;
mod fleet;
mod intents;
mod invariants;
pub mod migrate;
mod postgres;
mod runs;
mod sources;
mod sqlite;
mod units;

pub use any::AnyStore;
pub use audit::AuditStore;
pub use canaries::{CanaryEnd, CanaryRunRecord, CanaryStore, NewCanaryRun};
pub use escalation::EscalationStore;
pub use fleet::{FleetStore, HostStatus};
pub use intents::{IntentQuery, IntentStore, Put};
pub use invariants::{InvariantState, InvariantStore, PendingAlert};
pub use postgres::PgStore;
pub use runs::{
    BudgetRequest, BudgetUsage, Claim, Fence, Lease, LeaseFence, LockFence, LockRecord, Refusal,
    RunEnd, RunRecord, RunRequest, RunStore, Settled,
};
pub use sources::{Checkpoint, FilePosition, SourceStore};
pub use sqlite::SqliteStore;
pub use units::{UnitRecord, UnitStore};

/// Every store trait, for `use vigil::store::prelude::*` where one calls many concerns.
pub mod prelude {
    pub use super::{
        AuditStore, CanaryStore, EscalationStore, FleetStore, IntentStore, InvariantStore,
        RunStore, SourceStore, Store, UnitStore,
    };
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("cannot create the data directory {path}: {source}; pass a writable --data-dir")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    /// PostgreSQL refused or could not be reached; `message` has the cause.
    #[error("store {url}: {message}")]
    Postgres { url: String, message: String },
    #[error("{0}")]
    Corrupt(String),
}

/// Every concern of the store: what the daemon needs of a backend.
pub trait Store:
    IntentStore
    + EscalationStore
    + RunStore
    + AuditStore
    + InvariantStore
    + SourceStore
    + UnitStore
    + FleetStore
    + CanaryStore
{
    /// `Ok` when the store can keep what it is given, else what is wrong and what to do, in
    /// words (`/healthz` shows it). Cheap; each change of the answer is logged once.
    fn health(&self) -> Result<(), String>;
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
}

impl Store for SqliteStore {
    fn health(&self) -> Result<(), String> {
        SqliteStore::health(self)
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

impl Store for PgStore {
    fn health(&self) -> Result<(), String> {
        PgStore::health(self)
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

/// Whose a budget, lock, cooldown, rate limit or escalation flag is: this host's alone (the
/// default; what a single host has always had) or the whole fleet's sharing the store, like a
/// Kubernetes PodDisruptionBudget across hosts. `scope = "host" | "fleet"` in the config.
///
/// In the store a scope is a key beside the name: the host's name, or `*` for the fleet; rows
/// stored before scopes existed carry `''` and count for every host (never less than before).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    #[default]
    Host,
    Fleet,
}

impl Scope {
    /// The key of this scope in the store's rows for `host`: `host` itself, or `*`.
    pub fn key(self, host: &str) -> &str {
        match self {
            Scope::Host => host,
            Scope::Fleet => FLEET,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Host => "host",
            Scope::Fleet => "fleet",
        }
    }
}

/// The scope key of fleet-wide rows (`Scope::key`).
pub const FLEET: &str = "*";

/// The host part of a holder (`HOST:PID:N`, or `HOST:PID:N/INTENT` for a run's lock).
pub fn holder_host(holder: &str) -> &str {
    holder.split(':').next().unwrap_or(holder)
}

/// `[store]` in the config.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `postgres://user:password@host:port/db` for a store shared by a fleet; without it the
    /// store is SQLite, `DATA_DIR/vigil.db`. `VIGIL_STORE_URL` wins over it.
    pub url: Option<String>,
}

impl StoreConfig {
    /// The PostgreSQL URL in force (`VIGIL_STORE_URL`, else `url`), `None` for SQLite.
    pub fn resolve_url(&self) -> Option<String> {
        std::env::var("VIGIL_STORE_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| self.url.clone())
    }
}

/// The machine's hostname (`host` defaults to it), `localhost` when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The host an intent with `data` belongs to: the one its data names (`"host": "b"`, or `"*"`
/// for any host), else `proposer`, the host that stores it.
pub fn intent_host(data: &crate::event::Data, proposer: &str) -> String {
    match data.get("host").and_then(|h| h.as_str()) {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => proposer.to_string(),
    }
}

/// Whether `url` names a PostgreSQL store (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}
