//! `vigil check`: parse and validate the config.

use super::Exit;
use vigil::app::App;

/// Warnings on stderr, then `FILE: valid (N sources, ...)`. An invalid config never gets
/// here: loading it failed with every problem as `file:line:col` (exit 1).
pub fn run(app: &App) -> Exit {
    for w in app.config.warnings(app.clock.now()) {
        eprintln!("{w}");
    }
    let c = &app.config;
    println!(
        "{}: valid ({} sources, {} rules, {} playbooks, {} invariants)",
        c.origin,
        c.sources.len(),
        c.rules.len(),
        c.orchestrator.playbooks.len(),
        c.invariants.invariants.len()
    );
    Ok(0)
}
