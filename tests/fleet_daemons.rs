//! Three daemons, real `vigil run` processes with hosts `a`, `b` and `c`, on one PostgreSQL
//! store: 100 intents racing for one fleet budget of 60 s never have more than 60 s reserved
//! and used in any state of the ledger the test reads while they race (and they do meet the
//! budget: some are denied by it); a rolling restart under a fleet lock runs on one host at a time; each
//! host runs only its own intents; and a host killed with SIGKILL mid-run leaves its
//! reservation counted and its fleet lock held, with an alert naming it, until its restart
//! settles both.

mod common;

use common::store::{pg_query, pg_sample, Backend};
use common::{vigil, wait_blocking};
use std::path::{Path, PathBuf};
use vigil::intent::NewIntent;

/// `vigil run` as one host of the fleet, killed (SIGKILL) when dropped.
struct Host {
    name: &'static str,
    dir: PathBuf,
    child: std::process::Child,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(host: &str, dir: &Path, url: &str, log: &Path) -> PathBuf {
    let path = dir.join("vigil.toml");
    let text = format!(
        r#"host = "{host}"
data_dir = {data:?}

[api]
enabled = false

[store]
url = "{url}"

# Leases renewed every second; a dead host's lapse after 3 s.
[orchestrator]
lease = "3s"
workers = 4

[budgets.gpu_downtime]
seconds = 60
scope = "fleet"

# Three workers per host race for reservations of 25 s: at most two fit at once.
[playbooks.fix]
on = "budget_*"
budget = "gpu_downtime"
expected_downtime = "25s"
steps = [
  {{ run = ["sleep", "0.2"], downtime = true }},
  {{ run = ["true"], restore = true }},
]

# Each run writes when it starts and ends, with its VIGIL_STEP (HOST:PID:N/INTENT/RUN).
[playbooks.rolling]
on = "rollout_*"
lock = {{ name = "rolling", scope = "fleet" }}
steps = [
  {{ run = ["sh", "-c", "echo start $VIGIL_STEP $(date +%s%N) >> {log}; sleep 0.3; echo end $VIGIL_STEP $(date +%s%N) >> {log}"] }},
]

# Holds the fleet lock and a reservation while production is down, for a minute.
[playbooks.hold]
on = "hold_*"
lock = {{ name = "rolling", scope = "fleet" }}
budget = "gpu_downtime"
expected_downtime = "25s"
steps = [
  {{ run = ["sleep", "60"], downtime = true }},
  {{ run = ["true"], restore = true }},
]
on_failure = [{{ run = ["true"], restore = true }}]
"#,
        data = dir.join("data").to_str().unwrap(),
        log = log.display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

impl Host {
    fn start(name: &'static str, root: &Path, url: &str, log: &Path) -> Host {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let child = vigil(&dir.join("data"))
            .env_remove("VIGIL_STORE_URL")
            .args(["run", "--log-level", "warn", "--config"])
            .arg(config(name, &dir, url, log))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
            .spawn()
            .unwrap();
        Host { name, dir, child }
    }

    /// Drops an intent into this host's inbox: it is this host's to run.
    fn propose(&self, intent_type: &str, n: u32) {
        let intent = NewIntent {
            intent_type: intent_type.into(),
            priority: 5,
            reason: format!("{intent_type} {n} from {}", self.name),
            data: serde_json::json!({ "n": n }).as_object().unwrap().clone(),
            dedup_key: None,
            origin: "test".into(),
        };
        let now = vigil::clock::Clock::now_ms(&vigil::clock::SystemClock);
        vigil::intent::inbox::write(&self.dir.join("data").join("inbox"), &intent, now).unwrap();
    }

    fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.name))).unwrap_or_default()
    }
}

/// The rows of `sql`, each its first column split at `|`.
fn rows(url: &str, sql: &str) -> Vec<Vec<String>> {
    pg_query(url, sql)
        .into_iter()
        .map(|r| {
            r.unwrap_or_default()
                .split('|')
                .map(str::to_string)
                .collect()
        })
        .collect()
}

fn count(url: &str, sql: &str) -> i64 {
    pg_query(url, sql)[0].as_deref().unwrap().parse().unwrap()
}

fn fleet(root: &Path, url: &str, log: &Path) -> Vec<Host> {
    let hosts: Vec<Host> = ["a", "b", "c"]
        .into_iter()
        .map(|h| Host::start(h, root, url, log))
        .collect();
    // Every orchestrator's heartbeat is in: all three claim.
    wait_blocking("three hosts' heartbeats", 60, || {
        pg_query(url, "SELECT host FROM hosts ORDER BY host").len() == 3
    });
    hosts
}

fn settled(url: &str, prefix: &str) -> i64 {
    count(
        url,
        &format!("SELECT count(*) FROM intents WHERE intent_type LIKE '{prefix}%' AND status NOT IN ('pending', 'running')"),
    )
}

#[test]
fn three_hosts_share_one_fleet_budget_and_one_fleet_lock_and_each_runs_its_own() {
    let root = tempfile::tempdir().unwrap();
    let url = Backend::Postgres.fresh_url().unwrap();
    let log = root.path().join("rolling.log");
    let hosts = fleet(root.path(), &url, &log);
    let diag = || {
        hosts
            .iter()
            .map(Host::stderr)
            .collect::<Vec<_>>()
            .join("\n")
    };

    // 100 intents, a third from each host, all at once. While they race, the fleet's ledger
    // is read again and again: no committed state may hold more than 60 s.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = pg_sample(
        &url,
        "SELECT coalesce(sum(reserved_ms + used_ms), 0)::bigint FROM budget_ledger",
        stop.clone(),
    );
    for n in 0..100u32 {
        hosts[n as usize % 3].propose("budget_fix", n);
    }
    wait_blocking("all 100 intents to end", 120, || {
        settled(&url, "budget_") == 100
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let most = samples.iter().max().copied().unwrap_or_default();
    assert!(
        most <= 60_000,
        "{most} ms reserved and used at once, of 60 s ({} samples)",
        samples.len()
    );
    let runs = rows(
        &url,
        "SELECT started_at || '|' || coalesce(ended_at, 0) || '|' || reserved_ms || '|' || downtime_ms
         FROM runs WHERE playbook = 'fix'",
    );
    let runs: Vec<[i64; 4]> = runs
        .iter()
        .map(|r| [0, 1, 2, 3].map(|i| r[i].parse().unwrap()))
        .collect();
    assert!(runs.len() >= 2, "{runs:?}\n{}", diag());
    eprintln!(
        "{} runs, {} ledger samples, at most {most} ms reserved and used",
        runs.len(),
        samples.len()
    );
    let denied = count(
        &url,
        "SELECT count(*) FROM intents WHERE status = 'denied' AND note LIKE 'budget gate: Budget \"gpu_downtime\"%'",
    );
    let notes = pg_query(
        &url,
        "SELECT status || ': ' || coalesce(note, '') FROM intents WHERE intent_type = 'budget_fix' LIMIT 5",
    );
    assert!(
        denied > 0,
        "the race never met the budget: {runs:?} {notes:?}"
    );
    // The ledger: nothing left reserved, and every run's downtime charged once.
    let ledger = rows(
        &url,
        "SELECT scope || '|' || reserved_ms || '|' || used_ms FROM budget_ledger",
    );
    let used: i64 = runs.iter().map(|r| r[3]).sum();
    assert_eq!(
        ledger,
        vec![vec!["*".to_string(), "0".into(), used.to_string()]]
    );

    // Each host ran only its own intents (the host whose inbox proposed it).
    let strays = count(
        &url,
        "SELECT count(*) FROM runs r JOIN intents i ON i.id = r.intent_id WHERE r.host <> i.host",
    );
    assert_eq!(strays, 0);

    // A rolling restart: two intents per host at once, under the fleet lock.
    for n in 0..6u32 {
        hosts[n as usize % 3].propose("rollout_restart", n);
    }
    wait_blocking("the rolling restart to end", 120, || {
        settled(&url, "rollout_") == 6
    });
    let done = count(
        &url,
        "SELECT count(*) FROM intents WHERE intent_type = 'rollout_restart' AND status = 'done'",
    );
    assert_eq!(done, 6, "{}", diag());
    let text = std::fs::read_to_string(&log).unwrap();
    let mut spans: Vec<(u128, u128, String)> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (what, token, ns) = (f[0], f[1].to_string(), f[2].parse::<u128>().unwrap());
        match what {
            "start" => spans.push((ns, 0, token)),
            _ => spans.iter_mut().find(|s| s.2 == token).unwrap().1 = ns,
        }
    }
    spans.sort();
    assert_eq!(spans.len(), 6, "{text}");
    for w in spans.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "{} and {} overlap:\n{text}",
            w[0].2,
            w[1].2
        );
    }
    let mut by: Vec<&str> = spans
        .iter()
        .map(|s| s.2.split(':').next().unwrap())
        .collect();
    by.sort();
    assert_eq!(by, ["a", "a", "b", "b", "c", "c"], "{text}");
    // And on the host that proposed them (about 8 of the budget race's 100 ran: a host may
    // have won none there, but here each ran its own two).
    let strays = count(
        &url,
        "SELECT count(*) FROM runs r JOIN intents i ON i.id = r.intent_id WHERE r.host <> i.host",
    );
    assert_eq!(strays, 0, "{}", diag());
}

#[test]
fn a_host_killed_mid_run_keeps_its_reservation_and_lock_until_its_restart_settles_them() {
    let root = tempfile::tempdir().unwrap();
    let url = Backend::Postgres.fresh_url().unwrap();
    let log = root.path().join("rolling.log");
    let mut hosts = fleet(root.path(), &url, &log);
    let diag = |hosts: &[Host]| {
        hosts
            .iter()
            .map(Host::stderr)
            .collect::<Vec<_>>()
            .join("\n")
    };

    hosts[0].propose("hold_gpu", 1);
    wait_blocking("a's run to take production down", 60, || {
        count(
            &url,
            "SELECT count(*) FROM runs WHERE host = 'a' AND downtime_since IS NOT NULL",
        ) == 1
    });
    hosts[0].kill_9();
    // b wants the same lock and budget: it must wait, not take over what a holds.
    hosts[1].propose("rollout_restart", 2);

    // a's lease lapses; b or c raise the alert and b's intent still waits.
    wait_blocking("an alert naming the dead holder", 60, || {
        count(
            &url,
            "SELECT count(*) FROM intents WHERE intent_type = 'alert_fleet_lock_stale'",
        ) == 1
    });
    let alert = rows(
        &url,
        "SELECT (data::json ->> 'holder_host') || '|' || (data::json ->> 'lock') || '|' || reason
         FROM intents WHERE intent_type = 'alert_fleet_lock_stale'",
    );
    assert_eq!(alert[0][..2], ["a".to_string(), "rolling".to_string()]);
    assert!(
        alert[0][2].contains("vigil locks release rolling"),
        "{alert:?}"
    );
    let lock = rows(
        &url,
        "SELECT holder || '|' || scope FROM locks WHERE name = 'rolling'",
    );
    assert!(lock[0][0].starts_with("a:"), "{lock:?}");
    assert_eq!(lock[0][1], "*");
    assert_eq!(
        count(
            &url,
            "SELECT reserved_ms FROM budget_ledger WHERE budget = 'gpu_downtime'"
        ),
        25_000
    );
    assert_eq!(
        count(&url, "SELECT count(*) FROM intents WHERE intent_type = 'rollout_restart' AND status = 'pending'"),
        1,
        "{}",
        diag(&hosts)
    );

    // a comes back: its recovery settles the run, freeing the lock and the reservation.
    hosts[0] = Host::start("a", root.path(), &url, &log);
    wait_blocking("a to settle its run", 60, || {
        count(
            &url,
            "SELECT count(*) FROM runs WHERE playbook = 'hold' AND ended_at IS NOT NULL",
        ) == 1
    });
    wait_blocking("b's rolling restart to run", 60, || {
        count(&url, "SELECT count(*) FROM intents WHERE intent_type = 'rollout_restart' AND status = 'done'") == 1
    });
    let ledger = rows(
        &url,
        "SELECT reserved_ms || '|' || used_ms FROM budget_ledger",
    );
    assert_eq!(ledger[0][0], "0", "{ledger:?}");
    assert!(
        ledger[0][1].parse::<i64>().unwrap() > 0,
        "the downtime while a was away is charged: {ledger:?}"
    );
    let held = rows(
        &url,
        "SELECT host || '|' || result FROM runs WHERE playbook = 'hold'",
    );
    assert_eq!(
        held,
        vec![vec!["a".to_string(), "failed".into()]],
        "{}",
        diag(&hosts)
    );
}
