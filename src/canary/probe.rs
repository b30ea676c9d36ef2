//! The probe workload: `requests` requests, `concurrency` at a time. With a baseline (the
//! production URL), each request is sent to both, one right after the other, alternating which
//! goes first, so both see the same moments of load: the comparison judges the candidate, not
//! the host's weather.

use super::config::ProbeConfig;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One request's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// From sending to the whole body received (or the failure), in milliseconds.
    pub latency_ms: f64,
    /// A 2xx answer whose body arrived whole.
    pub ok: bool,
}

/// The samples of the candidate and, with a baseline, of production.
#[derive(Debug, Default)]
pub struct Samples {
    pub candidate: Vec<Sample>,
    pub production: Vec<Sample>,
}

async fn one(http: &reqwest::Client, cfg: &ProbeConfig, url: &str) -> Sample {
    let started = Instant::now();
    let req = match &cfg.body {
        Some(body) => http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, &cfg.content_type)
            .body(body.clone()),
        None => http.get(url),
    };
    let ok = match req.timeout(cfg.timeout.0).send().await {
        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
        Err(_) => false,
    };
    Sample {
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        ok,
    }
}

/// Runs the workload against `candidate` (and `production`, interleaved, when given).
pub async fn run(
    http: &reqwest::Client,
    cfg: &ProbeConfig,
    candidate: &str,
    production: Option<&str>,
) -> Samples {
    let next = Arc::new(AtomicU32::new(0));
    let out = Arc::new(Mutex::new(Samples::default()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..cfg.concurrency.min(cfg.requests) {
        let (http, cfg, next, out) = (http.clone(), cfg.clone(), next.clone(), out.clone());
        let (cand, prod) = (candidate.to_string(), production.map(str::to_string));
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cfg.requests {
                    return;
                }
                match &prod {
                    None => {
                        let s = one(&http, &cfg, &cand).await;
                        out.lock().unwrap().candidate.push(s);
                    }
                    Some(p) => {
                        let (c, p) = if i % 2 == 0 {
                            let c = one(&http, &cfg, &cand).await;
                            (c, one(&http, &cfg, p).await)
                        } else {
                            let p = one(&http, &cfg, p).await;
                            (one(&http, &cfg, &cand).await, p)
                        };
                        let mut o = out.lock().unwrap();
                        o.candidate.push(c);
                        o.production.push(p);
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let samples = std::mem::take(&mut *out.lock().unwrap());
    samples
}
