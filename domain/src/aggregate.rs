//! Nightly aggregation (flow 6), the pure part: a day's counters become summaries per scope
//! and dimension, month-to-date and a bounded end-of-month forecast; spikes are found against
//! a robust, weekday-aware trailing baseline; the day's report is assembled. Sums saturate:
//! stored counters are bounded (`usage::MAX_COUNTER_VALUE`), so they never reach the bound,
//! and an arithmetic panic would abort the whole night.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::alert::{ALERT_SCHEMA_VERSION, AlertDetails, AlertEvent, AlertKind};
use crate::budget::{Action, Basis, Severity};
use crate::daily::{DailyReport, Spike};
use crate::evaluate::percent_of;
use crate::forecast::{Forecast, RecentSpend, project};
use crate::money::{Currency, Money};
use crate::period::{Period, WindowKind, YearMonth, Zone};
use crate::scope::Scope;
use crate::settings::AnomalyPolicy;
use crate::settings::{ForecastPolicy, PolicySet};
use crate::usage::{Metric, MonthCounters, Tally};

/// A tally as stored in a summary (metric name -> amount).
pub fn tally_doc(t: &Tally) -> BTreeMap<String, String> {
    t.0.iter()
        .map(|(m, v)| (m.name(), v.normalize().to_string()))
        .collect()
}

/// The source of the app-reported usage series (spendguard's own counters).
pub const USAGE_SOURCE: &str = "usage";

fn usage_source() -> String {
    USAGE_SOURCE.into()
}

/// One scope's day, from one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailySummary {
    pub scope: Scope,
    pub zone: Zone,
    pub date: NaiveDate,
    /// Where the figures come from: `usage` (the app-reported counters) or the source kind of
    /// a provider-sourced budget on the scope (`openai`, `aws_budgets`, ...). A scope with both
    /// has one summary of each, never their sum (they may count the same calls).
    #[serde(default = "usage_source")]
    pub source: String,
    /// Metric name -> amount (`cost.USD`, `requests`, `tokens_in`, ...).
    pub day: BTreeMap<String, String>,
    /// Cost per currency from the first of the month through `date`.
    pub month_to_date: BTreeMap<Currency, String>,
    /// End-of-month forecast of the main currency's cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
    /// Spikes found that day (`cost`, `requests`, `tokens`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<Spike>,
}

impl DailySummary {
    pub fn is_usage(&self) -> bool {
        self.source == USAGE_SOURCE
    }

    /// What tells a scope's summaries of one date apart: the zone, and the source unless it
    /// is `usage` (so usage summaries keep the keys they always had).
    pub fn series_key(&self) -> String {
        if self.is_usage() {
            self.zone.to_string()
        } else {
            format!("{}#{}", self.zone, self.source)
        }
    }

    /// The currency most of the month's cost is in (USD when nothing was spent).
    pub fn main_currency(&self) -> Currency {
        self.month_to_date
            .iter()
            .max_by_key(|(_, v)| v.parse::<Decimal>().unwrap_or_default())
            .map(|(c, _)| *c)
            .unwrap_or(Currency::USD)
    }
}

/// Day buckets of several months of one counter, as a daily series.
pub struct Series<'a> {
    pub months: &'a BTreeMap<YearMonth, MonthCounters>,
}

impl Series<'_> {
    pub fn day(&self, date: NaiveDate) -> Option<&Tally> {
        self.months.get(&YearMonth::of(date))?.days.get(&date.day())
    }

    pub fn value(&self, date: NaiveDate, metric: Metric) -> Decimal {
        self.day(date).map(|t| t.get(metric)).unwrap_or_default()
    }

    /// Tokens in, out and cached together.
    pub fn tokens(&self, date: NaiveDate) -> Decimal {
        [Metric::TokensIn, Metric::TokensOut, Metric::TokensCached]
            .iter()
            .map(|m| self.value(date, *m))
            .fold(Decimal::ZERO, Decimal::saturating_add)
    }

    /// The first day with any activity among `days`.
    pub fn first_active(&self, days: impl Iterator<Item = NaiveDate>) -> Option<NaiveDate> {
        days.into_iter()
            .find(|d| self.day(*d).is_some_and(|t| !t.0.is_empty()))
    }
}

/// A provider's days (`spend::spend_per_day`) as month counters of cost, so that they are
/// summarised, forecast and checked for spikes like the usage counters. A day whose figure
/// cannot be counted is named.
pub fn day_series(
    days: &BTreeMap<NaiveDate, Money>,
) -> Result<BTreeMap<YearMonth, MonthCounters>, String> {
    let mut months: BTreeMap<YearMonth, MonthCounters> = BTreeMap::new();
    for (date, spend) in days {
        months
            .entry(YearMonth::of(*date))
            .or_default()
            .days
            .entry(date.day())
            .or_default()
            .add(Metric::Cost(spend.currency), spend.amount)
            .map_err(|e| format!("{date}: {e}"))?;
    }
    Ok(months)
}

fn median(values: &mut [Decimal]) -> Decimal {
    if values.is_empty() {
        return Decimal::ZERO;
    }
    values.sort();
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / Decimal::TWO
    }
}

/// The expected value of `day` from the `policy.baseline_days` before it: the larger of the
/// median of all those days and the median of the same weekday (so a busy Monday is compared
/// with Mondays). `None` when the scope has less history than `min_history_days`.
pub fn expected(
    history: &[(NaiveDate, Decimal)],
    day: NaiveDate,
    first_active: Option<NaiveDate>,
    policy: &AnomalyPolicy,
) -> Option<(Decimal, Decimal)> {
    let first = first_active?;
    if (day - first).num_days() < i64::from(policy.min_history_days) {
        return None;
    }
    let window: Vec<&(NaiveDate, Decimal)> = history
        .iter()
        .filter(|(d, _)| *d >= first && *d < day)
        .collect();
    let mut all: Vec<Decimal> = window.iter().map(|(_, v)| *v).collect();
    let mut same: Vec<Decimal> = window
        .iter()
        .filter(|(d, _)| d.weekday() == day.weekday())
        .map(|(_, v)| *v)
        .collect();
    let m_all = median(&mut all);
    let m_same = median(&mut same);
    // median absolute deviation of all days: how noisy the scope is
    let mut deviations: Vec<Decimal> = all.iter().map(|v| (*v - m_all).abs()).collect();
    let mad = median(&mut deviations);
    Some((m_all.max(m_same), mad))
}

/// Whether `value` is a spike against `expected` (and the scope's noise `mad`).
pub fn spike(
    metric: &str,
    value: Decimal,
    expected: Decimal,
    mad: Decimal,
    factor: Decimal,
    floor: Decimal,
) -> Option<Spike> {
    if value < floor || value < expected * factor {
        return None;
    }
    // robust z-score of at least 4 where the scope has any spread
    let sigma = mad * Decimal::new(14826, 4);
    if !sigma.is_zero() && (value - expected) / sigma < Decimal::from(4) {
        return None;
    }
    Some(Spike {
        metric: metric.into(),
        value,
        expected,
        factor,
    })
}

/// Summarises `scope` for `date` in `zone` from its month counters (this month and the ones
/// before, for the baseline).
#[allow(clippy::too_many_arguments)]
pub fn summarize(
    scope: &Scope,
    zone: Zone,
    date: NaiveDate,
    months: &BTreeMap<YearMonth, MonthCounters>,
    monthly_limit: Option<Decimal>,
    forecast_policy: &ForecastPolicy,
    anomaly_policy: &AnomalyPolicy,
) -> DailySummary {
    let series = Series { months };
    let day = series.day(date).cloned().unwrap_or_default();
    let month = Period::containing(WindowKind::Monthly, zone, zone.start_of_day(date));
    let mut mtd: BTreeMap<Currency, Decimal> = BTreeMap::new();
    for d in month.days().filter(|d| *d <= date) {
        for money in series
            .day(d)
            .map(|t| t.costs().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let total = mtd.entry(money.currency).or_default();
            *total = total.saturating_add(money.amount);
        }
    }
    let main = mtd.iter().max_by_key(|(_, v)| **v).map(|(c, _)| *c);

    let lookback: Vec<NaiveDate> = (1..=anomaly_policy.baseline_days as i64)
        .rev()
        .map(|n| date - Duration::days(n))
        .collect();
    let first_active = series.first_active(lookback.iter().copied());
    let history = |f: &dyn Fn(NaiveDate) -> Decimal| -> Vec<(NaiveDate, Decimal)> {
        lookback.iter().map(|d| (*d, f(*d))).collect()
    };

    // (metric, its daily series, factor, floor)
    type Check<'a> = (
        &'a str,
        Box<dyn Fn(NaiveDate) -> Decimal + 'a>,
        Decimal,
        Decimal,
    );
    let min_requests = Decimal::from(anomaly_policy.min_daily_requests);
    let series = &series;
    let mut checks: Vec<Check> = vec![
        (
            "requests",
            Box::new(move |d| series.value(d, Metric::Requests)),
            anomaly_policy.requests_factor,
            min_requests,
        ),
        (
            "tokens",
            Box::new(move |d| series.tokens(d)),
            anomaly_policy.tokens_factor,
            min_requests * Decimal::from(1000),
        ),
    ];
    if let Some(currency) = main {
        checks.insert(
            0,
            (
                "cost",
                Box::new(move |d| series.value(d, Metric::Cost(currency))),
                anomaly_policy.cost_factor,
                anomaly_policy.min_daily_cost,
            ),
        );
    }
    let anomalies: Vec<Spike> = checks
        .iter()
        .filter_map(|(metric, value, factor, floor)| {
            let (usual, mad) =
                expected(&history(value.as_ref()), date, first_active, anomaly_policy)?;
            spike(metric, value(date), usual, mad, *factor, *floor)
        })
        .collect();

    // end-of-month forecast from the end of `date`, bounded like budget-check's (none when
    // the figures are too large to project: the summary still has them)
    let forecast = main.and_then(|currency| {
        let end_of_day = zone.start_of_day(date + Duration::days(1));
        let actual = mtd.get(&currency).copied().unwrap_or_default();
        let yesterday = series.value(date - Duration::days(1), Metric::Cost(currency));
        let recent = RecentSpend {
            amount: yesterday.saturating_add(series.value(date, Metric::Cost(currency))),
            span: end_of_day - zone.start_of_day(date - Duration::days(1)),
        };
        // without a budget, a month of the usual day stands in for the limit
        let usual = {
            let cost = |d: NaiveDate| series.value(d, Metric::Cost(currency));
            expected(&history(&cost), date, first_active, anomaly_policy)
                .map(|(e, _)| e.saturating_mul(Decimal::from(month.days().count() as u32)))
        };
        match monthly_limit.or(usual.filter(|u| !u.is_zero())) {
            Some(limit) => project(
                &month,
                end_of_day - Duration::seconds(1),
                actual,
                Some(recent),
                None,
                limit,
                forecast_policy,
            ),
            None => project(
                &month,
                end_of_day - Duration::seconds(1),
                actual,
                Some(recent),
                None,
                Decimal::MAX / Decimal::from(1000),
                forecast_policy,
            ),
        }
        .ok()
    });

    DailySummary {
        scope: scope.clone(),
        zone,
        date,
        source: usage_source(),
        day: tally_doc(&day),
        month_to_date: mtd
            .into_iter()
            .map(|(c, v)| (c, v.normalize().to_string()))
            .collect(),
        forecast,
        anomalies,
    }
}

/// A summary's scope, and the source where it is not the app-reported usage
/// (`openai/prod (openai)`).
pub fn series_name(s: &DailySummary) -> String {
    if s.is_usage() {
        s.scope.to_string()
    } else {
        format!("{} ({})", s.scope, s.source)
    }
}

fn day_cost(s: &DailySummary, currency: Currency) -> Decimal {
    s.day
        .get(&Metric::Cost(currency).name())
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}

/// Assembles the day's report from its summaries. `at_risk` is computed by the caller (it needs
/// the budgets).
pub fn report(
    date: NaiveDate,
    zone: Zone,
    summaries: &[DailySummary],
    at_risk: Vec<(String, String)>,
) -> DailyReport {
    let root = summaries.iter().find(|s| s.scope.is_root() && s.is_usage());
    let total: BTreeMap<Currency, String> = root
        .map(|r| {
            r.day
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        Metric::parse(k).and_then(|m| match m {
                            Metric::Cost(c) => Some(c),
                            _ => None,
                        })?,
                        v.clone(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let main = total
        .iter()
        .max_by_key(|(_, v)| v.parse::<Decimal>().unwrap_or_default())
        .map(|(c, _)| *c)
        .unwrap_or(Currency::USD);
    let top = |filter: &dyn Fn(&Scope) -> bool| -> Vec<(String, String)> {
        let mut v: Vec<(Decimal, String)> = summaries
            .iter()
            .filter(|s| s.is_usage() && filter(&s.scope))
            .map(|s| (day_cost(s, main), s.scope.to_string()))
            .filter(|(c, _)| !c.is_zero())
            .collect();
        v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        v.into_iter()
            .take(5)
            .map(|(c, s)| (s, format!("{} {main}", c.normalize())))
            .collect()
    };
    let is_dimension = |s: &Scope| s.as_str().starts_with('_');
    let top_scopes = top(&|s| !s.is_root() && !is_dimension(s) && s.as_str().contains('/'));
    let top_models = top(&|s| s.as_str().starts_with("_model/"));
    let mut movers: Vec<(Decimal, &DailySummary, &Spike)> = summaries
        .iter()
        .filter(|s| !s.scope.is_root() && !is_dimension(&s.scope))
        .flat_map(|s| {
            s.anomalies
                .iter()
                .filter(|a| a.metric == "cost")
                .map(move |a| (a.value - a.expected, s, a))
        })
        .collect();
    movers.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then(a.1.scope.cmp(&b.1.scope))
            .then(a.1.source.cmp(&b.1.source))
    });
    // a parent that moved exactly as much as one of its children (in the same series) adds
    // nothing: name the child
    let explained = |delta: &Decimal, s: &DailySummary| {
        movers.iter().any(|(d, other, _)| {
            d == delta
                && other.source == s.source
                && other.scope != s.scope
                && s.scope.contains(&other.scope)
        })
    };
    let movers: Vec<(String, String, String)> = movers
        .iter()
        .filter(|(delta, s, _)| !explained(delta, s))
        .take(5)
        .map(|(_, s, spike)| {
            (
                series_name(s),
                spike.value.normalize().to_string(),
                spike.expected.normalize().to_string(),
            )
        })
        .collect();
    DailyReport {
        date,
        zone,
        total,
        top_scopes,
        top_models,
        movers,
        at_risk,
        anomalies: summaries.iter().filter(|s| !s.anomalies.is_empty()).count(),
    }
}

/// The scopes whose summaries carry EMF metrics: the root, providers, and budgeted scopes
/// (every metric series costs money in CloudWatch, so not all 10,000 scopes).
pub fn metric_scopes(budgeted: &BTreeSet<Scope>, scope: &Scope) -> bool {
    scope.is_root()
        || (!scope.as_str().contains('/') && !scope.as_str().starts_with('_'))
        || budgeted.contains(scope)
}

/// One CloudWatch Embedded Metric Format line for a summary (numbers written from their exact
/// decimal text, never through a float).
pub fn emf_line(s: &DailySummary, percent_of_budget: Option<Decimal>, timestamp_ms: i64) -> String {
    let mut metrics = vec![
        r#"{"Name":"DailyCost","Unit":"None"}"#.to_string(),
        r#"{"Name":"MonthToDate","Unit":"None"}"#.to_string(),
    ];
    let main = s.main_currency();
    let cost = s
        .day
        .get(&Metric::Cost(main).name())
        .cloned()
        .unwrap_or_else(|| "0".into());
    let mtd = s
        .month_to_date
        .get(&main)
        .cloned()
        .unwrap_or_else(|| "0".into());
    let mut fields = format!(r#""DailyCost":{cost},"MonthToDate":{mtd}"#);
    if let Some(Forecast::Projected(f)) = s.forecast {
        metrics.push(r#"{"Name":"Forecast","Unit":"None"}"#.into());
        fields.push_str(&format!(r#","Forecast":{}"#, f.normalize()));
    }
    if let Some(p) = percent_of_budget {
        metrics.push(r#"{"Name":"PercentOfBudget","Unit":"Percent"}"#.into());
        fields.push_str(&format!(r#","PercentOfBudget":{}"#, p.normalize()));
    }
    let scope = serde_json::to_string(s.scope.as_str()).unwrap_or_default();
    // a provider's series is a metric of its own (usage metrics keep the dimensions they had)
    let (dimensions, source) = if s.is_usage() {
        (r#"["Scope","Currency"]"#, String::new())
    } else {
        (
            r#"["Scope","Currency","Source"]"#,
            format!(
                r#""Source":{},"#,
                serde_json::to_string(&s.source).unwrap_or_default()
            ),
        )
    };
    format!(
        r#"{{"_aws":{{"Timestamp":{timestamp_ms},"CloudWatchMetrics":[{{"Namespace":"spendguard","Dimensions":[{dimensions}],"Metrics":[{}]}}]}},"Scope":{scope},"Currency":"{main}",{source}"Date":"{}",{fields}}}"#,
        metrics.join(","),
        s.date
    )
}

/// `series` tells events of one scope, zone and day apart: the zone, then `#<source>` for a
/// provider's series (`DailySummary::series_key`).
fn base_event(
    policy: &PolicySet,
    kind: AlertKind,
    scope: &Scope,
    zone: Zone,
    series: &str,
    date: NaiveDate,
    route: &str,
) -> AlertEvent {
    let period = Period::containing(WindowKind::Daily, zone, zone.start_of_day(date));
    let zero = Money::zero(Currency::USD);
    let id = crate::alert::alert_id(
        &format!("{route}:{scope}@{series}"),
        WindowKind::Daily,
        period.start,
        route,
        Decimal::ZERO,
    );
    AlertEvent {
        schema_version: ALERT_SCHEMA_VERSION,
        alert_id: id,
        kind,
        budget_id: String::new(),
        scope: scope.clone(),
        window: WindowKind::Daily,
        period_key: format!("D#{date}"),
        period_start: period.start,
        period_end: period.end,
        tier: route.into(),
        severity: if kind == AlertKind::Anomaly {
            Severity::Warning
        } else {
            Severity::Info
        },
        basis: Basis::Actual,
        spend: zero,
        limit: zero,
        threshold: zero,
        percent: Decimal::ZERO,
        forecast: Forecast::TooEarly,
        actions: vec![Action::Notify],
        channels: policy
            .settings
            .routing
            .get(route)
            .cloned()
            .unwrap_or_default(),
        summary: String::new(),
        raised_at: Utc::now(),
        related_alert_id: None,
        escalation_level: None,
        runbook_url: policy.settings.runbook_url.clone(),
        details: AlertDetails::None,
    }
}

/// The anomaly alert for a summary that carries spikes.
pub fn anomaly_event(policy: &PolicySet, s: &DailySummary, now: DateTime<Utc>) -> AlertEvent {
    let mut e = base_event(
        policy,
        AlertKind::Anomaly,
        &s.scope,
        s.zone,
        &s.series_key(),
        s.date,
        "anomaly",
    );
    e.raised_at = now;
    let main = s.main_currency();
    let cost = s.anomalies.iter().find(|a| a.metric == "cost");
    let lead = cost.or(s.anomalies.first());
    if let Some(a) = lead {
        let value = s
            .day
            .get(&Metric::Cost(main).name())
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        e.spend = Money::new(value, main);
        if let Some(c) = cost {
            e.limit = Money::new(c.expected, main);
            e.threshold = Money::new(c.expected * c.factor, main);
        }
        e.percent = if a.expected.is_zero() {
            Decimal::ZERO
        } else {
            // a ratio too large to hold: 0, the summary gives both figures
            percent_of(a.value, a.expected).unwrap_or_default()
        };
    }
    let spikes: Vec<String> = s
        .anomalies
        .iter()
        .map(|a| {
            format!(
                "{} {} (usual {})",
                a.metric,
                a.value.normalize(),
                a.expected.normalize()
            )
        })
        .collect();
    e.summary = format!(
        "ANOMALY: {} on {} ({}): {}",
        series_name(s),
        s.date,
        s.zone,
        spikes.join("; ")
    );
    e.details = AlertDetails::Anomaly {
        spikes: s.anomalies.clone(),
        zone: s.zone,
        source: (!s.is_usage()).then(|| s.source.clone()),
    };
    e
}

/// The daily report event for one zone.
pub fn report_event(policy: &PolicySet, r: &DailyReport, now: DateTime<Utc>) -> AlertEvent {
    let mut e = base_event(
        policy,
        AlertKind::Report,
        &Scope::root(),
        r.zone,
        r.zone.name(),
        r.date,
        "report",
    );
    e.raised_at = now;
    let (currency, total) = r
        .total
        .iter()
        .map(|(c, v)| (*c, v.parse::<Decimal>().unwrap_or_default()))
        .max_by_key(|(_, v)| *v)
        .unwrap_or((Currency::USD, Decimal::ZERO));
    e.spend = Money::new(total, currency);
    e.summary = format!(
        "Daily spend {} ({}): {} — anomalies: {}, budgets at risk: {}",
        r.date,
        r.zone,
        e.spend,
        r.anomalies,
        r.at_risk.len()
    );
    e.details = AlertDetails::Report(r.clone());
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn policy() -> AnomalyPolicy {
        AnomalyPolicy::default()
    }

    #[test]
    fn weekday_pattern_is_expected_but_a_real_spike_is_not() {
        // four weeks: weekdays 10, Mondays 50
        let day = d("2026-11-23"); // a Monday
        let history: Vec<(NaiveDate, Decimal)> = (1..=28)
            .map(|n| {
                let date = day - Duration::days(n);
                (
                    date,
                    if date.weekday() == chrono::Weekday::Mon {
                        dec!(50)
                    } else {
                        dec!(10)
                    },
                )
            })
            .collect();
        let first = Some(day - Duration::days(28));
        let (exp, mad) = expected(&history, day, first, &policy()).unwrap();
        assert_eq!(exp, dec!(50), "a Monday is compared with Mondays");
        assert!(spike("cost", dec!(55), exp, mad, dec!(5), dec!(1)).is_none());
        // a Tuesday of 60 is a spike: 6x the usual 10
        let tuesday = day + Duration::days(1);
        let (exp, mad) = expected(&history, tuesday, first, &policy()).unwrap();
        assert_eq!(exp, dec!(10));
        assert!(spike("cost", dec!(60), exp, mad, dec!(5), dec!(1)).is_some());
    }

    #[test]
    fn too_little_history_is_never_anomalous() {
        let day = d("2026-11-23");
        let history: Vec<(NaiveDate, Decimal)> = (1..=28)
            .map(|n| (day - Duration::days(n), dec!(1)))
            .collect();
        assert!(expected(&history, day, Some(day - Duration::days(5)), &policy()).is_none());
        assert!(expected(&history, day, None, &policy()).is_none());
    }

    #[test]
    fn small_or_noisy_values_do_not_fire() {
        // below the floor
        assert!(spike("cost", dec!(0.9), dec!(0.1), dec!(0), dec!(5), dec!(1)).is_none());
        // 5x the median, but the scope is noisy (MAD 10): z = (50-10)/14.8 < 4
        assert!(spike("cost", dec!(50), dec!(10), dec!(10), dec!(5), dec!(1)).is_none());
        assert!(spike("cost", dec!(200), dec!(10), dec!(10), dec!(5), dec!(1)).is_some());
    }

    #[test]
    fn emf_lines_carry_exact_numbers() {
        let s = DailySummary {
            scope: Scope::parse("openai/prod").unwrap(),
            zone: Zone::UTC,
            date: d("2026-11-21"),
            source: USAGE_SOURCE.into(),
            day: BTreeMap::from([("cost.USD".to_string(), "80.10".to_string())]),
            month_to_date: BTreeMap::from([(Currency::USD, "1580.10".to_string())]),
            forecast: Some(Forecast::Projected(dec!(2476.76))),
            anomalies: vec![],
        };
        let line = emf_line(&s, Some(dec!(79.0)), 1_795_000_000_000);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "spendguard");
        assert_eq!(v["Scope"], "openai/prod");
        assert!(
            line.contains(r#""DailyCost":80.10"#)
                && line.contains(r#""Forecast":2476.76"#)
                && line.contains(r#""PercentOfBudget":79"#),
            "{line}"
        );
    }
}
