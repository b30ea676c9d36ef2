//! Shared by the canary tests: free port ranges, the real test service
//! (`tests/data/canary_service.py`) as a supervised production unit, a config with a spare
//! canary and quiesced ones, and waiting for a port to answer healthy.
#![allow(dead_code)]

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

pub const SERVICE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/canary_service.py");

/// The base of `n` consecutive ports nobody listens on now.
pub fn free_ports(n: u16) -> u16 {
    loop {
        let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let p = l.local_addr().unwrap().port();
        drop(l);
        if p < 60000 && (0..n).all(|i| TcpListener::bind((Ipv4Addr::UNSPECIFIED, p + i)).is_ok()) {
            return p;
        }
    }
}

/// Ports a test uses: production's, and the canary range `[first, first + 2]`.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub production: u16,
    pub first: u16,
}

impl Ports {
    pub fn pick() -> Ports {
        let base = free_ports(4);
        Ports {
            production: base,
            first: base + 1,
        }
    }
}

/// Production (`[units.UNIT]`, the service answering in 40 ms) and three canaries of it:
/// `spare` (beside production, compared with it), `judge` (quiesced: window 03:00-07:00 UTC,
/// budget 60 s, cooldown 6 h, health within 3 s) and `big` (quiesced, wants 70 s of the 60 s
/// budget). Promotions append the candidate's delay to `{dir}/promoted`.
///
/// Each test names its own unit: the supervisor marks a unit's processes with its name, the
/// clock's start time and the pid, which two daemons in one test process on one ManualClock
/// share, so one daemon's stop would reach the other's unit of the same name.
pub fn config(p: Ports, unit: &str, restore_sla: &str) -> String {
    let range = format!("{}-{}", p.first, p.first + 2);
    let canary = |name: &str, path: &str, extra: &str| {
        format!(
            r#"
[canaries.{name}]
production = {{ unit = "{unit}", port = {prod} }}
command = ["python3", "{SERVICE}", "--port", "{{port}}", "--delay-ms", "{{candidate.delay_ms}}", "{{candidate.flag}}"]
candidate = {{ delay_ms = 40, flag = "--quiet" }}
ports = "{range}"
path = "{path}"
health = {{ http = "http://127.0.0.1:{{port}}/health", timeout = "3s" }}
probe = {{ http = "http://127.0.0.1:{{port}}/v1/completions", body = '{{"prompt": "hi"}}', requests = 40, concurrency = 4 }}
promote = {{ run = ["sh", "-c", "echo {{candidate.delay_ms}} >> {{dir}}/promoted"] }}
restore_sla = "{restore_sla}"
{extra}
"#,
            prod = p.production
        )
    };
    let mut text = format!(
        r#"
[windows.maintenance]
at = "03:00-07:00"
timezone = "UTC"
[budgets.gpu_downtime]
seconds = 60

[units.{unit}]
command = ["python3", "{SERVICE}", "--port", "{prod}", "--delay-ms", "40"]
"#,
        prod = p.production
    );
    text.push_str(&canary(
        "spare",
        "spare",
        r#"judge = { max_error_rate = 0.05, max_p95_ms = 5000, compare = "production", max_slowdown = 0.2 }"#,
    ));
    let quiesced = r#"judge = { max_error_rate = 0.05, max_p95_ms = 5000 }
window = "maintenance"
budget = "gpu_downtime"
cooldown = "6h""#;
    text.push_str(&canary(
        "judge",
        "quiesced",
        &format!("{quiesced}\nexpected_downtime = \"20s\""),
    ));
    text.push_str(&canary(
        "big",
        "quiesced",
        &format!("{quiesced}\nexpected_downtime = \"70s\""),
    ));
    text
}

/// `config` for a real-clock daemon killed mid-canary: the maintenance window open around now
/// (an hour either side, UTC) and the candidate given 60 s to be healthy (still waiting when
/// the daemon is killed), its API on a free port with token `t`; `extra` goes on top (a
/// `[store]`), `{dir}` becomes `dir`.
pub fn open_window_config(p: Ports, unit: &str, dir: &std::path::Path, extra: &str) -> String {
    let now = jiff::Timestamp::now();
    let hhmm = |t: jiff::Timestamp| {
        t.to_zoned(jiff::tz::TimeZone::UTC)
            .strftime("%H:%M")
            .to_string()
    };
    let window = format!(
        "{}-{}",
        hhmm(now - jiff::SignedDuration::from_hours(1)),
        hhmm(now + jiff::SignedDuration::from_hours(1))
    );
    format!(
        "[api]\nlisten = \"127.0.0.1:0\"\ntoken = \"t\"\n{extra}\n{}",
        config(p, unit, "15s")
            .replace("03:00-07:00", &window)
            .replace("timeout = \"3s\"", "timeout = \"60s\"")
            .replace("{dir}", dir.to_str().unwrap())
    )
}

/// Whether `port` answers `/health` with 200 now.
pub async fn healthy(port: u16) -> bool {
    let url = format!("http://127.0.0.1:{port}/health");
    matches!(
        reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await,
        Ok(r) if r.status() == 200
    )
}

/// Waits (real processes) until `port` answers healthy; panics after `secs`.
pub async fn wait_healthy(port: u16, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !healthy(port).await {
        assert!(
            Instant::now() < deadline,
            "port {port} not healthy within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether anything accepts connections on `port`.
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Kills the supervised unit's process group when dropped: a clean stop of vigil leaves its
/// units running for the next daemon, and a failed test must not leave a server behind.
pub struct UnitGuard {
    pub data: std::path::PathBuf,
    pub unit: String,
}

impl Drop for UnitGuard {
    fn drop(&mut self) {
        use vigil::store::UnitStore;
        let pid = vigil::store::SqliteStore::open_dir(&self.data)
            .ok()
            .and_then(|s| s.unit(&self.unit).ok().flatten())
            .and_then(|u| u.pid);
        if let Some(pid) = pid.filter(|p| *p > 1) {
            // SAFETY: kill(2) on the unit's own group (it runs in a session of its own).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}
