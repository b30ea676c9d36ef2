//! The judgement: thresholds on the candidate's error rate and 95th-percentile latency, and,
//! with `compare = "production"`, the comparison with production on the same interleaved
//! workload: the candidate fails when it is slower with statistical significance (one-sided
//! Mann-Whitney U on the latencies of successful requests, and a median more than
//! `max_slowdown` above production's) or has more errors with significance (one-sided
//! two-proportion z-test).

use super::config::JudgeConfig;
use super::probe::Sample;
use super::stats;
use serde::Serialize;

/// One side's workload in numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub requests: usize,
    pub errors: usize,
    pub error_rate: f64,
    /// Of successful requests; `None` when none succeeded.
    pub median_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

impl Summary {
    pub fn of(samples: &[Sample]) -> (Summary, Vec<f64>) {
        let mut ok: Vec<f64> = samples
            .iter()
            .filter(|s| s.ok)
            .map(|s| s.latency_ms)
            .collect();
        ok.sort_by(f64::total_cmp);
        let errors = samples.len() - ok.len();
        let summary = Summary {
            requests: samples.len(),
            errors,
            error_rate: if samples.is_empty() {
                0.0
            } else {
                errors as f64 / samples.len() as f64
            },
            median_ms: stats::percentile(&ok, 50.0).map(round),
            p95_ms: stats::percentile(&ok, 95.0).map(round),
        };
        (summary, ok)
    }
}

/// Candidate against production.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Candidate median over production median, minus one: 0.5 is 50% slower.
    pub slowdown: f64,
    /// P(a candidate latency > a production latency), ties half: 0.5 is no difference.
    pub effect: f64,
    /// One-sided Mann-Whitney U p-value of "the candidate is slower".
    pub p_value: f64,
    /// One-sided two-proportion z-test p-value of "the candidate errs more".
    pub error_p_value: f64,
    pub alpha: f64,
    pub slower: bool,
    pub more_errors: bool,
}

/// What the judge said, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    pub passed: bool,
    /// Every failed criterion, in words; empty when it passed.
    pub reasons: Vec<String>,
    pub candidate: Summary,
    pub production: Option<Summary>,
    pub comparison: Option<Comparison>,
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// Judges the candidate's samples (and production's, for the comparison).
pub fn judge(cfg: &JudgeConfig, candidate: &[Sample], production: Option<&[Sample]>) -> Judgement {
    let (cand, cand_ok) = Summary::of(candidate);
    let mut reasons = Vec::new();
    if cand_ok.is_empty() {
        reasons.push(format!(
            "none of the {} probe requests succeeded",
            cand.requests
        ));
    }
    if let Some(max) = cfg.max_error_rate {
        if cand.error_rate > max {
            reasons.push(format!(
                "error rate {} ({} of {}) is above max_error_rate {}",
                pct(cand.error_rate),
                cand.errors,
                cand.requests,
                pct(max)
            ));
        }
    }
    if let (Some(max), Some(p95)) = (cfg.max_p95_ms, cand.p95_ms) {
        if p95 > max {
            reasons.push(format!("p95 latency {p95:.1} ms is above max_p95_ms {max}"));
        }
    }
    let mut prod_summary = None;
    let mut comparison = None;
    if let Some(prod) = production {
        let (ps, prod_ok) = Summary::of(prod);
        let mw = stats::mann_whitney_greater(&cand_ok, &prod_ok);
        let error_p = stats::proportion_greater(
            cand.errors as u64,
            cand.requests as u64,
            ps.errors as u64,
            ps.requests as u64,
        );
        let slowdown = match (cand.median_ms, ps.median_ms) {
            (Some(c), Some(p)) if p > 0.0 => c / p - 1.0,
            _ => 0.0,
        };
        let (p_value, effect) = mw.map_or((1.0, 0.5), |m| (m.p_value, m.effect));
        let slower = p_value < cfg.alpha && slowdown > cfg.max_slowdown;
        let more_errors = error_p < cfg.alpha;
        if slower {
            reasons.push(format!(
                "slower than production: median {:.1} ms against {:.1} ms ({:+.0}%), p = {:.2e} (Mann-Whitney U, alpha {})",
                cand.median_ms.unwrap_or_default(),
                ps.median_ms.unwrap_or_default(),
                slowdown * 100.0,
                p_value,
                cfg.alpha
            ));
        }
        if more_errors {
            reasons.push(format!(
                "more errors than production: {} against {}, p = {:.2e} (two-proportion z-test, alpha {})",
                pct(cand.error_rate),
                pct(ps.error_rate),
                error_p,
                cfg.alpha
            ));
        }
        comparison = Some(Comparison {
            slowdown: round(slowdown),
            effect: round(effect),
            p_value,
            error_p_value: error_p,
            alpha: cfg.alpha,
            slower,
            more_errors,
        });
        prod_summary = Some(ps);
    }
    Judgement {
        passed: reasons.is_empty(),
        reasons,
        candidate: cand,
        production: prod_summary,
        comparison,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::config::Compare;

    fn samples(latencies: impl IntoIterator<Item = f64>, errors: usize) -> Vec<Sample> {
        let mut v: Vec<Sample> = latencies
            .into_iter()
            .map(|l| Sample {
                latency_ms: l,
                ok: true,
            })
            .collect();
        v.extend((0..errors).map(|_| Sample {
            latency_ms: 1.0,
            ok: false,
        }));
        v
    }

    fn cfg() -> JudgeConfig {
        JudgeConfig {
            max_error_rate: Some(0.05),
            max_p95_ms: Some(100.0),
            compare: Some(Compare::Production),
            ..Default::default()
        }
    }

    #[test]
    fn thresholds_fail_with_their_numbers() {
        let j = judge(
            &cfg(),
            &samples((0..40).map(|i| 50.0 + i as f64 * 2.0), 10),
            None,
        );
        assert!(!j.passed);
        assert_eq!(j.candidate.error_rate, 0.2);
        assert!(
            j.reasons[0].contains("error rate 20.0% (10 of 50) is above max_error_rate 5.0%"),
            "{j:?}"
        );
        assert!(
            j.reasons[1].contains("p95 latency 124.1 ms is above max_p95_ms 100"),
            "{j:?}"
        );
        let none = judge(&cfg(), &samples([], 3), None);
        assert!(none.reasons[0].contains("none of the 3 probe requests succeeded"));
    }

    #[test]
    fn fifty_percent_slower_is_rejected_and_noise_within_tolerance_passes() {
        let base: Vec<f64> = (0..50).map(|i| 40.0 + (i % 10) as f64).collect();
        let slow: Vec<f64> = base.iter().map(|l| l * 1.5).collect();
        let j = judge(&cfg(), &samples(slow, 0), Some(&samples(base.clone(), 0)));
        let c = j.comparison.as_ref().unwrap();
        assert!(c.slower && c.p_value < 1e-6 && c.slowdown > 0.4, "{c:?}");
        assert!(
            !j.passed && j.reasons[0].starts_with("slower than production"),
            "{j:?}"
        );
        // 2% slower with certainty, inside the 10% tolerance: passes.
        let near: Vec<f64> = base.iter().map(|l| l * 1.02).collect();
        let j = judge(&cfg(), &samples(near, 0), Some(&samples(base.clone(), 0)));
        assert!(j.passed, "{j:?}");
        // The same: passes, effect one half.
        let j = judge(
            &cfg(),
            &samples(base.clone(), 0),
            Some(&samples(base.clone(), 0)),
        );
        assert!(j.passed && j.comparison.unwrap().effect == 0.5);
        // More errors than production, with significance, though under max_error_rate = 1.
        let lenient = JudgeConfig {
            max_error_rate: None,
            ..cfg()
        };
        let j = judge(
            &lenient,
            &samples(base.clone(), 20),
            Some(&samples(base, 0)),
        );
        assert!(j.comparison.as_ref().unwrap().more_errors, "{j:?}");
    }
}
