//! Evaluation: (budget, spend, now) -> which tiers are reached. Pure: no I/O, no clock.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::budget::{Basis, Budget, Tier};
use crate::rolling::{self, Reached};

use crate::forecast::{Forecast, RecentSpend, project};
use crate::money::{OutOfRange, checked_mul};
use crate::period::{Period, WindowKind};
use crate::settings::ForecastPolicy;

/// Spend observed for one window of a budget, in the budget's currency.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WindowSpend {
    pub actual: Decimal,
    pub recent: Option<RecentSpend>,
    /// A forecast the source made itself (AWS Budgets); otherwise one is projected.
    pub source_forecast: Option<Decimal>,
    /// The cost of each day from the period's first (or yesterday, if earlier) through today,
    /// where the source reports costs per day; empty where it reports a running total only.
    /// What the nightly summaries of provider-sourced budgets are made of.
    pub days: BTreeMap<NaiveDate, Decimal>,
    /// Rolling windows: spend per minute over [`rolling::lookback`], oldest first, ending with
    /// the minute of now: which crossing a tier belongs to is read from it.
    pub by_minute: Vec<Decimal>,
}

impl WindowSpend {
    pub fn actual(amount: Decimal) -> Self {
        WindowSpend {
            actual: amount,
            ..WindowSpend::default()
        }
    }
}

/// A tier whose threshold the spend (or a plausible forecast) has reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crossing {
    pub tier: Tier,
    /// The threshold in the budget's currency.
    pub threshold: Decimal,
    /// The value that reached it: actual spend, or the forecast for forecast tiers.
    pub value: Decimal,
    /// The period the crossing is claimed in (once): the evaluation's for calendar and hourly
    /// windows, for rolling windows the window that ended at the minute of the crossing.
    /// `None`: part of a rolling crossing claimed before ([`rolling::Reached::Before`]).
    pub claimed_in: Option<Period>,
}

/// The state of one window of a budget at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowEvaluation {
    pub kind: WindowKind,
    pub period: Period,
    pub limit: Decimal,
    pub actual: Decimal,
    /// Actual spend as a percentage of the limit, one decimal place.
    pub percent: Decimal,
    pub forecast: Forecast,
    pub crossings: Vec<Crossing>,
}

impl WindowEvaluation {
    /// The most severe tier reached, if any.
    pub fn highest(&self) -> Option<&Crossing> {
        self.crossings.iter().max_by(|a, b| {
            a.tier
                .severity
                .cmp(&b.tier.severity)
                .then(a.threshold.cmp(&b.threshold))
        })
    }
}

/// Why a window of a budget could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvaluationError {
    #[error("budget has no {0} window")]
    NoWindow(WindowKind),
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
}

/// `amount` as a percentage of `limit`, with one decimal place (`79.0`).
pub fn percent_of(amount: Decimal, limit: Decimal) -> Result<Decimal, OutOfRange> {
    let mut p = checked_mul(amount, Decimal::ONE_HUNDRED, "percent of the limit")?
        .checked_div(limit)
        .ok_or_else(|| OutOfRange(format!("{amount} as a percent of {limit}")))?
        .round_dp_with_strategy(1, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    p.rescale(1);
    Ok(p)
}

/// Evaluates one window. A tier is reached when the spend is at or above its threshold;
/// a forecast tier also when a plausible forecast is (actual spend is a floor of any forecast).
pub fn evaluate_window(
    budget: &Budget,
    kind: WindowKind,
    spend: &WindowSpend,
    now: DateTime<Utc>,
    policy: &ForecastPolicy,
) -> Result<WindowEvaluation, EvaluationError> {
    let window = budget.window(kind).ok_or(EvaluationError::NoWindow(kind))?;
    let period = Period::containing(kind, budget.zone, now);
    let forecast = project(
        &period,
        now,
        spend.actual,
        spend.recent,
        spend.source_forecast,
        window.limit,
        policy,
    )?;
    let percent = percent_of(spend.actual, window.limit)?;
    let mut crossings = Vec::new();
    for tier in &window.tiers {
        let threshold = tier.threshold_amount(window.limit);
        let value = match tier.basis {
            Basis::Actual => spend.actual,
            Basis::Forecast => match forecast.actionable() {
                Some(f) if f >= threshold => f,
                _ => spend.actual,
            },
        };
        if value < threshold {
            // a rolling tier that rose within the window's length is held until it re-arms:
            // its alert does not recover during a dip it would not alert again after
            if let WindowKind::Rolling { minutes } = kind
                && rolling::rose_within(&spend.by_minute, minutes, threshold)?
            {
                crossings.push(Crossing {
                    tier: tier.clone(),
                    threshold,
                    value,
                    claimed_in: None,
                });
            }
            continue;
        }
        let claimed_in = match kind {
            WindowKind::Rolling { minutes } => {
                match rolling::reached(&spend.by_minute, minutes, threshold)? {
                    Some(Reached::Crossed(i)) => {
                        // bucket i ends the crossing's window; the last bucket is now's minute
                        let back = spend.by_minute.len() - 1 - i;
                        let end = period.end - chrono::Duration::minutes(back as i64);
                        Some(Period::rolling_from(
                            minutes,
                            end - chrono::Duration::minutes(minutes.into()),
                        ))
                    }
                    Some(Reached::Before) | None => None,
                }
            }
            _ => Some(period.clone()),
        };
        crossings.push(Crossing {
            tier: tier.clone(),
            threshold,
            value,
            claimed_in,
        });
    }
    Ok(WindowEvaluation {
        kind,
        limit: window.limit,
        actual: spend.actual,
        percent,
        forecast,
        crossings,
        period,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{Action, Severity, SourceSpec, Threshold, Window};
    use crate::money::Currency;
    use crate::period::Zone;
    use crate::scope::Scope;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;
    use std::collections::BTreeMap;

    fn tier(name: &str, percent: Decimal, basis: Basis) -> Tier {
        Tier {
            name: name.to_string(),
            threshold: Threshold::Percent(percent),
            basis,
            severity: Severity::for_tier_name(name).unwrap_or(Severity::Warning),
            actions: vec![Action::Notify],
        }
    }

    fn budget(limit: Decimal, tiers: Vec<Tier>) -> Budget {
        Budget {
            id: "b".into(),
            description: None,
            scope: Scope::parse("openai/prod").unwrap(),
            currency: Currency::USD,
            zone: Zone::UTC,
            windows: vec![Window {
                provider_cap: false,
                kind: WindowKind::Monthly,
                limit,
                tiers,
            }],
            source: SourceSpec::Usage,
            routing: BTreeMap::new(),
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn names(e: &WindowEvaluation) -> Vec<&str> {
        e.crossings.iter().map(|c| c.tier.name.as_str()).collect()
    }

    fn standard() -> Budget {
        budget(
            dec!(2000),
            vec![
                tier("warning", dec!(50), Basis::Actual),
                tier("critical", dec!(75), Basis::Actual),
                tier("emergency", dec!(90), Basis::Actual),
            ],
        )
    }

    #[test]
    fn exactly_at_threshold_crosses_and_just_below_does_not() {
        let now = utc("2026-11-20T12:00:00Z");
        let b = standard();
        let at = evaluate_window(
            &b,
            WindowKind::Monthly,
            &WindowSpend::actual(dec!(1000)),
            now,
            &ForecastPolicy::default(),
        )
        .unwrap();
        assert_eq!(names(&at), ["warning"]);
        let below = evaluate_window(
            &b,
            WindowKind::Monthly,
            &WindowSpend::actual(dec!(999.99)),
            now,
            &ForecastPolicy::default(),
        )
        .unwrap();
        assert!(below.crossings.is_empty());
        assert_eq!(below.percent, dec!(50.0));
    }

    #[test]
    fn highest_is_the_most_severe_tier() {
        let now = utc("2026-11-20T12:00:00Z");
        let e = evaluate_window(
            &standard(),
            WindowKind::Monthly,
            &WindowSpend::actual(dec!(1900)),
            now,
            &ForecastPolicy::default(),
        )
        .unwrap();
        assert_eq!(names(&e), ["warning", "critical", "emergency"]);
        assert_eq!(e.highest().unwrap().tier.name, "emergency");
        assert_eq!(e.percent, dec!(95.0));
    }

    #[test]
    fn forecast_tier_fires_on_plausible_forecast_only() {
        let b = budget(
            dec!(1000),
            vec![tier("overrun", dec!(100), Basis::Forecast)],
        );
        let now = utc("2026-11-16T00:00:00Z"); // half way through November
        // $600 at half time projects $1200: reached
        let e = evaluate_window(
            &b,
            WindowKind::Monthly,
            &WindowSpend::actual(dec!(600)),
            now,
            &ForecastPolicy::default(),
        )
        .unwrap();
        assert_eq!(names(&e), ["overrun"]);
        assert_eq!(e.crossings[0].value, dec!(1200));
        // an absurd provider forecast does not fire it
        let absurd = WindowSpend {
            source_forecast: Some(dec!(1e12)),
            ..WindowSpend::actual(dec!(10))
        };
        let e = evaluate_window(
            &b,
            WindowKind::Monthly,
            &absurd,
            now,
            &ForecastPolicy::default(),
        )
        .unwrap();
        assert!(matches!(e.forecast, Forecast::Implausible(_)));
        assert!(e.crossings.is_empty());
    }

    #[test]
    fn forecast_tier_is_reached_once_actual_spend_reaches_it() {
        let b = budget(
            dec!(1000),
            vec![tier("overrun", dec!(100), Basis::Forecast)],
        );
        // too early to forecast, but the money is already spent
        let now = utc("2026-11-01T01:00:00Z");
        let e = evaluate_window(
            &b,
            WindowKind::Monthly,
            &WindowSpend::actual(dec!(1000)),
            now,
            &ForecastPolicy::default(),
        )
        .unwrap();
        assert_eq!(e.forecast, Forecast::TooEarly);
        assert_eq!(names(&e), ["overrun"]);
    }

    #[test]
    fn a_new_period_starts_from_zero_crossings() {
        let b = standard();
        let last_instant = utc("2026-11-30T23:59:59Z");
        let e = evaluate_window(
            &b,
            WindowKind::Monthly,
            &WindowSpend::actual(dec!(1500)),
            last_instant,
            &ForecastPolicy::default(),
        )
        .unwrap();
        assert_eq!(e.period.key(), "M#2026-11");
        let next = evaluate_window(
            &b,
            WindowKind::Monthly,
            &WindowSpend::actual(dec!(0)),
            utc("2026-12-01T00:00:00Z"),
            &ForecastPolicy::default(),
        )
        .unwrap();
        assert_eq!(next.period.key(), "M#2026-12");
        assert!(next.crossings.is_empty());
    }

    #[test]
    fn a_rolling_crossing_is_claimed_in_the_window_that_ended_at_its_minute() {
        let minutes = 60u16;
        let kind = WindowKind::Rolling { minutes };
        let mut b = standard();
        b.windows[0].kind = kind;
        b.windows[0].limit = dec!(50);
        let burst_at = utc("2026-11-20T03:17:00Z");
        // 60 spent in the minute of 03:17; evaluated then and 20 minutes later
        let spend_at = |now: DateTime<Utc>| {
            let lookback = crate::rolling::lookback(minutes);
            let first = Period::containing(kind, Zone::UTC, now).end
                - chrono::Duration::minutes(lookback as i64);
            let by_minute: Vec<Decimal> = (0..lookback)
                .map(|i| first + chrono::Duration::minutes(i as i64))
                .map(|m| {
                    if m == burst_at {
                        dec!(60)
                    } else {
                        Decimal::ZERO
                    }
                })
                .collect();
            WindowSpend {
                by_minute: by_minute.clone(),
                ..WindowSpend::actual(by_minute[lookback - usize::from(minutes)..].iter().sum())
            }
        };
        let policy = ForecastPolicy::default();
        let claims = |now| {
            let e = evaluate_window(&b, kind, &spend_at(now), now, &policy).unwrap();
            e.crossings
                .iter()
                .map(|c| c.claimed_in.as_ref().map(Period::key))
                .collect::<Vec<_>>()
        };
        let at_the_burst = claims(utc("2026-11-20T03:17:30Z"));
        let window = Some("R60#2026-11-20T02:18".to_string());
        assert_eq!(
            at_the_burst,
            [window.clone(), window.clone(), window.clone()]
        );
        assert_eq!(claims(utc("2026-11-20T03:37:00Z")), at_the_burst);
        // at 04:17 the burst has left the window: nothing is reached
        assert!(claims(utc("2026-11-20T04:17:00Z")).is_empty());
    }

    fn arb_budget() -> impl Strategy<Value = Budget> {
        (
            1u32..100_000,
            proptest::collection::vec((1u32..300, any::<bool>()), 1..6),
        )
            .prop_map(|(limit, tiers)| {
                let tiers = tiers
                    .into_iter()
                    .enumerate()
                    .map(|(i, (p, forecast))| {
                        tier(
                            &format!("t{i}"),
                            Decimal::from(p),
                            if forecast {
                                Basis::Forecast
                            } else {
                                Basis::Actual
                            },
                        )
                    })
                    .collect();
                budget(Decimal::from(limit), tiers)
            })
    }

    proptest! {
        /// Extreme spend (up to `Decimal::MAX`, any scale) never panics: the window is
        /// evaluated or refused as out of range.
        #[test]
        fn extreme_spend_is_evaluated_or_refused(
            b in arb_budget(),
            mantissa in any::<i64>().prop_map(|m| m.unsigned_abs() as i64),
            scale in 0u32..=28,
            huge in prop_oneof![Just(None), Just(Some(Decimal::MAX)), Just(Some(Decimal::MAX / Decimal::TWO))],
            seconds_in in 0i64..(30 * 86_400),
        ) {
            let now = utc("2026-11-01T00:00:00Z") + chrono::Duration::seconds(seconds_in);
            let actual = huge.unwrap_or(Decimal::new(mantissa, scale));
            let spend = WindowSpend { actual, recent: Some(RecentSpend { amount: actual, span: chrono::Duration::hours(1) }), ..WindowSpend::default() };
            match evaluate_window(&b, WindowKind::Monthly, &spend, now, &ForecastPolicy::default()) {
                Ok(e) => prop_assert_eq!(e.actual, actual),
                Err(EvaluationError::OutOfRange(e)) => prop_assert!(!e.to_string().is_empty()),
                Err(other) => prop_assert!(false, "unexpected {}", other),
            }
        }

        /// More actual spend never reaches fewer tiers, while the forecast stays plausible;
        /// and actual-basis tiers are monotone always.
        #[test]
        fn more_spend_never_yields_fewer_crossings(
            b in arb_budget(),
            cents_a in 0u64..50_000_000,
            extra in 0u64..50_000_000,
            seconds_in in 0i64..(30 * 86_400),
            recent_cents in 0u64..10_000_000,
        ) {
            let now = utc("2026-11-01T00:00:00Z") + chrono::Duration::seconds(seconds_in);
            let recent = Some(RecentSpend { amount: Decimal::new(recent_cents as i64, 2), span: chrono::Duration::days(1) });
            let lower = WindowSpend { actual: Decimal::new(cents_a as i64, 2), recent, ..WindowSpend::default() };
            let higher = WindowSpend { actual: Decimal::new((cents_a + extra) as i64, 2), ..lower.clone() };
            let policy = ForecastPolicy::default();
            let lo = evaluate_window(&b, WindowKind::Monthly, &lower, now, &policy).unwrap();
            let hi = evaluate_window(&b, WindowKind::Monthly, &higher, now, &policy).unwrap();
            let hi_names: Vec<&str> = names(&hi);
            for c in &lo.crossings {
                let must_hold = c.tier.basis == Basis::Actual || !matches!(hi.forecast, Forecast::Implausible(_));
                if must_hold {
                    prop_assert!(hi_names.contains(&c.tier.name.as_str()), "{} lost at higher spend", c.tier.name);
                }
            }
        }

        /// An implausible forecast never reaches a forecast tier that actual spend has not.
        #[test]
        fn implausible_forecasts_never_act(b in arb_budget(), cents in 0u64..50_000_000, forecast in 0u64..u32::MAX as u64) {
            let now = utc("2026-11-10T00:00:00Z");
            let spend = WindowSpend { actual: Decimal::new(cents as i64, 2), source_forecast: Some(Decimal::from(forecast)), ..WindowSpend::default() };
            let e = evaluate_window(&b, WindowKind::Monthly, &spend, now, &ForecastPolicy::default()).unwrap();
            if matches!(e.forecast, Forecast::Implausible(_)) {
                for c in &e.crossings {
                    prop_assert!(spend.actual >= c.threshold);
                }
            }
        }
    }
}
