//! The invariant harness: collectors snapshot the state other systems keep into one in-memory
//! SQLite database, every invariant is a SQL SELECT over it (each row a violation), and state,
//! transitions and alerts follow. See issue 5 and `examples/invariants/trinity.toml`.

pub mod alert;
pub mod api;
pub mod collectors;
pub mod config;
pub mod harness;
pub mod snapshot;

pub use config::{Invariant, InvariantsConfig, Severity};
pub use harness::{CycleResult, Harness, HarnessError};

/// The background loop: a cycle every `interval` (by the injected clock's time) while
/// enabled; transitions go to `events` for the rule engine.
pub async fn run_loop(
    harness: std::sync::Arc<Harness>,
    events: tokio::sync::mpsc::Sender<crate::event::Event>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let cfg = harness.config();
    if !cfg.settings.enabled || cfg.invariants.is_empty() {
        return;
    }
    let every = cfg.settings.interval.0;
    loop {
        let run = harness.run_cycle(None);
        let outcome = tokio::select! {
            r = run => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match outcome {
            Ok(r) => {
                for e in r.events() {
                    if events.send(e).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "invariant cycle failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// The one harness of an `App` (`App::harness`), with its error as text for the API.
pub fn shared(app: &crate::app::App) -> Result<std::sync::Arc<Harness>, String> {
    app.harness().map_err(|e| e.to_string())
}
