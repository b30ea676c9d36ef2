//! A unit's `ready` and `health` probes: one HTTP GET (2xx within the timeout, body included)
//! or one TCP connect. The probe source (`src/sources/probe.rs`) checks targets for the rule
//! engine; these check a unit for its own task, which restarts it, so they stay here, small.

use super::config::Probe;
use std::time::Duration;

/// Bytes of an answer's body read before it counts (a server that sends headers and hangs is
/// not healthy; a huge body is not read to the end).
const BODY: usize = 64 * 1024;

/// How often `ready` is probed while a unit starts, when `interval` is not given.
pub const READY_INTERVAL: Duration = Duration::from_millis(500);
/// How long a unit may take to become ready, when `ready.timeout` is not given.
pub const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// One `ready` attempt waits at most this long for its answer.
pub const READY_ATTEMPT: Duration = Duration::from_secs(2);
/// `health` defaults: a check every 10 s, 2 s for the answer, 3 failures in a row.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(10);
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
pub const HEALTH_FAILURES: u32 = 3;

/// What is probed and how long one attempt may take.
#[derive(Debug, Clone)]
pub struct Check {
    pub target: Target,
    pub timeout: Duration,
    pub client: reqwest::Client,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Http(String),
    Tcp(String),
}

impl Check {
    /// The check of `probe` with one attempt bounded by `timeout`; `None` for a probe with
    /// neither `http` nor `tcp` (rejected by the config check).
    pub fn new(probe: &Probe, timeout: Duration) -> Option<Check> {
        let target = match (&probe.http, &probe.tcp) {
            (Some(u), _) => Target::Http(u.clone()),
            (None, Some(a)) => Target::Tcp(a.clone()),
            (None, None) => return None,
        };
        Some(Check {
            target,
            timeout,
            client: crate::http::client(timeout),
        })
    }

    /// One attempt; `Err` says why the unit is not ready or not healthy.
    pub async fn run(&self) -> Result<(), String> {
        match &self.target {
            Target::Http(url) => {
                let failed = |e: reqwest::Error| {
                    if e.is_timeout() {
                        format!(
                            "{url}: no complete answer within {}",
                            crate::config::human(self.timeout)
                        )
                    } else {
                        format!("{url}: {}", crate::error::chain(&e))
                    }
                };
                let mut resp = self.client.get(url).send().await.map_err(failed)?;
                let status = resp.status();
                let mut read = 0;
                while read < BODY {
                    match resp.chunk().await.map_err(failed)? {
                        Some(chunk) => read += chunk.len(),
                        None => break,
                    }
                }
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("{url}: HTTP {status}"))
                }
            }
            Target::Tcp(addr) => {
                match tokio::time::timeout(
                    self.timeout,
                    tokio::net::TcpStream::connect(addr.as_str()),
                )
                .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("connect {addr}: {e}")),
                    Err(_) => Err(format!(
                        "connect {addr}: no answer within {}",
                        crate::config::human(self.timeout)
                    )),
                }
            }
        }
    }
}

/// `ready`: probed every `interval` until it passes or `timeout` (the whole wait) runs out.
#[derive(Debug, Clone)]
pub struct Ready {
    pub check: Check,
    pub interval: Duration,
    pub timeout: Duration,
}

impl Ready {
    pub fn new(probe: &Probe) -> Option<Ready> {
        let interval = probe.interval.map_or(READY_INTERVAL, |d| d.0);
        Some(Ready {
            check: Check::new(
                probe,
                READY_ATTEMPT.min(interval.max(Duration::from_millis(100))),
            )?,
            interval,
            timeout: probe.timeout.map_or(READY_TIMEOUT, |d| d.0),
        })
    }
}

/// `health`: probed every `interval`, each answer within `timeout`; `failures` in a row make
/// the unit unhealthy.
#[derive(Debug, Clone)]
pub struct Health {
    pub check: Check,
    pub interval: Duration,
    pub failures: u32,
}

impl Health {
    pub fn new(probe: &Probe) -> Option<Health> {
        Some(Health {
            check: Check::new(probe, probe.timeout.map_or(HEALTH_TIMEOUT, |d| d.0))?,
            interval: probe.interval.map_or(HEALTH_INTERVAL, |d| d.0),
            failures: probe.failures.unwrap_or(HEALTH_FAILURES).max(1),
        })
    }
}

/// Waits `after`, then runs one attempt: the future a unit's task selects on beside its
/// process and its controls. Owns what it needs, so dropping it (the process exited first)
/// leaves nothing behind.
pub async fn after(after: Duration, check: Check) -> Result<(), String> {
    tokio::time::sleep(after).await;
    check.run().await
}
