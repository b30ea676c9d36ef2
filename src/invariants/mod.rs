//! The invariant harness: collectors snapshot the state other systems keep into one in-memory
//! SQLite database, every invariant is a SQL SELECT over it (each row a violation), and state,
//! transitions and alerts follow. See issue 5 and `examples/invariants/trinity.toml`.

pub mod alert;
pub mod api;
pub mod cli;
pub mod collectors;
pub mod config;
pub mod harness;
pub mod snapshot;
pub mod state;

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

/// The one harness of an `App`, shared by the background loop and the API so a cycle started
/// by one makes the other wait (409) and `prev` is the last cycle of either.
pub fn shared(app: &std::sync::Arc<crate::app::App>) -> Result<std::sync::Arc<Harness>, String> {
    use crate::app::App;
    use std::sync::{Arc, Mutex, OnceLock, Weak};
    type Registry = Mutex<Vec<(Weak<App>, Arc<Harness>)>>;
    static HARNESSES: OnceLock<Registry> = OnceLock::new();
    let mut all = HARNESSES.get_or_init(Default::default).lock().unwrap();
    // A dropped App's harness goes with it (the Weak keeps its address from being reused).
    all.retain(|(a, _)| a.strong_count() > 0);
    if let Some((_, h)) = all.iter().find(|(a, _)| a.as_ptr() == Arc::as_ptr(app)) {
        return Ok(h.clone());
    }
    let h = Arc::new(Harness::from_app(app).map_err(|e| e.to_string())?);
    all.push((Arc::downgrade(app), h.clone()));
    Ok(h)
}
