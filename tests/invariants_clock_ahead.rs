//! An invariant's `for` timer when the clock was a year ahead at the first sighting, then
//! corrected: the sighting counts as now and the timer restarts, instead of the violation never
//! firing (until the clock catches up a year later).

mod common;

use std::sync::Arc;
use std::time::Duration;
use vigil::clock::ManualClock;

#[tokio::test(flavor = "multi_thread")]
async fn a_for_timer_first_seen_a_year_ahead_restarts_when_the_clock_is_corrected() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "CREATE TABLE jobs (id TEXT, state TEXT); INSERT INTO jobs VALUES ('j2', 'broken');",
        )
        .unwrap();
    let text = format!(
        r#"
[collectors.app]
type = "sql"
url = "sqlite://{}"
tables = {{ jobs = "SELECT id, state FROM jobs" }}

[invariants.J-01]
name = "No broken jobs"
severity = "critical"
query = "SELECT id, state FROM jobs WHERE state = 'broken'"
key = ["id"]
for = "2s"
"#,
        db.display()
    );
    let clock = ManualClock::at("2026-01-15T10:00:00Z");
    let h = common::invariants::harness(dir.path(), &text, Arc::new(clock.clone()), Arc::default());

    // First seen while the clock was a year ahead.
    clock.advance(Duration::from_secs(365 * 24 * 3600));
    let r = h.run_cycle(None).await.unwrap();
    assert!(r.violations.is_empty(), "not yet for 2 s: {r:?}");

    // The clock is set back: the sighting counts as now, the 2 s run from here.
    clock.set("2026-01-15T10:00:00Z".parse().unwrap());
    let r = h.run_cycle(None).await.unwrap();
    assert!(r.violations.is_empty(), "{r:?}");
    clock.advance(Duration::from_secs(2));
    let r = h.run_cycle(None).await.unwrap();
    assert_eq!(r.violations.len(), 1, "fires after its `for`: {r:?}");
    assert_eq!(r.transitions[0].to, "red");
}
