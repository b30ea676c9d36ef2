//! Restart latency: a supervised `sleep` is killed with SIGKILL at a random moment, and the
//! time from the kill to a new process running is measured (median, p99) for vigil, and for
//! supervisord and monit (`set daemon 1`) when they are installed (Debian packages
//! `supervisor` and `monit`). A plain spawn of `sleep` is the floor.
//!
//! vigil's side waits for the supervisor's `unit_started` event (sent once the new process is
//! spawned); the others' side scans /proc for the new process every 0.5 ms, which is far below
//! their latency.
//!
//! Run: `cargo bench --bench restart` (`VIGIL_RESTART_KILLS`, default 100, for vigil; the
//! others get a fifth of that, at least 10: they take a second each). Aim (issue 12): vigil's
//! median under 5 ms and p99 under 20 ms.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vigil::app::App;
use vigil::clock::SystemClock;
use vigil::config::Config;
use vigil::supervisor::{Supervisor, UnitState};

/// xorshift: random kill moments without a dependency.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Rng(seed | 1)
    }

    /// Uniform in `lo..hi` milliseconds.
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(lo + self.0 % (hi - lo))
    }
}

struct Stats {
    name: &'static str,
    samples: Vec<Duration>,
}

impl Stats {
    fn row(&mut self) -> String {
        self.samples.sort();
        let at = |q: f64| {
            let i = ((self.samples.len() as f64 - 1.0) * q).round() as usize;
            self.samples[i].as_secs_f64() * 1000.0
        };
        format!(
            "{:<14} {:>5} {:>10.2} {:>10.2} {:>10.2}",
            self.name,
            self.samples.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        )
    }
}

fn kill(pid: i32) {
    // SAFETY: kill with a pid and a signal number.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Pid of the process whose argv is exactly `argv`, other than `not`.
fn find(argv: &[&str], not: Option<i32>) -> Option<i32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if Some(pid) == not {
            continue;
        }
        if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want) {
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s[s.rfind(')').unwrap() + 2..].starts_with('Z'));
            if !zombie {
                return Some(pid);
            }
        }
    }
    None
}

/// Waits for a new process with `argv`; gives up after `limit`.
fn wait_new(argv: &[&str], old: Option<i32>, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(p) = find(argv, old) {
            return Some(p);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    None
}

fn vigil(kills: usize, rng: &mut Rng) -> Stats {
    let dir = tempfile::tempdir().unwrap();
    // Runs longer than `reset` count as healthy, so each kill restarts at once, as a rare
    // crash of a long-running server does.
    let text = r#"
[units.sleeper]
command = ["/bin/sleep", "1000"]
restart = "always"
backoff = { initial = "1s", max = "60s", reset = "50ms" }
max_restarts = 1000000
restart_window = "1s"
"#;
    let config = Config::parse("restart.toml", text).unwrap();
    let app = Arc::new(App::new(
        config,
        dir.path().to_path_buf(),
        Arc::new(SystemClock),
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut samples = Vec::new();
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let sup = Supervisor::start(app, tx).await.unwrap();
        let running = |s: &vigil::supervisor::Status| s.state == UnitState::Running;
        let mut pid = sup.wait_for("sleeper", running).await.unwrap().pid.unwrap();
        for _ in 0..kills {
            tokio::time::sleep(rng.ms(60, 200)).await;
            while rx.try_recv().is_ok() {}
            let t0 = Instant::now();
            kill(pid);
            // `unit_started` goes out as soon as the new process is spawned (its state is
            // stored after that).
            let new = loop {
                let e = rx.recv().await.unwrap();
                if e.kind == "unit_started" {
                    break e.data["pid"].as_i64().unwrap() as i32;
                }
            };
            samples.push(t0.elapsed());
            assert_ne!(new, pid);
            pid = new;
        }
        sup.stop_all().await;
    });
    Stats {
        name: "vigil",
        samples,
    }
}

fn spawn_baseline(n: usize) -> Stats {
    let samples = (0..n)
        .map(|_| {
            let t0 = Instant::now();
            let mut c = Command::new("/bin/sleep").arg("1000").spawn().unwrap();
            let d = t0.elapsed();
            c.kill().unwrap();
            c.wait().unwrap();
            d
        })
        .collect();
    Stats {
        name: "spawn (floor)",
        samples,
    }
}

/// Kills the process with `argv` `kills` times and times each replacement.
fn external(name: &'static str, argv: &[&str], kills: usize, rng: &mut Rng) -> Option<Stats> {
    let mut pid = wait_new(argv, None, Duration::from_secs(15))?;
    let mut samples = Vec::new();
    for _ in 0..kills {
        std::thread::sleep(rng.ms(1100, 2100));
        let t0 = Instant::now();
        kill(pid);
        pid = wait_new(argv, Some(pid), Duration::from_secs(10))?;
        samples.push(t0.elapsed());
    }
    Some(Stats { name, samples })
}

fn supervisord(dir: &Path, kills: usize, rng: &mut Rng) -> Option<Stats> {
    let conf = dir.join("supervisord.conf");
    std::fs::write(
        &conf,
        format!(
            "[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
             [program:sleeper]\ncommand=/bin/sleep 1001\nautorestart=true\nstartsecs=0\nstartretries=1000000\n",
            d = dir.display()
        ),
    )
    .ok()?;
    let mut daemon = Command::new("supervisord")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let out = external("supervisord", &["/bin/sleep", "1001"], kills, rng);
    let _ = daemon.kill();
    let _ = daemon.wait();
    if let Some(p) = find(&["/bin/sleep", "1001"], None) {
        kill(p);
    }
    out
}

fn monit(dir: &Path, kills: usize, rng: &mut Rng) -> Option<Stats> {
    let rc = dir.join("monitrc");
    std::fs::write(
        &rc,
        format!(
            "set daemon 1\nset logfile {d}/monit.log\nset idfile {d}/monit.id\nset statefile {d}/monit.state\n\
             set pidfile {d}/monit.pid\n\
             check process sleeper matching \"^/bin/sleep 1002$\"\n  start program = \"/bin/sh -c '/usr/bin/setsid /bin/sleep 1002 > /dev/null 2>&1 &'\"\n",
            d = dir.display()
        ),
    )
    .ok()?;
    // monit refuses a control file others can read.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).ok()?;
    let mut daemon = Command::new("monit")
        .arg("-I")
        .arg("-c")
        .arg(&rc)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let out = external("monit", &["/bin/sleep", "1002"], kills, rng);
    let _ = daemon.kill();
    let _ = daemon.wait();
    if let Some(p) = find(&["/bin/sleep", "1002"], None) {
        kill(p);
    }
    out
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn main() {
    let kills: usize = std::env::var("VIGIL_RESTART_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let others = (kills / 5).max(10);
    let mut rng = Rng::new();
    // The others run first: vigil's supervisor makes this process a child subreaper, and
    // then monit's orphaned `sleep`, killed, would stay a zombie of ours that monit counts as
    // running.
    let mut rows = vec![spawn_baseline(kills)];
    for (program, run) in [
        (
            "supervisord",
            supervisord as fn(&Path, usize, &mut Rng) -> Option<Stats>,
        ),
        ("monit", monit),
    ] {
        if !installed(program) {
            println!(
                "{program}: not installed (apt-get install {}); skipped",
                if program == "monit" {
                    "monit"
                } else {
                    "supervisor"
                }
            );
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        match run(dir.path(), others, &mut rng) {
            Some(s) => rows.push(s),
            None => println!("{program}: did not (re)start its process; skipped"),
        }
    }
    rows.push(vigil(kills, &mut rng));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "kill -> new process running (ms), SIGKILL at random moments; load {} on {} cpus",
        load.split_whitespace().next().unwrap_or("?"),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<14} {:>5} {:>10} {:>10} {:>10}",
        "supervisor", "n", "median", "p99", "max"
    );
    for r in &mut rows {
        println!("{}", r.row());
    }
}
