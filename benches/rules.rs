//! Rule engine throughput and flood memory. `cargo bench --bench rules`.
//!
//! Prints:
//!   rules flood_10m events=... peak_rss_mb=... baseline_peak_rss_mb=... ratio=...
//!   rules events_per_sec median=... baseline=... ratio=...
//! Every ratio is subject / baseline in cost, so above 1 means the engine costs more than its
//! baseline. Throughput: the baseline is the same loop doing only a HashMap lookup of the event
//! type, and `ratio` = baseline events/s / engine events/s (time per event, engine over
//! baseline). Flood: the baseline is the same 10 M events built the same way into bounded maps
//! that keep what the engine keeps at most (`DEDUP_CAP` dedup keys, `GROUP_CAP` groups for each
//! of the ten grouped rules), in a child process of its own so its peak RSS is its own; `ratio`
//! = engine peak RSS / baseline peak RSS.
//! The flood runs first so the throughput run's pre-built events do not inflate peak RSS.

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;
use vigil::config::Config;
use vigil::event::Event;
use vigil::rules::{Output, RuleConfig, RuleEngine, DEDUP_CAP, GROUP_CAP};

const T0: i64 = 1_764_000_000_000;
const SEED_TYPES: &[&str] = &[
    "promotion_new",
    "phase_complete",
    "gpu_oom",
    "dream_error",
    "lock_contention_high",
    "dream_heartbeat",
];

/// The seven seed rules plus 100 more: 50 on other event types (10 of them grouped), 50 on the
/// seed types with `where` predicates that do not match.
fn rules() -> BTreeMap<String, RuleConfig> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/observer.toml");
    let mut rules = Config::load(&path).expect("examples/observer.toml").rules;
    let mut extra = String::new();
    for i in 0..50 {
        extra.push_str(&format!(
            "[other_{i}]\non = \"other_{i}\"\ncount = 5\nwithin = \"10m\"\nintent = \"suggest_other_{i}\"\npriority = 3\ncooldown = \"1h\"\n"
        ));
        if i < 10 {
            extra.push_str("group_by = [\"host\"]\n");
        }
    }
    for i in 0..50 {
        let ty = SEED_TYPES[i % SEED_TYPES.len()];
        let predicate = match i % 4 {
            0 => format!("n = {{ above = {} }}", 1e12 + i as f64),
            1 => format!("level = \"never_{i}\""),
            2 => format!("line = {{ matches = '^NEVER{i} ' }}"),
            _ => format!("n = {{ below = -{i} }}"),
        };
        extra.push_str(&format!(
            "[seed_extra_{i}]\non = \"{ty}\"\nwhere = {{ {predicate} }}\nintent = \"suggest_extra_{i}\"\npriority = 2\n"
        ));
    }
    let more: BTreeMap<String, RuleConfig> = toml::from_str(&extra).expect("generated rules");
    rules.extend(more);
    assert_eq!(rules.len(), 107);
    rules
}

/// Event `i` of a realistic mix: 70% types no rule watches, 15% other_* types, 15% seed types.
/// Data is distinct per event (as log lines are), so dedup lets them through.
fn event(i: u64, ts: i64) -> Event {
    let slot = i % 100;
    let (kind, data): (String, Value) = if slot < 70 {
        let kind = ["line", "probe_ok", "http_access", "unit_started"][(slot % 4) as usize];
        (
            kind.into(),
            json!({ "line": format!("GET /api/v1/items/{i} 200"), "n": i.to_string() }),
        )
    } else if slot < 85 {
        (
            format!("other_{}", (i / 7) % 50),
            json!({ "host": format!("h{}", i % 1000), "n": i.to_string() }),
        )
    } else {
        let ty = SEED_TYPES[(i % SEED_TYPES.len() as u64) as usize];
        let data = match ty {
            "phase_complete" => {
                json!({ "run_id": format!("run-{i}"), "result": "passed", "duration_s": "900", "line": format!("PHASE run-{i} passed in 900s") })
            }
            "gpu_oom" => {
                json!({ "alloc_gib": "2.50", "line": format!("CUDA out of memory. Tried to allocate 2.50 GiB #{i}") })
            }
            "lock_contention_high" => {
                json!({ "metric": "kloros_lock_contention_total", "value": 5 + (i % 10) })
            }
            _ => json!({ "path": format!("/srv/out/{i}.json"), "n": i.to_string() }),
        };
        (ty.into(), data)
    };
    Event::new(
        "bench",
        kind,
        ts,
        data.as_object().cloned().unwrap_or_default(),
    )
}

fn status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

const N: u64 = 10_000_000;

/// Event `i` of the flood: 100 events per ms, so 6 million fall inside one dedup window and the
/// dedup table sits at its cap; every other_* event brings a new host, so grouped rules sit at
/// their group cap.
fn flood_event(i: u64) -> Event {
    let mut ev = event(i, T0 + (i / 100) as i64);
    if ev.kind.starts_with("other_") {
        ev.data.insert("host".into(), Value::from(format!("h{i}")));
    }
    ev
}

/// A map that keeps at most `cap` keys, dropping the oldest first: the least any bounded
/// table holding that many keys costs.
struct Bounded<K> {
    seen: HashMap<K, u64>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: std::hash::Hash + Eq + Clone> Bounded<K> {
    fn new(cap: usize) -> Self {
        Bounded {
            seen: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn add(&mut self, key: K) {
        if let Some(n) = self.seen.get_mut(&key) {
            *n += 1;
            return;
        }
        self.seen.insert(key.clone(), 1);
        self.order.push_back(key);
        if self.order.len() > self.cap {
            let old = self.order.pop_front().expect("non-empty");
            self.seen.remove(&old);
        }
    }
}

/// The flood's baseline, run in a child process (`rules flood-baseline`): the same events
/// into bounded maps of the engine's caps. Prints its peak RSS in MB.
fn flood_baseline() {
    let mut dedup = Bounded::new(DEDUP_CAP);
    let mut groups: Vec<Bounded<String>> = (0..10).map(|_| Bounded::new(GROUP_CAP)).collect();
    for i in 0..N {
        let ev = flood_event(i);
        dedup.add(ev.dedup_key());
        if let Some(n) = ev.kind.strip_prefix("other_") {
            if let Some(g) = n.parse::<usize>().ok().and_then(|n| groups.get_mut(n)) {
                g.add(ev.field("host").unwrap_or_default());
            }
        }
        black_box(&ev);
    }
    black_box((
        &dedup.seen,
        &groups.iter().map(|g| g.seen.len()).sum::<usize>(),
    ));
    println!("{:.1}", status_mb("VmHWM:"));
}

fn flood_baseline_peak_mb() -> f64 {
    let out = std::process::Command::new(std::env::current_exe().expect("own path"))
        .arg("flood-baseline")
        .output()
        .expect("run the flood baseline");
    assert!(out.status.success(), "flood baseline failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the baseline prints its peak RSS")
}

fn flood(rules: &BTreeMap<String, RuleConfig>) {
    let mut engine = RuleEngine::new(rules, T0);
    let mut out = Output::default();
    let mut proposals = 0usize;
    for i in 0..N {
        let ev = flood_event(i);
        engine.process(&ev, &mut out);
        if i % 1000 == 0 {
            engine.tick(ev.ts, &mut out);
            proposals += out.proposals.len();
            out.proposals.clear();
            out.symptoms.clear();
        }
    }
    let stats = engine.stats();
    let peak = status_mb("VmHWM:");
    let base = flood_baseline_peak_mb();
    println!(
        "rules flood_10m events={N} peak_rss_mb={peak:.1} baseline_peak_rss_mb={base:.1} ratio={:.2} rss_mb={:.1} dedup_entries={} max_groups_per_rule={} groups_evicted={} proposals={proposals}",
        peak / base,
        status_mb("VmRSS:"),
        engine.dedup_len(),
        (0..10)
            .map(|i| engine.group_count(&format!("other_{i}")).unwrap_or(0))
            .max()
            .unwrap_or(0),
        stats.groups_evicted,
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn throughput(rules: &BTreeMap<String, RuleConfig>) {
    const N: u64 = 200_000;
    const RUNS: usize = 9;
    let events: Vec<Event> = (0..N).map(|i| event(i, T0 + (i * 2) as i64)).collect();
    let types: HashMap<String, usize> = rules
        .values()
        .filter_map(|r| r.on.clone().or_else(|| r.absent.clone()))
        .enumerate()
        .map(|(i, t)| (t, i))
        .collect();
    let mut engine_eps = Vec::new();
    let mut baseline_eps = Vec::new();
    let mut fired = 0;
    for _ in 0..RUNS {
        let mut engine = RuleEngine::new(rules, T0);
        let mut out = Output::default();
        let start = Instant::now();
        for ev in &events {
            engine.process(black_box(ev), &mut out);
        }
        engine_eps.push(N as f64 / start.elapsed().as_secs_f64());
        fired = out.proposals.len();

        let start = Instant::now();
        let mut hits = 0usize;
        for ev in &events {
            if let Some(i) = types.get(black_box(ev).kind.as_str()) {
                hits = hits.wrapping_add(*i);
            }
        }
        black_box(hits);
        baseline_eps.push(N as f64 / start.elapsed().as_secs_f64());
    }
    let (m, b) = (median(engine_eps), median(baseline_eps));
    println!(
        "rules events_per_sec median={m:.0} baseline={b:.0} ratio={:.1} rules={} events={N} runs={RUNS} proposals_per_run={fired}",
        b / m,
        rules.len()
    );
}

fn main() {
    if std::env::args().any(|a| a == "flood-baseline") {
        return flood_baseline();
    }
    let rules = rules();
    flood(&rules);
    throughput(&rules);
}
