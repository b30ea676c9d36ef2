//! The statistics a canary is judged with: percentiles, the Mann-Whitney U test on latencies
//! (as Spinnaker's Kayenta compares canary and baseline) and the two-proportion z-test on
//! error rates. Both tests are one-sided: is the candidate *worse* than production?
//!
//! The U test uses the normal approximation with the tie correction and a continuity
//! correction, exactly as `scipy.stats.mannwhitneyu(x, y, alternative="greater",
//! method="asymptotic", use_continuity=True)` computes it; a probe sends tens of requests,
//! where the approximation is good. The tests below hold values scipy 1.17.1 computed.

/// The probability that a standard normal variable exceeds `z` (the survival function),
/// `erfc(z / sqrt 2) / 2`.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function, with a fractional error below 1.2e-7 everywhere: the
/// Chebyshev fit `erfcc` of Press et al., *Numerical Recipes in C*, 2nd ed. (1992), §6.2.
/// Plenty for p-values compared with a significance level.
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let ans = t * poly.exp();
    if x >= 0.0 {
        ans
    } else {
        2.0 - ans
    }
}

/// The `q`-th percentile (0..=100) of `sorted` by linear interpolation between closest ranks
/// (numpy's default); `None` when empty.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let pos = (q / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

/// The result of a one-sided Mann-Whitney U test of "x tends to be larger than y".
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MannWhitney {
    /// U of `x`: pairs where x is larger, ties counting half.
    pub u: f64,
    /// The p-value of the one-sided test (1 when there is nothing to tell apart).
    pub p_value: f64,
    /// The common-language effect size `U / (n1 n2)`: the probability that a value of x is
    /// larger than one of y (0.5: no difference).
    pub effect: f64,
}

/// Mann-Whitney U, one-sided ("x greater"), normal approximation with tie and continuity
/// corrections; `None` when either sample is empty.
pub fn mann_whitney_greater(x: &[f64], y: &[f64]) -> Option<MannWhitney> {
    let (n1, n2) = (x.len(), y.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let mut all: Vec<(f64, bool)> = x
        .iter()
        .map(|v| (*v, true))
        .chain(y.iter().map(|v| (*v, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = all.len();
    let (mut r1, mut tie_term) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let rank = (i + j + 2) as f64 / 2.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        r1 += rank * all[i..=j].iter().filter(|(_, from_x)| *from_x).count() as f64;
        i = j + 1;
    }
    let (n1f, n2f, nf) = (n1 as f64, n2 as f64, n as f64);
    let u = r1 - n1f * (n1f + 1.0) / 2.0;
    let mean = n1f * n2f / 2.0;
    let var = n1f * n2f / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)));
    let p_value = if var > 0.0 {
        normal_sf((u - mean - 0.5) / var.sqrt())
    } else {
        1.0
    };
    Some(MannWhitney {
        u,
        p_value: p_value.clamp(0.0, 1.0),
        effect: u / (n1f * n2f),
    })
}

/// The p-value of the one-sided two-proportion z-test (pooled) of "the rate of `x1` in `n1`
/// is larger than that of `x2` in `n2`"; 1 when the rates cannot be told apart (no trials, or
/// no errors or only errors on both sides).
pub fn proportion_greater(x1: u64, n1: u64, x2: u64, n2: u64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let (p1, p2) = (x1 as f64 / n1 as f64, x2 as f64 / n2 as f64);
    let pooled = (x1 + x2) as f64 / (n1 + n2) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    if se == 0.0 {
        return 1.0;
    }
    normal_sf((p1 - p2) / se).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn the_normal_tail_matches_scipy() {
        // scipy.stats.norm.sf(1.96), .sf(-0.5), .sf(3.0), .sf(0)
        for (z, want) in [
            (1.96, 0.024997895148220435),
            (-0.5, 0.6914624612740131),
            (3.0, 0.0013498980316300933),
            (0.0, 0.5),
        ] {
            let got = normal_sf(z);
            assert!(
                (got - want).abs() / want < 2e-7,
                "sf({z}) = {got}, scipy {want}"
            );
        }
    }

    #[test]
    fn mann_whitney_matches_scipy_with_ties() {
        // scipy 1.17.1: mannwhitneyu(x, y, alternative="greater", method="asymptotic",
        // use_continuity=True) -> statistic 81.5, pvalue 0.033338555218879226 (15.0 and
        // 12.1 are tied across the samples).
        let x = [12.1, 14.3, 15.0, 15.0, 18.2, 19.9, 21.4, 22.0, 25.3, 30.1];
        let y = [
            10.2, 11.0, 12.1, 13.5, 14.0, 15.0, 16.8, 17.0, 18.1, 19.0, 20.5,
        ];
        let r = mann_whitney_greater(&x, &y).unwrap();
        assert_eq!(r.u, 81.5);
        assert!(close(r.p_value, 0.033338555218879226, 1e-8), "{r:?}");
        assert!(close(r.effect, 81.5 / 110.0, 1e-12));
        // Heavy ties, x not larger: statistic 10.0, pvalue 0.9248725643303407.
        let r = mann_whitney_greater(&[5., 5., 5., 6., 6., 7.], &[5., 6., 6., 7., 7., 7.]).unwrap();
        assert_eq!(r.u, 10.0);
        assert!(close(r.p_value, 0.9248725643303407, 1e-7), "{r:?}");
        // Nothing to tell apart.
        assert_eq!(
            mann_whitney_greater(&[1.0, 1.0], &[1.0]).unwrap().p_value,
            1.0
        );
        assert!(mann_whitney_greater(&[], &[1.0]).is_none());
    }

    #[test]
    fn proportions_match_the_chi_square_test() {
        // 5/50 against 1/50: scipy chi2_contingency([[5, 45], [1, 49]], correction=False)
        // gives chi2 2.8368794326241136 = z^2, two-sided p 0.09212296325765288; one-sided
        // half of it, 0.04606148162882644.
        let p = proportion_greater(5, 50, 1, 50);
        assert!(close(p, 0.04606148162882644, 1e-7), "{p}");
        assert!(proportion_greater(1, 50, 5, 50) > 0.9);
        assert_eq!(proportion_greater(0, 50, 0, 50), 1.0);
        assert_eq!(proportion_greater(0, 0, 0, 50), 1.0);
    }

    #[test]
    fn percentiles_interpolate_like_numpy() {
        // numpy.percentile(x, 95) = 27.94, (x, 50) = 19.05 for the x above.
        let mut x = [12.1, 14.3, 15.0, 15.0, 18.2, 19.9, 21.4, 22.0, 25.3, 30.1];
        x.sort_by(f64::total_cmp);
        assert!(close(percentile(&x, 95.0).unwrap(), 27.94, 1e-9));
        assert!(close(percentile(&x, 50.0).unwrap(), 19.05, 1e-9));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[3.0], 95.0), Some(3.0));
    }
}
