//! End-of-period projection, weighted to recent spend, with sanity bounds.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{OutOfRange, checked_mul};
use crate::period::Period;
use crate::settings::ForecastPolicy;

/// Spend over a recent span that ends now (for example yesterday and today so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentSpend {
    pub amount: Decimal,
    pub span: Duration,
}

/// What the forecast says, and whether it may be acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "amount")]
pub enum Forecast {
    /// A plausible end-of-period projection: forecast tiers may act on it.
    Projected(#[serde(with = "rust_decimal::serde::str")] Decimal),
    /// Too little of the period has passed to project from.
    TooEarly,
    /// Larger than the policy allows: reported, never acted on.
    Implausible(#[serde(with = "rust_decimal::serde::str")] Decimal),
}

impl Forecast {
    /// The amount forecast tiers may act on.
    pub fn actionable(&self) -> Option<Decimal> {
        match self {
            Forecast::Projected(v) => Some(*v),
            _ => None,
        }
    }
}

fn seconds(d: Duration) -> Decimal {
    Decimal::from(d.num_seconds())
}

/// Projects spend to the end of `period`.
///
/// `from_source` is a forecast a provider made (AWS Budgets); otherwise the projection is the
/// spend so far plus the remaining time at a rate that blends the period's average rate with
/// the recent rate (`policy.recent_weight`). A daily period projects to the end of the day.
/// Every step is checked: figures too large to project are an error, never a panic.
pub fn project(
    period: &Period,
    now: DateTime<Utc>,
    actual: Decimal,
    recent: Option<RecentSpend>,
    from_source: Option<Decimal>,
    limit: Decimal,
    policy: &ForecastPolicy,
) -> Result<Forecast, OutOfRange> {
    let out = || OutOfRange(format!("forecast of {actual} spent so far"));
    let projected = match from_source {
        Some(f) => f.max(actual),
        None => {
            let elapsed = period.elapsed(now);
            let min_elapsed = checked_mul(
                seconds(period.length()),
                policy.min_elapsed_percent,
                "forecast",
            )? / Decimal::ONE_HUNDRED;
            if elapsed <= Duration::zero() || seconds(elapsed) < min_elapsed {
                return Ok(Forecast::TooEarly);
            }
            let average_rate = actual.checked_div(seconds(elapsed)).ok_or_else(out)?;
            let rate = match recent {
                Some(r) if r.span > Duration::zero() => {
                    let recent_rate = r.amount.checked_div(seconds(r.span)).ok_or_else(out)?;
                    let blended = average_rate
                        .checked_mul(Decimal::ONE - policy.recent_weight)
                        .zip(recent_rate.checked_mul(policy.recent_weight))
                        .and_then(|(a, b)| a.checked_add(b));
                    blended.ok_or_else(out)?
                }
                _ => average_rate,
            };
            rate.checked_mul(seconds(period.remaining(now)))
                .and_then(|rest| actual.checked_add(rest))
                .ok_or_else(out)?
        }
    }
    .round_dp(4);
    let ceiling = checked_mul(limit, policy.max_multiple_of_limit, "forecast ceiling")?;
    Ok(if projected > ceiling {
        Forecast::Implausible(projected)
    } else {
        Forecast::Projected(projected)
    })
}

/// What a runaway stopped at `from` would have spent by `until`: `spent` by then, plus the
/// rate of its last full hour for every hour left (a loop keeps its pace; the report's
/// "without spendguard" line).
pub fn continued(
    spent: Decimal,
    hourly: Decimal,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Decimal, OutOfRange> {
    let hours_left = seconds(until - from).max(Decimal::ZERO) / Decimal::from(3_600);
    checked_mul(hourly, hours_left, "spend without the stop")?
        .checked_add(spent)
        .ok_or_else(|| OutOfRange(format!("spend without the stop after {spent}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::{WindowKind, Zone};
    use rust_decimal_macros::dec;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn policy() -> ForecastPolicy {
        ForecastPolicy::default()
    }

    #[test]
    fn daily_budget_projects_to_end_of_day_not_month() {
        let now = utc("2026-11-22T06:00:00Z");
        let day = Period::containing(WindowKind::Daily, Zone::UTC, now);
        // $3 in 6 hours, steady: $12 by midnight
        let f = project(&day, now, dec!(3), None, None, dec!(10), &policy()).unwrap();
        assert_eq!(f, Forecast::Projected(dec!(12)));
    }

    #[test]
    fn recent_rate_pulls_the_projection() {
        let now = utc("2026-11-16T00:00:00Z"); // 15 days into a 30-day month
        let month = Period::containing(WindowKind::Monthly, Zone::UTC, now);
        // $150 so far ($10/day average), but $40 over the last day
        let recent = RecentSpend {
            amount: dec!(40),
            span: Duration::days(1),
        };
        let f = project(
            &month,
            now,
            dec!(150),
            Some(recent),
            None,
            dec!(1000),
            &policy(),
        )
        .unwrap();
        // blended rate (10 + 40) / 2 = 25/day for 15 more days
        assert_eq!(f, Forecast::Projected(dec!(525)));
    }

    #[test]
    fn too_early_in_the_period_is_not_projected() {
        let now = utc("2026-11-01T02:00:00Z");
        let month = Period::containing(WindowKind::Monthly, Zone::UTC, now);
        // two hours of a month: $50 would extrapolate to $18,000
        assert_eq!(
            project(&month, now, dec!(50), None, None, dec!(1000), &policy()).unwrap(),
            Forecast::TooEarly
        );
    }

    #[test]
    fn absurd_projection_is_flagged_not_acted_on() {
        let now = utc("2026-11-05T00:00:00Z");
        let month = Period::containing(WindowKind::Monthly, Zone::UTC, now);
        let f = project(&month, now, dec!(2000), None, None, dec!(1000), &policy()).unwrap();
        assert!(matches!(f, Forecast::Implausible(_)));
        assert_eq!(f.actionable(), None);
        // a provider's absurd forecast too
        let f = project(
            &month,
            now,
            dec!(1),
            None,
            Some(dec!(5000000000)),
            dec!(1000),
            &policy(),
        )
        .unwrap();
        assert_eq!(f, Forecast::Implausible(dec!(5000000000)));
    }

    #[test]
    fn projections_of_extreme_figures_are_errors_not_panics() {
        let now = utc("2026-11-20T00:00:00Z");
        let month = Period::containing(WindowKind::Monthly, Zone::UTC, now);
        for actual in [Decimal::MAX, Decimal::MAX / dec!(2), dec!(1e27)] {
            let f = project(&month, now, actual, None, None, dec!(1000), &policy());
            assert!(
                f.is_err() || matches!(f, Ok(Forecast::Implausible(_))),
                "{actual}: {f:?}"
            );
        }
        let recent = RecentSpend {
            amount: Decimal::MAX,
            span: Duration::seconds(1),
        };
        assert!(
            project(
                &month,
                now,
                dec!(1),
                Some(recent),
                None,
                dec!(1000),
                &policy()
            )
            .is_err()
        );
        assert!(project(&month, now, dec!(1), None, None, Decimal::MAX, &policy()).is_err());
    }

    #[test]
    fn a_source_forecast_below_actual_is_raised_to_actual() {
        let now = utc("2026-11-20T00:00:00Z");
        let month = Period::containing(WindowKind::Monthly, Zone::UTC, now);
        let f = project(
            &month,
            now,
            dec!(700),
            None,
            Some(dec!(650)),
            dec!(1000),
            &policy(),
        )
        .unwrap();
        assert_eq!(f, Forecast::Projected(dec!(700)));
    }
}
