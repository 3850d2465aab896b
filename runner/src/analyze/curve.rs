//! The throughput-versus-load curve as a monotone fit (weighted isotonic regression, pool-adjacent-violators) of the
//! valid steps, and the capacity read from its flat part with an interval.
//!
//! A server's throughput does not fall when it is offered a little more load below its knee, so a step that
//! measured less than the one before it was a transient (a stall, a busy neighbour): the fit pools it with its
//! neighbours, weighted by each step's precision, and the plateau detector reads the fitted curve, so one dip can
//! neither end the search early nor become the figure.

use crate::measure::precision::{Interval, t_975};

/// One valid step as the curve sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    pub throughput_rps: f64,
    /// Of the step's mean throughput, by batch means.
    pub standard_error_rps: f64,
    pub degrees: f64,
}

/// The precision a step is credited with at best: even an exact step (the reference endpoint's virtual clock) is
/// one of several, and must not outweigh the rest without bound.
const MIN_RELATIVE_ERROR: f64 = 0.002;

impl CurvePoint {
    fn weight(&self) -> f64 {
        let floor = (self.throughput_rps.abs() * MIN_RELATIVE_ERROR).max(1e-6);
        1.0 / self.standard_error_rps.max(floor).powi(2)
    }
}

/// The weighted isotonic (non-decreasing) fit of the points' throughputs, in their order.
pub fn isotonic(points: &[CurvePoint]) -> Vec<f64> {
    // Blocks of pooled points: (weighted mean, total weight, points in it).
    let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(points.len());
    for point in points {
        blocks.push((point.throughput_rps, point.weight(), 1));
        while blocks.len() >= 2 && blocks[blocks.len() - 2].0 > blocks[blocks.len() - 1].0 {
            let (value, weight, count) = blocks.pop().expect("two blocks");
            let last = blocks.last_mut().expect("two blocks");
            let total = last.1 + weight;
            *last = ((last.0 * last.1 + value * weight) / total, total, last.2 + count);
        }
    }
    blocks.into_iter().flat_map(|(value, _, count)| std::iter::repeat_n(value, count)).collect()
}

/// The capacity measured over the flat part's steps, pooled by precision, with a 95% interval. When the steps
/// disagree more than their own intervals allow (a machine that drifted across the steps, or a short step whose
/// few seconds happened to agree), the between-step spread is estimated (DerSimonian and Laird's tau squared) and
/// added to every step's variance, so no one step outweighs the rest on a precision it does not have, and the
/// interval is widened by the remaining excess spread (the Birge ratio).
pub fn pooled(points: &[CurvePoint]) -> Option<(f64, Interval)> {
    let weights: Vec<f64> = points.iter().map(CurvePoint::weight).collect();
    let total_weight: f64 = weights.iter().sum();
    if points.is_empty() || total_weight <= 0.0 {
        return None;
    }
    let weighted_mean = |weights: &[f64]| {
        points.iter().zip(weights).map(|(point, weight)| point.throughput_rps * weight).sum::<f64>()
            / weights.iter().sum::<f64>()
    };
    let chi_squared = |weights: &[f64], mean: f64| -> f64 {
        points.iter().zip(weights).map(|(point, weight)| weight * (point.throughput_rps - mean).powi(2)).sum()
    };
    let excess = (points.len() as f64 - 1.0).max(1.0);
    let fixed_mean = weighted_mean(&weights);
    let scale = total_weight - weights.iter().map(|weight| weight * weight).sum::<f64>() / total_weight;
    let between_variance =
        if scale > 0.0 { ((chi_squared(&weights, fixed_mean) - excess) / scale).max(0.0) } else { 0.0 };
    let weights: Vec<f64> = weights.iter().map(|weight| 1.0 / (1.0 / weight + between_variance)).collect();
    let mean = weighted_mean(&weights);
    let mut variance = 1.0 / weights.iter().sum::<f64>();
    if points.len() >= 2 {
        variance *= (chi_squared(&weights, mean) / excess).max(1.0);
    }
    let degrees: f64 = points.iter().map(|point| point.degrees).sum::<f64>().max(1.0);
    let half = t_975(degrees) * variance.sqrt();
    Some((mean, Interval { low: (mean - half).max(0.0), high: mean + half }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(throughput_rps: f64) -> CurvePoint {
        CurvePoint { throughput_rps, standard_error_rps: throughput_rps * 0.01, degrees: 4.0 }
    }

    #[test]
    fn a_dip_is_pooled_with_the_step_before_it() {
        let fit = isotonic(&[point(100.0), point(200.0), point(150.0), point(300.0)]);
        assert!(fit.windows(2).all(|pair| pair[0] <= pair[1]), "{fit:?}");
        assert!(fit[1] == fit[2] && fit[1] > 150.0 && fit[1] < 200.0, "{fit:?}");
        assert_eq!((fit[0], fit[3]), (100.0, 300.0));
    }

    #[test]
    fn a_noisy_step_weighs_less_than_a_precise_one() {
        let precise = point(200.0);
        let noisy = CurvePoint { throughput_rps: 120.0, standard_error_rps: 40.0, degrees: 4.0 };
        let fit = isotonic(&[precise, noisy]);
        assert!(fit[0] > 199.0, "{fit:?}");
    }

    #[test]
    fn steps_that_disagree_widen_the_pooled_interval() {
        let (agreeing_mean, agreeing) = pooled(&[point(400.0), point(401.0), point(399.0)]).unwrap();
        let (_, disagreeing) = pooled(&[point(400.0), point(440.0), point(360.0)]).unwrap();
        assert!((agreeing_mean - 400.0).abs() < 0.1);
        assert!(agreeing.contains(400.0) && agreeing.high - agreeing.low < 12.0, "{agreeing:?}");
        assert!(disagreeing.high - disagreeing.low > 4.0 * (agreeing.high - agreeing.low), "{disagreeing:?}");
    }

    #[test]
    fn a_falsely_precise_step_does_not_outweigh_steps_that_disagree_with_it() {
        // Two seconds that happened to agree give a near-zero standard error; the steps around it say otherwise.
        let lucky = CurvePoint { throughput_rps: 196.5, standard_error_rps: 0.0, degrees: 1.0 };
        let steps = [
            lucky,
            CurvePoint { standard_error_rps: 3.0, ..point(186.0) },
            CurvePoint { standard_error_rps: 3.0, ..point(178.75) },
        ];
        let (mean, interval) = pooled(&steps).unwrap();
        assert!(mean < 190.0, "pooled {mean}, pulled to the lucky step");
        assert!(interval.contains(179.0) && interval.contains(196.0), "{interval:?}");
    }
}
