//! The plateau: where throughput stops growing.
//!
//! The detector walks the complete steps in order. A step is *flat* when its throughput gained less than
//! `max(min_gain_percent, min_load_efficiency x the load it added)` over the best step before it. The first flat
//! step is the plateau once `confirm_steps` further steps are flat too. A step whose latency crosses a
//! `[stopping]` threshold, or whose error rate passes `max_error_rate_percent`, ends the search: the plateau is
//! the step before it. With no flat step, the plateau is not reached and MaxInvocations is a lower bound. A step
//! where the load generator fell behind is skipped: it measured plateau, not the endpoint. A ramp that ends with
//! such steps plateaus, unconfirmed, at the last valid one.
//! `phases` change their load every second, so they are judged by sliding 10 s windows instead (`sliding_window`).

use serde::{Deserialize, Serialize};

use crate::measure;
use crate::measure::series::SecondSummary;
use crate::measure::step::StepRecord;
use crate::plan::{StepRole, StepWindow};
use crate::spec::{FlatInvocations, LatencyThreshold, Percentile, PlateauSettings, Stopping};

use super::curve::{CurvePoint, isotonic};
use super::{StepResult, step_result};

/// One step as the detector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPoint {
    /// Virtual users, or offered requests per second for an open model.
    pub load: f64,
    pub throughput_rps: f64,
    pub error_rate_percent: f64,
    /// Observed latency at each `[stopping]` threshold's percentile, in the thresholds' order.
    pub threshold_latency_ms: Vec<f64>,
    /// The load generator fell behind its schedule in this step.
    pub generator_saturated: bool,
    /// The step's throughput precision (batch means), which weighs it in the curve.
    pub standard_error_rps: f64,
    pub degrees: f64,
}

impl StepPoint {
    pub(super) fn curve_point(&self) -> CurvePoint {
        CurvePoint {
            throughput_rps: self.throughput_rps,
            standard_error_rps: self.standard_error_rps,
            degrees: self.degrees,
        }
    }

    /// The first `[stopping]` threshold this step crossed, with what it observed.
    fn crossed<'t>(&self, thresholds: &'t [LatencyThreshold]) -> Option<(&'t LatencyThreshold, f64)> {
        thresholds
            .iter()
            .zip(&self.threshold_latency_ms)
            .find(|(threshold, observed)| **observed > threshold.latency_ms)
            .map(|(threshold, observed)| (threshold, *observed))
    }
}

/// The fitted throughput of each point: the isotonic fit of the steps the search may use (not saturated, before the
/// first step that crossed a threshold or the error limit); `None` for the others.
pub fn fitted_curve(
    points: &[StepPoint],
    thresholds: &[LatencyThreshold],
    settings: &PlateauSettings,
) -> Vec<Option<f64>> {
    let end = points
        .iter()
        .position(|point| {
            !point.generator_saturated
                && (point.error_rate_percent > settings.max_error_rate_percent || point.crossed(thresholds).is_some())
        })
        .unwrap_or(points.len());
    let usable: Vec<usize> = (0..end).filter(|index| !points[*index].generator_saturated).collect();
    let fit = isotonic(&usable.iter().map(|index| points[*index].curve_point()).collect::<Vec<_>>());
    let mut fitted = vec![None; points.len()];
    for (index, value) in usable.into_iter().zip(fit) {
        fitted[index] = Some(value);
    }
    fitted
}

/// The steps of the curve's flat part: the plateau step and the usable steps after it that gained too little over
/// it on the fitted curve, up to the first that grew again.
pub fn flat_part(
    points: &[StepPoint],
    fitted: &[Option<f64>],
    plateau_step: usize,
    settings: &PlateauSettings,
) -> Vec<usize> {
    let Some(base) = fitted.get(plateau_step).copied().flatten() else {
        return vec![plateau_step];
    };
    let base = Level { load: points[plateau_step].load, throughput_rps: base };
    let mut part = vec![plateau_step];
    for (index, value) in fitted.iter().enumerate().skip(plateau_step + 1) {
        let Some(value) = value else { continue };
        if !is_flat(base, Level { load: points[index].load, throughput_rps: *value }, settings) {
            break;
        }
        part.push(index);
    }
    part
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum PlateauRule {
    /// Added load stopped adding throughput.
    ThroughputFlat,
    /// The step after the plateau crossed a latency threshold.
    LatencyThreshold { percentile: Percentile, threshold_ms: f64, observed_ms: f64 },
    /// The step after the plateau had too many errors.
    ErrorRate { error_rate_percent: f64, limit_percent: f64 },
    /// Throughput still grew at the last step: MaxInvocations is a lower bound.
    NotReached,
    /// The load generator fell behind its schedule at `at_step` before the endpoint levelled off: the steps
    /// from there on measure plateau, not the endpoint, and MaxInvocations is a lower bound.
    GeneratorSaturated { at_step: usize },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    pub step: usize,
    #[serde(flatten)]
    pub rule: PlateauRule,
    /// False when the ramp ended before the following steps could confirm it.
    pub confirmed: bool,
    /// For `phases`: the sliding window (first and one-past-last second) the figures are measured over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<[u64; 2]>,
}

/// Length of the sliding windows `phases` are judged by (docs/decisions.md, "What the numbers mean").
pub const SLIDING_WINDOW_S: u64 = 10;

/// A load level and the throughput measured at it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Level {
    load: f64,
    throughput_rps: f64,
}

/// The flat rule: going from `base` to `next`, throughput gained less than `min_gain_percent`, or less than
/// `min_load_efficiency` times the load it added.
fn is_flat(base: Level, next: Level, settings: &PlateauSettings) -> bool {
    let gain_percent = if base.throughput_rps > 0.0 {
        (next.throughput_rps / base.throughput_rps - 1.0) * 100.0
    } else {
        f64::INFINITY
    };
    let load_gain_percent = (next.load / base.load.max(f64::MIN_POSITIVE) - 1.0) * 100.0;
    gain_percent < settings.min_gain_percent.max(settings.min_load_efficiency * load_gain_percent)
}

/// For `phases`, whose load changes every second: the first sliding window of `SLIDING_WINDOW_S` seconds whose
/// throughput gained too little over the window just before it (the flat rule of `detect`), confirmed by the
/// window just after it. Reads only the per-second counts, from `from_s` (after any warm-up) on.
pub fn sliding_window(seconds: &[SecondSummary], from_s: u64, settings: &PlateauSettings) -> Option<StepWindow> {
    let width = SLIDING_WINDOW_S as usize;
    let usable: Vec<&SecondSummary> = seconds.iter().filter(|second| second.second >= from_s).collect();
    let level = |start: usize| -> Option<Level> {
        let window = usable.get(start..start + width)?;
        let load = window.iter().map(|second| second.load).sum::<f64>() / width as f64;
        let throughput_rps = window.iter().map(|second| second.completed as f64).sum::<f64>() / width as f64;
        Some(Level { load, throughput_rps })
    };
    (width..usable.len()).find_map(|start| {
        let (before, current) = (level(start - width)?, level(start)?);
        let confirmed = level(start + width).is_none_or(|after| is_flat(current, after, settings));
        (is_flat(before, current, settings) && confirmed).then(|| StepWindow {
            index: 0,
            start_s: usable[start].second,
            end_s: usable[start].second + SLIDING_WINDOW_S,
            steady_start_s: usable[start].second,
            load: current.load,
            role: StepRole::Measured,
        })
    })
}

/// Saturated steps in a row, at the end of the ramp so far, after which the online detector ends the ramp: one is
/// a transient (the machine was busy for a moment), two in a row say that more load would measure plateau.
pub const SATURATED_STEPS_TO_STOP: usize = 2;

/// Finds the plateau among complete steps; `None` only when there are none. Steps where the load generator fell
/// behind measured plateau, not the endpoint: they are skipped, neither compared nor compared against.
pub fn detect(points: &[StepPoint], thresholds: &[LatencyThreshold], settings: &PlateauSettings) -> Option<Plateau> {
    // The valid step with the most throughput so far, the last valid one, and the first flat step with the flat
    // valid steps after it.
    let fitted = fitted_curve(points, thresholds, settings);
    let level = |index: usize| Level {
        load: points[index].load,
        throughput_rps: fitted[index].unwrap_or(points[index].throughput_rps),
    };
    let mut best: Option<usize> = None;
    let mut last_valid: Option<usize> = None;
    let mut candidate: Option<(usize, usize)> = None;
    for (index, point) in points.iter().enumerate() {
        if point.generator_saturated {
            continue;
        }
        let before = last_valid.unwrap_or(0);
        if point.error_rate_percent > settings.max_error_rate_percent {
            let rule = PlateauRule::ErrorRate {
                error_rate_percent: point.error_rate_percent,
                limit_percent: settings.max_error_rate_percent,
            };
            return Some(Plateau { step: before, rule, confirmed: true, window_s: None });
        }
        if let Some((threshold, observed_ms)) = point.crossed(thresholds) {
            let rule = PlateauRule::LatencyThreshold {
                percentile: threshold.percentile,
                threshold_ms: threshold.latency_ms,
                observed_ms,
            };
            return Some(Plateau { step: before, rule, confirmed: true, window_s: None });
        }
        last_valid = Some(index);
        let Some(base_index) = best else {
            best = Some(index);
            continue;
        };
        let flat = is_flat(level(base_index), level(index), settings);
        match (flat, candidate) {
            (true, None) => candidate = Some((index, 0)),
            (true, Some((first, flat_after))) if flat_after + 1 >= settings.confirm_steps => {
                return Some(Plateau {
                    step: first,
                    rule: PlateauRule::ThroughputFlat,
                    confirmed: true,
                    window_s: None,
                });
            }
            (true, Some((first, flat_after))) => candidate = Some((first, flat_after + 1)),
            (false, _) => candidate = None,
        }
        if level(index).throughput_rps > level(base_index).throughput_rps {
            best = Some(index);
        }
    }
    if points.is_empty() {
        return None;
    }
    let first = candidate.map(|(first, _)| first);
    // The ramp ended with the load generator behind: what the endpoint does beyond the last valid step is unknown.
    let saturated_at_end = points.iter().rev().take_while(|point| point.generator_saturated).count();
    if saturated_at_end > 0 {
        return Some(Plateau {
            step: first.or(best).unwrap_or(0),
            rule: PlateauRule::GeneratorSaturated { at_step: points.len() - saturated_at_end },
            confirmed: false,
            window_s: None,
        });
    }
    let best = best.unwrap_or(0);
    Some(match first {
        Some(first) if settings.confirm_steps == 0 => {
            Plateau { step: first, rule: PlateauRule::ThroughputFlat, confirmed: true, window_s: None }
        }
        Some(first) => Plateau { step: first, rule: PlateauRule::ThroughputFlat, confirmed: false, window_s: None },
        None => Plateau { step: best, rule: PlateauRule::NotReached, confirmed: false, window_s: None },
    })
}

fn step_point(step: &StepResult, thresholds: &[LatencyThreshold]) -> StepPoint {
    StepPoint {
        load: step.load,
        throughput_rps: step.throughput_rps,
        error_rate_percent: step.error_rate_percent,
        generator_saturated: step.generator_saturated,
        standard_error_rps: step.throughput_standard_error_rps.unwrap_or(step.throughput_rps * 0.1),
        degrees: step.throughput_degrees,
        threshold_latency_ms: thresholds
            .iter()
            .map(|threshold| measure::percentile_ms(&step.histogram, threshold.percentile.value()))
            .collect(),
    }
}

pub(super) fn complete_points(steps: &[StepResult], thresholds: &[LatencyThreshold]) -> Vec<StepPoint> {
    steps.iter().filter(|step| step.complete).map(|step| step_point(step, thresholds)).collect()
}

/// Runs the detector after every step and ends the ramp when `[stopping]` says so.
pub struct OnlineDetector<'a> {
    pub stopping: &'a Stopping,
    pub settings: PlateauSettings,
}

impl OnlineDetector<'_> {
    /// Why the ramp should end after the steps so far, if it should.
    pub fn stop_reason(&self, steps: &[StepRecord]) -> Option<String> {
        let steps: Vec<StepResult> = steps.iter().map(step_result).collect();
        let points = complete_points(&steps, &self.stopping.latency_thresholds);
        self.reason(&points, self.stopping.flat_invocations == FlatInvocations::Stop)
    }

    /// Why a ramp with these steps should end, if it should; a confirmed plateau ends it when `stop_when_flat`.
    pub fn reason(&self, points: &[StepPoint], stop_when_flat: bool) -> Option<String> {
        match detect(points, &self.stopping.latency_thresholds, &self.settings)? {
            Plateau { rule: PlateauRule::LatencyThreshold { percentile, threshold_ms, observed_ms }, .. } => {
                Some(format!("{percentile} latency {observed_ms:.1} ms crossed the {threshold_ms} ms threshold"))
            }
            Plateau { rule: PlateauRule::ErrorRate { error_rate_percent, .. }, .. } => {
                Some(format!("error rate {error_rate_percent:.1}% passed the limit"))
            }
            Plateau { rule: PlateauRule::GeneratorSaturated { at_step }, .. }
                if points.len() - at_step >= SATURATED_STEPS_TO_STOP =>
            {
                Some(
                    "the load generator fell behind its schedule; more load would measure plateau, not the endpoint"
                        .to_string(),
                )
            }
            Plateau { step, rule: PlateauRule::ThroughputFlat, confirmed: true, .. } if stop_when_flat => {
                Some(format!("plateau confirmed at step {}", step + 1))
            }
            _ => None,
        }
    }

    /// The first step of a confirmed plateau where throughput stopped growing, if the steps show one.
    pub fn confirmed_plateau(&self, points: &[StepPoint]) -> Option<usize> {
        match detect(points, &self.stopping.latency_thresholds, &self.settings)? {
            Plateau { step, rule: PlateauRule::ThroughputFlat, confirmed: true, .. } => Some(step),
            _ => None,
        }
    }

    /// A step as the detector sees it.
    pub fn point(&self, step: &StepResult) -> StepPoint {
        step_point(step, &self.stopping.latency_thresholds)
    }

    /// Whether the step crossed a `[stopping]` latency threshold.
    pub fn crossed(&self, point: &StepPoint) -> bool {
        point.crossed(&self.stopping.latency_thresholds).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(series: &[(f64, f64)]) -> Vec<StepPoint> {
        series
            .iter()
            .map(|&(load, throughput_rps)| StepPoint {
                load,
                throughput_rps,
                error_rate_percent: 0.0,
                threshold_latency_ms: Vec::new(),
                generator_saturated: false,
                standard_error_rps: throughput_rps * 0.01,
                degrees: 4.0,
            })
            .collect()
    }

    fn settings() -> PlateauSettings {
        PlateauSettings::default()
    }

    #[test]
    fn flat_series_plateaus_at_the_second_step() {
        let plateau = detect(&points(&[(2.0, 200.0), (4.0, 201.0), (6.0, 199.0)]), &[], &settings()).unwrap();
        assert_eq!((plateau.step, plateau.rule, plateau.confirmed), (1, PlateauRule::ThroughputFlat, true));
    }

    #[test]
    fn rising_series_never_plateaus() {
        let plateau =
            detect(&points(&[(2.0, 100.0), (4.0, 200.0), (6.0, 300.0), (8.0, 400.0)]), &[], &settings()).unwrap();
        assert_eq!((plateau.step, plateau.rule, plateau.confirmed), (3, PlateauRule::NotReached, false));
    }

    #[test]
    fn linear_then_saturated_plateaus_at_the_first_flat_step() {
        let series =
            [(2.0, 100.0), (4.0, 200.0), (6.0, 300.0), (8.0, 400.0), (10.0, 402.0), (12.0, 398.0), (14.0, 401.0)];
        let plateau = detect(&points(&series), &[], &settings()).unwrap();
        assert_eq!((plateau.step, plateau.confirmed), (4, true));
    }

    #[test]
    fn noise_at_the_plateau_does_not_hide_it() {
        // +4% and -3% wobble on a saturated server; the load grows by 20% or more per step.
        let series = [(4.0, 200.0), (8.0, 390.0), (12.0, 400.0), (16.0, 416.0), (20.0, 404.0), (24.0, 395.0)];
        let plateau = detect(&points(&series), &[], &settings()).unwrap();
        assert_eq!((plateau.step, plateau.confirmed), (2, true));
    }

    #[test]
    fn a_single_flat_step_is_unconfirmed_until_the_next_one() {
        let plateau = detect(&points(&[(2.0, 100.0), (4.0, 200.0), (6.0, 201.0)]), &[], &settings()).unwrap();
        assert_eq!((plateau.step, plateau.confirmed), (2, false));
        let recovered =
            detect(&points(&[(2.0, 100.0), (4.0, 200.0), (6.0, 201.0), (8.0, 300.0)]), &[], &settings()).unwrap();
        assert_eq!(recovered.rule, PlateauRule::NotReached);
    }

    #[test]
    fn a_step_flagged_load_generator_saturated_is_not_the_plateau() {
        // Issue 15, case 1: a busy machine flagged the second step; the endpoint's real plateau comes later.
        let mut series = points(&[(2.0, 100.0), (4.0, 60.0), (6.0, 300.0), (8.0, 400.0), (10.0, 402.0), (12.0, 401.0)]);
        series[1].generator_saturated = true;
        let plateau = detect(&series, &[], &settings()).unwrap();
        assert_eq!((plateau.step, plateau.rule, plateau.confirmed), (4, PlateauRule::ThroughputFlat, true));
    }

    #[test]
    fn a_ramp_that_ends_saturated_plateaus_at_the_last_valid_step_unconfirmed() {
        let mut series = points(&[(2.0, 100.0), (4.0, 200.0), (6.0, 210.0), (8.0, 220.0)]);
        series[2].generator_saturated = true;
        series[3].generator_saturated = true;
        let plateau = detect(&series, &[], &settings()).unwrap();
        assert_eq!((plateau.step, plateau.confirmed), (1, false));
        assert_eq!(plateau.rule, PlateauRule::GeneratorSaturated { at_step: 2 });
    }

    #[test]
    fn latency_bound_series_plateaus_before_the_threshold_is_crossed() {
        let threshold = LatencyThreshold { percentile: Percentile::new(99.0).unwrap(), latency_ms: 50.0 };
        let mut series = points(&[(2.0, 100.0), (4.0, 200.0), (6.0, 300.0)]);
        for (point, latency) in series.iter_mut().zip([20.0, 40.0, 60.0]) {
            point.threshold_latency_ms = vec![latency];
        }
        let plateau = detect(&series, &[threshold], &settings()).unwrap();
        assert_eq!(plateau.step, 1);
        assert_eq!(
            plateau.rule,
            PlateauRule::LatencyThreshold { percentile: threshold.percentile, threshold_ms: 50.0, observed_ms: 60.0 }
        );
    }

    #[test]
    fn errors_end_the_search() {
        let mut series = points(&[(2.0, 100.0), (4.0, 200.0), (6.0, 290.0)]);
        series[2].error_rate_percent = 5.0;
        let plateau = detect(&series, &[], &settings()).unwrap();
        assert_eq!(plateau.step, 1);
        assert!(matches!(plateau.rule, PlateauRule::ErrorRate { .. }));
    }

    #[test]
    fn phases_plateau_at_the_first_sliding_window_that_stops_growing() {
        // Users grow by one every 2 s; 4 workers of 20 ms saturate at 4 users (200 requests/s).
        let seconds: Vec<SecondSummary> = (0..40)
            .map(|second| {
                let users = 1.0 + (second / 2) as f64;
                SecondSummary {
                    second,
                    load: users,
                    started: 0,
                    completed: (50.0 * users).min(200.0) as u64,
                    dropped: 0,
                    errors: 0,
                    p50_ms: 0.0,
                    p99_ms: 0.0,
                    generator_lag_p99_ms: 0.0,
                    resources: Default::default(),
                }
            })
            .collect();
        let window = sliding_window(&seconds, 0, &settings()).unwrap();
        // Seconds 10-19 serve 200/s against 140/s before: +43% for +167% users is still above a quarter of linear
        // scaling (42%). Seconds 11-20 against 1-10 (155/s): +29% for +143% users is below it: flat.
        assert_eq!((window.start_s, window.end_s), (11, 21));
        let flat_from_start = sliding_window(&seconds[6..], 6, &settings()).unwrap();
        assert_eq!(flat_from_start.start_s, 16, "the window before it must be a full window of the run");
        assert_eq!(sliding_window(&seconds[..15], 0, &settings()), None, "two full windows are needed");
    }
}
