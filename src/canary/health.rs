//! Health checks: GET a URL until it answers 2xx, a candidate's (which may exit first) or
//! production's after a restore. Polled every `interval` (milliseconds by default), so a
//! canary's duration is the service's own start time plus a poll.

use super::candidate::Candidate;
use std::time::{Duration, Instant};

/// Polls `url` until a 2xx answer, within `timeout`; Ok with how long it took. Fails at once
/// when `candidate` exits before that.
pub async fn wait_healthy(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
    interval: Duration,
    mut candidate: Option<&mut Candidate>,
) -> Result<Duration, String> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut last = "no answer yet".to_string();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "not healthy within {}: {url} last said: {last}",
                crate::config::human(timeout)
            ));
        }
        // One poll never outlasts the deadline, and a hung one does not hold up the next.
        let poll = http
            .get(url)
            .timeout(left.min(Duration::from_secs(5)))
            .send();
        let answer = match candidate.as_deref_mut() {
            Some(c) => tokio::select! {
                r = poll => r,
                how = c.exited() => return Err(format!("the candidate ended ({how}) before it became healthy")),
            },
            None => poll.await,
        };
        match answer {
            Ok(r) if r.status().is_success() => return Ok(started.elapsed()),
            Ok(r) => last = format!("HTTP {}", r.status()),
            // A poll cut short by the deadline says nothing new about the service.
            Err(e) if e.is_timeout() && Instant::now() >= deadline && last != "no answer yet" => {}
            Err(e) => last = short(&e),
        }
        let pause = interval.min(deadline.saturating_duration_since(Instant::now()));
        match candidate.as_deref_mut() {
            Some(c) => tokio::select! {
                () = tokio::time::sleep(pause) => {}
                how = c.exited() => return Err(format!("the candidate ended ({how}) before it became healthy")),
            },
            None => tokio::time::sleep(pause).await,
        }
    }
}

/// A request error in a few words: `connection refused`, `timed out`.
pub fn short(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    if e.is_connect() {
        return "connection refused".into();
    }
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = s.to_string();
        src = s.source();
    }
    msg
}
