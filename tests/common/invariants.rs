//! The invariant harness as the daemon builds it (a store, an audit trail, the harness over a
//! config's `[invariants]`), on a temp dir and an injected clock, for the harness's tests.

use std::path::Path;
use std::sync::Arc;
use vigil::audit::Audit;
use vigil::clock::SharedClock;
use vigil::config::Config;
use vigil::invariants::Harness;
use vigil::metrics::Metrics;
use vigil::store::SqliteStore;

/// A harness over `config` (TOML; panics with the config error) with its store and audit trail
/// in `dir`, on `clock`, counting into `metrics` (which the caller may read).
pub fn harness(dir: &Path, config: &str, clock: SharedClock, metrics: Arc<Metrics>) -> Harness {
    let config = Config::parse("test.toml", config).unwrap_or_else(|e| panic!("{e}"));
    let store = Arc::new(SqliteStore::open(&dir.join("store.db")).unwrap());
    let audit = Audit::new(
        dir.join("audit"),
        jiff::tz::TimeZone::UTC,
        clock.clone(),
        store.clone(),
    );
    Harness::new(
        Arc::new(config.invariants),
        store,
        clock,
        metrics,
        Arc::new(audit),
    )
}
