//! The Universal Scalability Law fitted to a configuration's (users, throughput) points:
//! `X(N) = lambda N / (1 + sigma (N - 1) + kappa N (N - 1))`, with contention `sigma` and coherency `kappa`.
//!
//! For a given `lambda`, `sigma` and `kappa` are fitted by least squares on the linear form
//! `lambda N / X - 1 = sigma (N - 1) + kappa N (N - 1)`, each held at zero when the free fit makes it negative.
//! `lambda` itself is searched from the largest per-user throughput seen (the model never exceeds `lambda N`) up to
//! three times that, keeping the fit with the least squared error in throughput itself: fitting the linear form
//! alone, with a free `lambda`, lets a few points past saturation predict peaks several times too high.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScalabilityFit {
    /// Throughput of one user with no contention, requests per second.
    pub lambda_rps: f64,
    pub sigma: f64,
    pub kappa: f64,
    /// The highest throughput the model predicts (absent when it grows without bound: no contention or coherency
    /// was seen), and the load it occurs at (absent when it only levels off).
    pub peak_throughput_rps: Option<f64>,
    pub peak_users: Option<f64>,
    /// Coefficient of determination of the fitted throughput against the measured one.
    pub r_squared: f64,
}

impl ScalabilityFit {
    pub fn throughput_rps(&self, users: f64) -> f64 {
        self.lambda_rps * users / (1.0 + self.sigma * (users - 1.0) + self.kappa * users * (users - 1.0))
    }
}

/// Fits the USL to at least three points with positive load and throughput.
pub fn fit(points: &[(f64, f64)]) -> Option<ScalabilityFit> {
    let points: Vec<(f64, f64)> = points.iter().copied().filter(|&(users, rps)| users > 0.0 && rps > 0.0).collect();
    if points.len() < 3 {
        return None;
    }
    let lambda_floor = points.iter().map(|&(users, rps)| rps / users).fold(0.0, f64::max);
    const LAMBDA_STEPS: u32 = 200;
    let candidates = (0..=LAMBDA_STEPS).flat_map(|step| {
        let lambda_rps = lambda_floor * (1.0 + 2.0 * f64::from(step) / f64::from(LAMBDA_STEPS));
        fit_terms(lambda_rps, &points).map(|(sigma, kappa)| with_quality(lambda_rps, sigma, kappa, &points))
    });
    candidates.max_by(|a, b| a.r_squared.total_cmp(&b.r_squared))
}

/// `sigma` and `kappa` for a given `lambda`: both terms or each alone, whichever fits best with neither negative.
fn fit_terms(lambda_rps: f64, points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let shapes = [(true, true), (true, false), (false, true)];
    let fitted = shapes.iter().filter_map(|&(use_sigma, use_kappa)| {
        let rows: Vec<(Vec<f64>, f64)> = points
            .iter()
            .map(|&(users, rps)| {
                let features = [(use_sigma, users - 1.0), (use_kappa, users * (users - 1.0))];
                let row = features.iter().filter(|(used, _)| *used).map(|(_, value)| *value).collect();
                (row, lambda_rps * users / rps - 1.0)
            })
            .collect();
        let coefficients = least_squares(&rows)?;
        let mut terms = coefficients.iter();
        let sigma = if use_sigma { *terms.next()? } else { 0.0 };
        let kappa = if use_kappa { *terms.next()? } else { 0.0 };
        (sigma >= 0.0 && kappa >= 0.0).then(|| with_quality(lambda_rps, sigma, kappa, points))
    });
    let best = fitted
        .chain([with_quality(lambda_rps, 0.0, 0.0, points)])
        .max_by(|a, b| a.r_squared.total_cmp(&b.r_squared))?;
    Some((best.sigma, best.kappa))
}

/// The model for these parameters, with its peak and its R^2 against the points.
fn with_quality(lambda_rps: f64, sigma: f64, kappa: f64, points: &[(f64, f64)]) -> ScalabilityFit {
    let mut fit =
        ScalabilityFit { lambda_rps, sigma, kappa, peak_throughput_rps: None, peak_users: None, r_squared: 0.0 };
    if kappa > 0.0 {
        let users = ((1.0 - sigma) / kappa).max(1.0).sqrt();
        fit.peak_users = Some(users);
        fit.peak_throughput_rps = Some(fit.throughput_rps(users));
    } else if sigma > 0.0 {
        fit.peak_throughput_rps = Some(lambda_rps / sigma);
    }
    let mean = points.iter().map(|point| point.1).sum::<f64>() / points.len() as f64;
    let total: f64 = points.iter().map(|point| (point.1 - mean).powi(2)).sum();
    let residual: f64 = points.iter().map(|&(users, rps)| (rps - fit.throughput_rps(users)).powi(2)).sum();
    // Flat data has no variance to explain: the fit is perfect if it hits the points and useless otherwise.
    let scale = if total > 0.0 { total } else { points.iter().map(|point| point.1 * point.1).sum::<f64>() };
    fit.r_squared = 1.0 - residual / scale;
    fit
}

/// Ordinary least squares through the normal equations, solved by Gaussian elimination with partial pivoting.
fn least_squares(rows: &[(Vec<f64>, f64)]) -> Option<Vec<f64>> {
    let width = rows.first()?.0.len();
    let mut matrix = vec![vec![0.0; width + 1]; width];
    for (row, target) in rows {
        for i in 0..width {
            for j in 0..width {
                matrix[i][j] += row[i] * row[j];
            }
            matrix[i][width] += row[i] * target;
        }
    }
    for column in 0..width {
        let pivot = (column..width).max_by(|&a, &b| matrix[a][column].abs().total_cmp(&matrix[b][column].abs()))?;
        if matrix[pivot][column].abs() < 1e-12 {
            return None;
        }
        matrix.swap(column, pivot);
        for row in 0..width {
            if row != column {
                let factor = matrix[row][column] / matrix[column][column];
                let pivot_row = matrix[column].clone();
                for (cell, pivot_cell) in matrix[row].iter_mut().zip(pivot_row) {
                    *cell -= factor * pivot_cell;
                }
            }
        }
    }
    Some((0..width).map(|i| matrix[i][width] / matrix[i][i]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linear_fit_has_no_peak_and_its_results_read_back() {
        // Infinity was written as JSON null, and the results file could not be read again.
        let fit = fit(&[(1.0, 40.0), (2.0, 80.0), (3.0, 120.0)]).unwrap();
        assert_eq!((fit.sigma, fit.kappa, fit.peak_throughput_rps), (0.0, 0.0, None));
        let read: ScalabilityFit = serde_json::from_str(&serde_json::to_string(&fit).unwrap()).unwrap();
        assert_eq!(read, fit);
    }

    #[test]
    fn recovers_the_parameters_of_an_exact_usl_curve() {
        let truth = ScalabilityFit {
            lambda_rps: 50.0,
            sigma: 0.05,
            kappa: 0.002,
            peak_throughput_rps: None,
            peak_users: None,
            r_squared: 0.0,
        };
        let points: Vec<(f64, f64)> =
            (0..12).map(|i| f64::from(1 + i * 2)).map(|users| (users, truth.throughput_rps(users))).collect();
        let fit = fit(&points).unwrap();
        assert!(
            (fit.lambda_rps - 50.0).abs() < 1e-6 && (fit.sigma - 0.05).abs() < 1e-9 && (fit.kappa - 0.002).abs() < 1e-9
        );
        // Peak at sqrt((1 - sigma) / kappa) = sqrt(475) users.
        assert!((fit.peak_users.unwrap() - 475f64.sqrt()).abs() < 1e-6);
        assert!(fit.r_squared > 0.999_999);
    }

    #[test]
    fn a_saturating_server_fits_with_a_finite_ceiling() {
        // 4 workers of 20 ms: 50 requests/s per user up to 4 users, then 200 requests/s.
        let points: Vec<(f64, f64)> =
            [2.0, 4.0, 6.0, 8.0, 10.0].iter().map(|&users: &f64| (users, (users * 50.0).min(200.0))).collect();
        let fit = fit(&points).unwrap();
        // A hard knee is not a USL curve, so the fit is rough, but its peak lands near the real ceiling.
        assert!(fit.r_squared > 0.8, "{fit:?}");
        assert!((fit.peak_throughput_rps.unwrap() / 200.0 - 1.0).abs() < 0.10, "{fit:?}");
    }

    #[test]
    fn measured_ramps_predict_their_ceiling() {
        // Steps measured by the quickstart: already saturated, saturating after one step, and a longer ramp.
        let ramps: [(&[(f64, f64)], f64); 3] = [
            (&[(2.0, 12.5), (4.0, 12.5), (6.0, 12.5)], 12.5),
            (&[(2.0, 94.5), (4.0, 100.0), (6.0, 100.0)], 100.0),
            (&[(2.0, 179.0), (4.0, 357.0), (6.0, 537.0), (8.0, 715.0), (10.0, 800.0), (12.0, 800.0)], 800.0),
        ];
        for (points, ceiling_rps) in ramps {
            let fit = fit(points).unwrap();
            // A hard knee is not a USL curve; the smooth fit overshoots it a little.
            assert!((fit.peak_throughput_rps.unwrap() / ceiling_rps - 1.0).abs() < 0.15, "{points:?}: {fit:?}");
            assert!(fit.r_squared > 0.8, "{points:?}: {fit:?}");
        }
    }

    #[test]
    fn too_few_points_give_no_fit() {
        assert!(fit(&[(1.0, 10.0), (2.0, 20.0)]).is_none());
    }
}
