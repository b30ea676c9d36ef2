//! The store under concurrent clients: claims per second and gate evaluations per second
//! from 1, 8 and 32 clients, each with a store of its own (as separate hosts, or processes,
//! would have), on SQLite (one file) and on PostgreSQL (the one `scripts/setup` starts, or
//! `VIGIL_TEST_POSTGRES_URL`, in a schema of this run's own, dropped at the end).
//!
//! A claim is `claim_intent` (PostgreSQL: `FOR UPDATE SKIP LOCKED`) of one of the intents
//! stored before the clock starts; a gate evaluation is `begin_run` of a request with a
//! cooldown, a rate limit, a lock and a budget, checked and rolled back (a dry run), so every
//! client evaluates the same gates again and again under the store's write lock.
//!
//! Run: `cargo bench --bench store` (`VIGIL_BENCH_SECS` per measurement, default 2). Prints
//! `store BACKEND claims_per_sec clients=N rate=...` and
//! `store BACKEND gate_evals_per_sec clients=N rate=...`, and for PostgreSQL the baseline of
//! every statement, one round trip (`SELECT 1`, median): through the store (a pooled
//! connection, the hand-off to the connection thread) beside a client driven on the calling
//! thread, `store postgres round_trip_us store=... direct=... ratio=...`.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use vigil::intent::NewIntent;
use vigil::store::prelude::*;
use vigil::store::Scope;
use vigil::store::{AnyStore, BudgetRequest, PgStore, RunRequest, SqliteStore};

const CLIENTS: [usize; 3] = [1, 8, 32];

#[derive(Clone)]
enum Place {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Place {
    fn name(&self) -> &'static str {
        match self {
            Place::Sqlite(_) => "sqlite",
            Place::Postgres(_) => "postgres",
        }
    }

    fn open(&self) -> AnyStore {
        match self {
            Place::Sqlite(p) => AnyStore::new(SqliteStore::open(p).unwrap()),
            Place::Postgres(url) => AnyStore::new(PgStore::open(url).unwrap_or_else(|e| {
                panic!("{e}; run scripts/setup or set VIGIL_TEST_POSTGRES_URL")
            })),
        }
    }
}

fn intent(n: usize) -> NewIntent {
    NewIntent {
        intent_type: "bench_claim".into(),
        priority: 5,
        reason: "bench".into(),
        data: serde_json::json!({ "n": n }).as_object().unwrap().clone(),
        dedup_key: None,
        origin: "bench".into(),
    }
}

fn gated(client: usize) -> RunRequest {
    RunRequest {
        intent_id: client as i64,
        playbook: "gated".into(),
        mode: "default".into(),
        holder: format!("bench:{client}:0/{client}"),
        cooldown_ms: Some(1_000),
        cooldown_scope: Scope::Host,
        max_runs: Some((1_000_000, 86_400_000)),
        max_runs_scope: Scope::Host,
        lock: Some("gpu0".into()),
        lock_scope: Scope::Host,
        lease_ms: 30_000,
        budget: Some(BudgetRequest {
            name: "gpu_downtime".into(),
            day: "2026-11-23".into(),
            limit_ms: 60_000,
            want_ms: 10_000,
            scope: Scope::Host,
        }),
        lease: None,
    }
}

/// Runs `work` on `n` clients (a store each) for `secs`; returns operations per second.
/// `work` returns false when it has nothing left to do.
fn measure(
    place: &Place,
    n: usize,
    secs: Duration,
    work: impl Fn(&AnyStore, usize) -> bool + Send + Sync + 'static,
) -> f64 {
    let stores: Vec<AnyStore> = (0..n).map(|_| place.open()).collect();
    let work = Arc::new(work);
    let barrier = Arc::new(Barrier::new(n + 1));
    let handles: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(i, store)| {
            let (work, barrier) = (work.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let t0 = Instant::now();
                let mut ops = 0u64;
                while t0.elapsed() < secs && work(&store, i) {
                    ops += 1;
                }
                ops
            })
        })
        .collect();
    barrier.wait();
    let t0 = Instant::now();
    let ops: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    ops as f64 / t0.elapsed().as_secs_f64()
}

fn bench(place: &Place, secs: Duration) {
    let setup = place.open();
    for &n in &CLIENTS {
        // Enough intents that no client runs out within the measurement.
        let stock = 200_000.min(60_000 * n);
        let t0 = Instant::now();
        for i in 0..stock {
            setup.put_intent(&intent(i + n * 1_000_000), 0, 0).unwrap();
            if t0.elapsed() > secs * 10 {
                break;
            }
        }
        let rate = measure(place, n, secs, |s, i| {
            s.claim_intent(&format!("bench:{i}:0"), 30_000, 3_600_000, 1_000)
                .unwrap()
                .is_some()
        });
        println!(
            "store {} claims_per_sec clients={n} rate={rate:.0}",
            place.name()
        );
        let rate = measure(place, n, secs, |s, i| {
            s.begin_run(&gated(i), 10_000, false).unwrap().is_ok()
        });
        println!(
            "store {} gate_evals_per_sec clients={n} rate={rate:.0}",
            place.name()
        );
    }
}

fn main() {
    let secs = std::env::var("VIGIL_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(Duration::from_secs(2), Duration::from_secs_f64);
    let dir = tempfile::tempdir().unwrap();
    bench(&Place::Sqlite(dir.path().join("vigil.db")), secs);

    let base = std::env::var("VIGIL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://vigil_test:vigil_test@127.0.0.1:5432/vigil_test".into());
    let schema = format!("vigil_bench_{}", std::process::id());
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
    bench(&Place::Postgres(url.clone()), secs);
    round_trips(&url, &base);
    // The schema goes with the run.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    });
}

/// Median microseconds of one `SELECT 1` round trip through a store, and through a bare
/// `tokio-postgres` client on a runtime of this thread (no hand-off between threads).
fn round_trips(url: &str, base: &str) {
    const N: usize = 2_000;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let store = PgStore::open(url).unwrap();
    let mut times = Vec::with_capacity(N);
    for _ in 0..N {
        let t0 = Instant::now();
        store.health().unwrap();
        times.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    let through_store = median(times);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let direct = rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(base, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut times = Vec::with_capacity(N);
        for _ in 0..N {
            let t0 = Instant::now();
            client.batch_execute("SELECT 1").await.unwrap();
            times.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        median(times)
    });
    println!(
        "store postgres round_trip_us store={through_store:.1} direct={direct:.1} ratio={:.2}",
        through_store / direct
    );
}
