//! Throughput of the orchestrator: intents per second through claim, gates, a one-step
//! playbook, settlement and the audit trail (SQLite on a temp dir); and gate evaluations per
//! second (every gate, the store's check in a transaction that is rolled back).
//!
//! Run: `cargo bench --bench orchestrator`. Prints
//! `orchestrator intents_per_sec median=... baseline=... ratio=...` and
//! `orchestrator gate_evals_per_sec median=... baseline=... ratio=...`, where `ratio` is
//! subject / baseline in cost, as in every bench: baseline rate / subject rate (time per
//! intent or evaluation, subject over baseline), so above 1 means slower than the baseline.

use std::sync::Arc;
use std::time::Instant;
use vigil::app::App;
use vigil::clock::ManualClock;
use vigil::config::Config;
use vigil::intent::{queue, NewIntent};
use vigil::orchestrator::{gates, Orchestrator};

const ROUNDS: usize = 5;
const INTENTS: usize = 300;
const EVALS: usize = 2000;

const CONFIG: &str = r#"
timezone = "America/New_York"
[api]
enabled = false
[windows.maintenance]
at = "03:00-07:00"
[budgets.gpu_downtime]
seconds = 60
[playbooks.one_step]
on = "bench_run"
steps = [{ log = "handled {intent}" }]
[playbooks.gated]
on = "bench_gates"
window = "maintenance"
budget = "gpu_downtime"
cooldown = "1s"
max_runs = { count = 1000000, within = "24h" }
lock = "gpu0"
steps = [
  { run = ["/bin/true"], downtime = true },
  { run = ["/bin/true"], restore = true },
]
"#;

fn intent(kind: &str, n: usize) -> NewIntent {
    NewIntent {
        intent_type: kind.into(),
        priority: 5,
        reason: "bench".into(),
        data: serde_json::json!({ "n": n }).as_object().unwrap().clone(),
        dedup_key: None,
        origin: "bench".into(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::parse("bench.toml", CONFIG).unwrap();
    let clock = ManualClock::at("2026-11-23T08:30:00Z"); // 03:30 in New York: in the window
    let app = Arc::new(App::new(config, dir.path().join("data"), Arc::new(clock)));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let orch = Orchestrator::new(app.clone());

    let mut rates = Vec::new();
    for round in 0..ROUNDS {
        for i in 0..INTENTS {
            queue::submit(&app, &intent("bench_run", round * INTENTS + i)).unwrap();
        }
        let t0 = Instant::now();
        let n = rt.block_on(orch.drain()).unwrap();
        assert_eq!(n, INTENTS);
        rates.push(n as f64 / t0.elapsed().as_secs_f64());
    }
    let intents_per_sec = median(rates);

    let store_intent = queue::submit(&app, &intent("bench_gates", 0)).unwrap().id();
    let pending = {
        use vigil::store::prelude::*;
        app.store().unwrap().intent(store_intent).unwrap().unwrap()
    };
    let mut rates = Vec::new();
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        for _ in 0..EVALS {
            let d = gates::evaluate(&app, &pending, "bench", false).unwrap();
            assert!(matches!(d, gates::Decision::Run { .. }), "{d:?}");
        }
        rates.push(EVALS as f64 / t0.elapsed().as_secs_f64());
    }
    let evals_per_sec = median(rates);

    // Baselines in the same run, on the same store: the least any consumer of the queue does
    // per intent (mark it running, then done: two committed writes), and an empty write
    // transaction that is rolled back (the floor under an atomic gate check).
    let store = app.store().unwrap();
    let mut rates = Vec::new();
    for round in 0..ROUNDS {
        use vigil::store::prelude::*;
        let ids: Vec<i64> = (0..INTENTS)
            .map(|i| {
                queue::submit(&app, &intent("bench_base", round * INTENTS + i))
                    .unwrap()
                    .id()
            })
            .collect();
        let t0 = Instant::now();
        for id in ids {
            store
                .set_intent_status(id, vigil::intent::IntentStatus::Running, None, 0)
                .unwrap();
            store
                .set_intent_status(id, vigil::intent::IntentStatus::Done, Some("ok"), 0)
                .unwrap();
        }
        rates.push(INTENTS as f64 / t0.elapsed().as_secs_f64());
    }
    let base_intents = median(rates);
    let mut rates = Vec::new();
    // A connection of its own to the same file: the store keeps its connection to itself.
    let mut conn = rusqlite::Connection::open(app.data_dir().join("vigil.db")).unwrap();
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        for _ in 0..EVALS {
            conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .and_then(|tx| tx.rollback())
                .unwrap();
        }
        rates.push(EVALS as f64 / t0.elapsed().as_secs_f64());
    }
    let base_evals = median(rates);
    println!(
        "orchestrator intents_per_sec median={intents_per_sec:.0} baseline={base_intents:.0} ratio={:.2} (one log step, {INTENTS} intents x {ROUNDS} rounds; baseline: running+done status writes)",
        base_intents / intents_per_sec
    );
    println!(
        "orchestrator gate_evals_per_sec median={evals_per_sec:.0} baseline={base_evals:.0} ratio={:.2} (mode, window, cooldown, rate limit, lock, budget; {EVALS} x {ROUNDS} rounds; baseline: empty write transaction)",
        base_evals / evals_per_sec
    );
}
