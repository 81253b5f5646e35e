//! What a budget's windows spent, as sources report it: costs per day, and why a window has
//! no figure.

use crate::budget::Budget;
use crate::evaluate::WindowSpend;
use crate::forecast::RecentSpend;
use crate::money::{Currency, FxRates, Money, checked_add};
use crate::period::{Period, WindowKind, Zone};
use crate::records::{DayReading, SourceDay};
use crate::rolling;
use crate::usage::{HourCounters, start_of_hour};
use chrono::{DateTime, Duration, NaiveDate, Timelike, Utc};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet};

/// Why a window of a budget has no spend to evaluate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// Nothing to evaluate yet, and nothing wrong: a GCP budget before Google's first
    /// notification of the period. Reported as a note.
    #[error("{0}")]
    Pending(String),
    /// The window's figures cannot be evaluated (a currency without a rate, a figure that
    /// cannot be read or summed, a renamed AWS budget): an operator alert and a failed run.
    #[error("{0}")]
    Unevaluable(String),
}

/// Spend per window of one budget (in the budget's currency), or why a window has none.
pub type BudgetSpend = BTreeMap<WindowKind, Result<WindowSpend, WindowError>>;

/// Costs per day (local or UTC calendar day, as the source buckets them), in any currencies.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DailyCosts {
    pub days: BTreeMap<NaiveDate, BTreeMap<Currency, Decimal>>,
    /// Days whose costs could not be read or summed, and why: a window that includes one
    /// cannot be evaluated (and says why); other windows are unaffected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unreadable: BTreeMap<NaiveDate, String>,
}

impl DailyCosts {
    pub fn add(&mut self, day: NaiveDate, money: Money) {
        let total = self
            .days
            .entry(day)
            .or_default()
            .entry(money.currency)
            .or_default();
        match checked_add(*total, money.amount, &format!("costs of {day}")) {
            Ok(sum) => *total = sum,
            Err(e) => {
                self.unreadable.entry(day).or_insert(e.to_string());
            }
        }
    }

    /// Marks `day` as unreadable (a stored figure that cannot be read back).
    pub fn spoil(&mut self, day: NaiveDate, why: String) {
        self.unreadable.entry(day).or_insert(why);
    }

    fn total(
        &self,
        days: impl Iterator<Item = NaiveDate>,
        to: Currency,
        rates: &FxRates,
    ) -> Result<Decimal, String> {
        let mut total = Decimal::ZERO;
        for day in days {
            if let Some(why) = self.unreadable.get(&day) {
                return Err(format!("spend of {day} cannot be read: {why}"));
            }
            for (currency, amount) in self.days.get(&day).into_iter().flatten() {
                let converted = rates
                    .convert(Money::new(*amount, *currency), to)
                    .map_err(|e| e.to_string())?;
                total = checked_add(total, converted.amount, "window total")
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(total)
    }

    /// The spend of `budget`'s `kind` window at `now`: the days of the period so far, and for
    /// weekly and monthly windows the recent rate (yesterday and today so far).
    pub fn window_spend(
        &self,
        budget: &Budget,
        kind: WindowKind,
        now: DateTime<Utc>,
        rates: &FxRates,
    ) -> Result<WindowSpend, String> {
        let period = Period::containing(kind, budget.zone, now);
        let today = budget.zone.date_of(now);
        let yesterday = today.pred_opt().unwrap_or(today);
        let actual = self.total(
            period.days().filter(|d| *d <= today),
            budget.currency,
            rates,
        )?;
        let recent = match kind {
            WindowKind::Daily => None,
            WindowKind::Hourly | WindowKind::Rolling { .. } => {
                return Err(format!(
                    "{kind} windows are counted by the minute: day buckets cannot answer them"
                ));
            }
            WindowKind::Weekly | WindowKind::Monthly => {
                let amount = self.total([yesterday, today].into_iter(), budget.currency, rates)?;
                Some(RecentSpend {
                    amount,
                    span: now - budget.zone.start_of_day(yesterday),
                })
            }
        };
        // yesterday too when the period began today: its late costs still reach its summary.
        // A day that cannot be read is left out (the window above says why when it counts).
        let days = yesterday
            .min(period.first_day)
            .iter_days()
            .take_while(|d| *d <= today)
            .filter_map(|d| {
                Some((
                    d,
                    self.total(std::iter::once(d), budget.currency, rates)
                        .ok()?,
                ))
            })
            .collect();
        Ok(WindowSpend {
            actual,
            recent,
            days,
            ..WindowSpend::actual(actual)
        })
    }

    /// The spend of every window of `budget`.
    pub fn budget_spend(
        &self,
        budget: &Budget,
        now: DateTime<Utc>,
        rates: &FxRates,
    ) -> BudgetSpend {
        budget
            .windows
            .iter()
            .map(|w| {
                let spend = self
                    .window_spend(budget, w.kind, now, rates)
                    .map_err(WindowError::Unevaluable);
                (w.kind, spend)
            })
            .collect()
    }
}

/// What budget-check records of a provider-sourced budget for the nightly summaries, from
/// its longest evaluated window: the source's cost of yesterday and today where it reports
/// costs per day (late costs of yesterday still land on yesterday), otherwise the window's
/// running total as seen today (ADR 029).
pub fn source_days(
    budget: &Budget,
    windows: &[(WindowKind, &WindowSpend)],
    now: DateTime<Utc>,
) -> Vec<SourceDay> {
    let Some((kind, spend)) = windows.iter().max_by_key(|(kind, _)| *kind) else {
        return Vec::new();
    };
    let today = budget.zone.date_of(now);
    let yesterday = today.pred_opt().unwrap_or(today);
    let day = |date: NaiveDate, reading: DayReading| SourceDay {
        budget_id: budget.id.clone(),
        source: budget.source.kind().to_string(),
        date,
        reading,
        observed_at: now,
    };
    if spend.days.is_empty() {
        let period = Period::containing(*kind, budget.zone, now);
        return vec![day(
            today,
            DayReading::RunningTotal {
                period_key: period.key(),
                total: Money::new(spend.actual, budget.currency),
            },
        )];
    }
    spend
        .days
        .range(yesterday..=today)
        .map(|(date, amount)| {
            day(
                *date,
                DayReading::Day {
                    spend: Money::new(*amount, budget.currency),
                },
            )
        })
        .collect()
}

/// Each day's spend from one budget's readings: a day's own cost as reported; from running
/// totals, the total last seen that day less the one last seen on the period's previous
/// reading (the first reading of a period is all of it). Differences telescope, so the days
/// of a period add up to its last total however the readings fall; which day a cost lands on
/// is when spendguard saw it, not when it was spent. Needs every reading of the periods
/// involved (read from the period's start).
pub fn spend_per_day(readings: &[SourceDay]) -> BTreeMap<NaiveDate, Money> {
    let mut sorted: Vec<&SourceDay> = readings.iter().collect();
    sorted.sort_by_key(|r| r.date);
    let mut previous: Option<(&str, Money)> = None;
    let mut out = BTreeMap::new();
    for r in sorted {
        let spent = match &r.reading {
            DayReading::Day { spend } => *spend,
            DayReading::RunningTotal { period_key, total } => {
                let spent = match previous {
                    Some((key, before))
                        if key == period_key && before.currency == total.currency =>
                    {
                        // totals are bounded evaluated figures: the difference cannot overflow
                        Money::new(total.amount.saturating_sub(before.amount), total.currency)
                    }
                    _ => *total,
                };
                previous = Some((period_key, *total));
                spent
            }
        };
        out.insert(r.date, spent);
    }
    out
}

/// Cost per minute of a budget's scope, from its hour counters (UTC): what hourly and rolling
/// windows are evaluated from (ADR 027).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MinuteCosts {
    /// By the start of the hour.
    pub hours: BTreeMap<DateTime<Utc>, HourCounters>,
}

impl MinuteCosts {
    /// The starts of the hours whose counters `budget`'s sub-daily windows read at `now`.
    pub fn hours_needed(budget: &Budget, now: DateTime<Utc>) -> BTreeSet<DateTime<Utc>> {
        let mut hours = BTreeSet::new();
        for w in &budget.windows {
            let first = match w.kind {
                WindowKind::Hourly => Period::containing(w.kind, Zone::UTC, now).start,
                WindowKind::Rolling { minutes } => {
                    Period::containing(w.kind, Zone::UTC, now).end
                        - Duration::minutes(rolling::lookback(minutes) as i64)
                }
                _ => continue,
            };
            let mut hour = start_of_hour(first);
            while hour <= now {
                hours.insert(hour);
                hour += Duration::hours(1);
            }
        }
        hours
    }

    fn minute_cost(
        &self,
        minute: DateTime<Utc>,
        to: Currency,
        rates: &FxRates,
    ) -> Result<Decimal, String> {
        let hour = start_of_hour(minute);
        let Some(counters) = self.hours.get(&hour) else {
            return Ok(Decimal::ZERO);
        };
        if let Some(why) = &counters.unreadable {
            return Err(format!(
                "the hour from {} cannot be read: {why}",
                hour.format("%Y-%m-%d %H:%M UTC")
            ));
        }
        counters.cost_in_minute(minute.minute(), to, rates)
    }

    /// The spend of `budget`'s hourly or rolling window at `now`.
    pub fn window_spend(
        &self,
        budget: &Budget,
        kind: WindowKind,
        now: DateTime<Utc>,
        rates: &FxRates,
    ) -> Result<WindowSpend, String> {
        let period = Period::containing(kind, Zone::UTC, now);
        let (first, count) = match kind {
            WindowKind::Hourly => (period.start, 60),
            WindowKind::Rolling { minutes } => {
                let count = rolling::lookback(minutes);
                (period.end - Duration::minutes(count as i64), count)
            }
            _ => return Err(format!("{kind} windows are counted by the day")),
        };
        let by_minute = (0..count)
            .map(|i| self.minute_cost(first + Duration::minutes(i as i64), budget.currency, rates))
            .collect::<Result<Vec<_>, _>>()?;
        let in_window = match kind {
            WindowKind::Rolling { minutes } => &by_minute[count - usize::from(minutes)..],
            _ => &by_minute[..],
        };
        let mut actual = Decimal::ZERO;
        for cost in in_window {
            actual = checked_add(actual, *cost, "window total").map_err(|e| e.to_string())?;
        }
        Ok(WindowSpend {
            by_minute: match kind {
                WindowKind::Rolling { .. } => by_minute,
                _ => Vec::new(),
            },
            ..WindowSpend::actual(actual)
        })
    }
}

/// The earliest UTC day any of `budgets` needs (start of its longest period, and yesterday).
pub fn earliest_day_needed(budgets: &[&Budget], now: DateTime<Utc>) -> NaiveDate {
    budgets
        .iter()
        .flat_map(|b| {
            b.windows
                .iter()
                .map(move |w| Period::containing(w.kind, b.zone, now))
        })
        .map(|p| p.start.date_naive())
        .chain(std::iter::once((now - Duration::days(1)).date_naive()))
        .min()
        .unwrap_or_else(|| now.date_naive())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{SourceSpec, Tier, Window};
    use crate::period::Zone;
    use crate::scope::Scope;
    use rust_decimal_macros::dec;

    fn budget(kind: WindowKind, currency: Currency) -> Budget {
        Budget {
            id: "b".into(),
            description: None,
            scope: Scope::parse("openai").unwrap(),
            currency,
            zone: Zone::UTC,
            windows: vec![Window {
                provider_cap: false,
                kind,
                limit: dec!(100),
                tiers: Vec::<Tier>::new(),
            }],
            source: SourceSpec::Usage,
            routing: BTreeMap::new(),
        }
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn monthly_window_sums_the_month_so_far_and_the_recent_rate() {
        let mut costs = DailyCosts::default();
        costs.add(day("2026-10-31"), Money::new(dec!(100), Currency::USD)); // previous month
        costs.add(day("2026-11-01"), Money::new(dec!(1), Currency::USD));
        costs.add(day("2026-11-21"), Money::new(dec!(2), Currency::USD));
        costs.add(day("2026-11-22"), Money::new(dec!(3), Currency::USD));
        let now = DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let s = costs
            .window_spend(
                &budget(WindowKind::Monthly, Currency::USD),
                WindowKind::Monthly,
                now,
                &FxRates::default(),
            )
            .unwrap();
        assert_eq!(s.actual, dec!(6));
        let recent = s.recent.unwrap();
        assert_eq!(recent.amount, dec!(5));
        assert_eq!(recent.span, Duration::hours(36));
    }

    #[test]
    fn a_sum_that_overflows_spoils_its_day_and_the_windows_that_include_it() {
        let mut costs = DailyCosts::default();
        costs.add(day("2026-11-21"), Money::new(Decimal::MAX, Currency::USD));
        costs.add(day("2026-11-21"), Money::new(Decimal::MAX, Currency::USD));
        costs.add(day("2026-11-22"), Money::new(dec!(3), Currency::USD));
        let now = DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let daily = budget(WindowKind::Daily, Currency::USD);
        assert_eq!(
            costs
                .window_spend(&daily, WindowKind::Daily, now, &FxRates::default())
                .unwrap()
                .actual,
            dec!(3),
            "today is readable"
        );
        let monthly = budget(WindowKind::Monthly, Currency::USD);
        let err = costs
            .window_spend(&monthly, WindowKind::Monthly, now, &FxRates::default())
            .unwrap_err();
        assert!(err.contains("2026-11-21"), "{err}");
        // two readable maxima of different days overflow the window's total: refused too
        let mut two = DailyCosts::default();
        two.add(day("2026-11-20"), Money::new(Decimal::MAX, Currency::USD));
        two.add(day("2026-11-21"), Money::new(Decimal::MAX, Currency::USD));
        let err = two
            .window_spend(&monthly, WindowKind::Monthly, now, &FxRates::default())
            .unwrap_err();
        assert!(err.contains("out of range"), "{err}");
    }

    fn running(date: &str, period_key: &str, total: Decimal) -> SourceDay {
        SourceDay {
            budget_id: "b".into(),
            source: "aws_budgets".into(),
            date: day(date),
            reading: DayReading::RunningTotal {
                period_key: period_key.into(),
                total: Money::new(total, Currency::USD),
            },
            observed_at: Utc::now(),
        }
    }

    #[test]
    fn running_totals_become_days_that_add_up_to_the_period_total() {
        let readings = vec![
            running("2026-12-01", "M#2026-12", dec!(5)),
            running("2026-11-02", "M#2026-11", dec!(25)),
            running("2026-11-01", "M#2026-11", dec!(10)),
            // no reading on the 3rd (the source was down): the 4th carries both days
            running("2026-11-04", "M#2026-11", dec!(40)),
        ];
        let days = spend_per_day(&readings);
        let amounts: Vec<(String, Decimal)> = days
            .iter()
            .map(|(d, m)| (d.to_string(), m.amount))
            .collect();
        assert_eq!(
            amounts,
            [
                ("2026-11-01".to_string(), dec!(10)),
                ("2026-11-02".to_string(), dec!(15)),
                ("2026-11-04".to_string(), dec!(15)),
                ("2026-12-01".to_string(), dec!(5)),
            ],
            "a new period starts from its own first total"
        );
    }

    #[test]
    fn a_daily_source_records_yesterday_and_today_and_a_running_total_today_only() {
        let mut costs = DailyCosts::default();
        costs.add(day("2026-11-20"), Money::new(dec!(1), Currency::USD));
        costs.add(day("2026-11-21"), Money::new(dec!(2), Currency::USD));
        let now = DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut b = budget(WindowKind::Monthly, Currency::USD);
        b.source = SourceSpec::Openai { project_id: None };
        let spend = costs
            .window_spend(&b, WindowKind::Monthly, now, &FxRates::default())
            .unwrap();
        let recorded = source_days(&b, &[(WindowKind::Monthly, &spend)], now);
        let seen: Vec<(String, DayReading)> = recorded
            .iter()
            .map(|r| (r.date.to_string(), r.reading.clone()))
            .collect();
        let usd = |a| DayReading::Day {
            spend: Money::new(a, Currency::USD),
        };
        assert_eq!(
            seen,
            [
                ("2026-11-21".to_string(), usd(dec!(2))),
                ("2026-11-22".to_string(), usd(dec!(0))),
            ],
            "a day without costs is a reported zero"
        );
        assert!(recorded.iter().all(|r| r.source == "openai"));

        let total = WindowSpend::actual(dec!(42));
        let recorded = source_days(&b, &[(WindowKind::Monthly, &total)], now);
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].date, day("2026-11-22"));
        assert_eq!(
            recorded[0].reading,
            DayReading::RunningTotal {
                period_key: "M#2026-11".into(),
                total: Money::new(dec!(42), Currency::USD)
            }
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// However the readings of a period fall (days skipped, totals going down with a
        /// credit), its days add up to the last total seen.
        #[test]
        fn a_periods_days_add_up_to_its_last_total(
            totals in proptest::collection::vec((0u32..30, 0i64..1_000_000), 1..30)
        ) {
            let readings: Vec<SourceDay> = totals
                .iter()
                .map(|(offset, cents)| {
                    let date = day("2026-11-01") + Duration::days(i64::from(*offset));
                    running(&date.to_string(), "M#2026-11", Decimal::new(*cents, 2))
                })
                // one reading a day: the last one of a day replaces the earlier ones
                .rev()
                .fold(Vec::<SourceDay>::new(), |mut kept, r| {
                    if !kept.iter().any(|k| k.date == r.date) {
                        kept.push(r);
                    }
                    kept
                });
            let last = readings.iter().max_by_key(|r| r.date).unwrap();
            let DayReading::RunningTotal { total, .. } = &last.reading else { unreachable!() };
            let sum: Decimal = spend_per_day(&readings).values().map(|m| m.amount).sum();
            proptest::prop_assert_eq!(sum, total.amount);
        }
    }

    #[test]
    fn other_currencies_need_a_configured_rate() {
        let eur = Currency::parse("EUR").unwrap();
        let mut costs = DailyCosts::default();
        costs.add(day("2026-11-22"), Money::new(dec!(10), Currency::USD));
        let now = DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let b = budget(WindowKind::Daily, eur);
        let err = costs
            .window_spend(&b, WindowKind::Daily, now, &FxRates::default())
            .unwrap_err();
        assert!(err.contains("no exchange rate from USD to EUR"), "{err}");
        let mut rates = FxRates::default();
        rates.insert(eur, Currency::USD, dec!(1.25));
        assert_eq!(
            costs
                .window_spend(&b, WindowKind::Daily, now, &rates)
                .unwrap()
                .actual,
            dec!(8)
        );
    }
}
