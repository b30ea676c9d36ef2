//! The store: all of vigil's durable state, and all of its SQL. One small trait per concern
//! (intents, escalation, runs, audit, invariant state, source state), so another backend
//! (PostgreSQL for fleets) can arrive one concern at a time; `Store` is all of them. SQLite
//! (embedded, the default) implements them in `sqlite/`, a file per concern. Calls are
//! blocking: async code calls them through `tokio::task::spawn_blocking`.
//!
//! Dependencies point down: the store uses the domain types (`Intent`, `Symptom`, `Flag`,
//! `AuditEntry`, `SourceState`) and the records below, never the orchestrator or the harness.

mod audit;
mod canaries;
mod escalation;
mod intents;
mod invariants;
mod runs;
mod sources;
mod sqlite;
mod units;

pub use audit::AuditStore;
pub use canaries::{CanaryEnd, CanaryRunRecord, CanaryStore, NewCanaryRun};
pub use escalation::EscalationStore;
pub use intents::{IntentQuery, IntentStore, Put};
pub use invariants::{InvariantState, InvariantStore, PendingAlert};
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
        AuditStore, EscalationStore, IntentStore, InvariantStore, RunStore, SourceStore, Store,
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
    #[error("{0}")]
    Corrupt(String),
}

/// Every concern of the store: what the daemon needs of a backend.
pub trait Store:
    IntentStore + EscalationStore + RunStore + AuditStore + InvariantStore + SourceStore
{
}

impl<T> Store for T where
    T: IntentStore + EscalationStore + RunStore + AuditStore + InvariantStore + SourceStore
{
}
