//! Key-theft and burst detection (ADR 016). A leaked key does not fill a budget slowly: it
//! spends many times its usual rate, at hours it is never used, in bursts. Every scheduled
//! check compares each key's last two hours (hour counters, written by usage ingest) with what
//! the key usually does at that hour of the day, and acts in proportion to what it finds.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveDate, Timelike, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::alert::{ALERT_SCHEMA_VERSION, AlertDetails, AlertEvent, AlertKind};
use crate::budget::Basis;
use crate::forecast::Forecast;
use crate::key_hours::{HourFigures, Signal};
use crate::keys::KeyRecord;
use crate::money::Money;
use crate::period::{Period, WindowKind, Zone};
use crate::scope::Scope;
use crate::settings::Detector;
use crate::settings::SecurityPolicy;
use crate::settings::Settings;
use crate::settings::ThreatLevel;

fn median(mut values: Vec<Decimal>) -> Decimal {
    if values.is_empty() {
        return Decimal::ZERO;
    }
    values.sort();
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / Decimal::TWO
    }
}

/// What a key usually does, learned from its hour counters of the days before `learned_on`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    pub learned_on: NaiveDate,
    /// Days from the key's first use in the window to the day before `learned_on`.
    pub history_days: u32,
    pub last_used: Option<NaiveDate>,
    /// Per hour of the day (UTC): the median over the history days.
    pub usual_spend: Vec<Decimal>,
    pub usual_requests: Vec<Decimal>,
    #[serde(default)]
    pub usual_tokens: Vec<Decimal>,
    /// Hours of the day (UTC) the key was ever used at.
    pub used_hours: BTreeSet<u32>,
    /// Some of the key's history came in records that sum up more than an hour, so its
    /// hours of use are not known and off-hours use cannot be judged.
    #[serde(default)]
    pub aggregated: bool,
    /// The median of the hours the key was used in: the reference at an hour it is never used.
    pub active_hour_spend: Decimal,
    pub active_hour_requests: Decimal,
    #[serde(default)]
    pub active_hour_tokens: Decimal,
}

impl Baseline {
    /// Learns from `history` (figures by hour; absent hours had no use) over the `days`
    /// days before `today`.
    pub fn learn(
        history: &BTreeMap<DateTime<Utc>, HourFigures>,
        today: NaiveDate,
        days: u32,
    ) -> Baseline {
        let first_day = today - Duration::days(days.into());
        let used: BTreeMap<DateTime<Utc>, HourFigures> = history
            .iter()
            .filter(|(at, f)| {
                let d = at.date_naive();
                f.used() && d >= first_day && d < today
            })
            .map(|(at, f)| (*at, *f))
            .collect();
        let first_use = used.keys().next().map(|at| at.date_naive());
        let last_used = used.keys().next_back().map(|at| at.date_naive());
        let history_days = first_use.map_or(0, |d| (today - d).num_days() as u32);
        let mut usual_spend = vec![Decimal::ZERO; 24];
        let mut usual_requests = vec![Decimal::ZERO; 24];
        let mut usual_tokens = vec![Decimal::ZERO; 24];
        if let Some(start) = first_use {
            for hour in 0..24u32 {
                let (mut spend, mut requests, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
                for day in start.iter_days().take_while(|d| *d < today) {
                    let at = day
                        .and_hms_opt(hour, 0, 0)
                        .map(|t| t.and_utc())
                        .unwrap_or_default();
                    let f = used.get(&at).copied().unwrap_or_default();
                    spend.push(f.spend);
                    requests.push(f.requests);
                    tokens.push(f.tokens);
                }
                usual_spend[hour as usize] = median(spend);
                usual_requests[hour as usize] = median(requests);
                usual_tokens[hour as usize] = median(tokens);
            }
        }
        Baseline {
            learned_on: today,
            history_days,
            last_used,
            usual_spend,
            usual_requests,
            usual_tokens,
            used_hours: used.keys().map(|at| at.hour()).collect(),
            aggregated: used.values().any(|f| f.aggregated),
            active_hour_spend: median(used.values().map(|f| f.spend).collect()),
            active_hour_requests: median(used.values().map(|f| f.requests).collect()),
            active_hour_tokens: median(used.values().map(|f| f.tokens).collect()),
        }
    }

    /// The spend and requests the key usually has at `hour` of the day; for an hour it is not
    /// usually used at, its usual active hour.
    fn usual_at(&self, hour: u32) -> (Decimal, Decimal, Decimal) {
        let i = hour as usize;
        let pick = |by_hour: &[Decimal], active: Decimal| {
            let at_hour = by_hour.get(i).copied().unwrap_or_default();
            if at_hour.is_zero() { active } else { at_hour }
        };
        (
            pick(&self.usual_spend, self.active_hour_spend),
            pick(&self.usual_requests, self.active_hour_requests),
            pick(&self.usual_tokens, self.active_hour_tokens),
        )
    }
}

/// What detection found for one key in one hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub key_id: String,
    pub scope: Scope,
    pub hour: DateTime<Utc>,
    pub level: ThreatLevel,
    pub figures: HourFigures,
    pub signals: Vec<Signal>,
}

/// `30.00 USD (20x the usual 1.50 USD)`; a multiple of nothing means nothing, so an hour
/// without usual traffic says that instead.
fn against_usual(
    observed_text: impl std::fmt::Display,
    observed: Decimal,
    usual: Decimal,
    usual_text: impl std::fmt::Display,
) -> String {
    if usual.is_zero() {
        format!("{observed_text} (no usual traffic at this hour)")
    } else {
        let times = (observed / usual).round_dp(1).normalize();
        format!("{observed_text} ({times}x the usual {usual_text})")
    }
}

/// Runs every detector on one hour of a key. Without enough history only bursts can fire.
pub fn detect(
    hour: DateTime<Utc>,
    now: &HourFigures,
    baseline: &Baseline,
    policy: &SecurityPolicy,
) -> Vec<Signal> {
    let mut signals = Vec::new();
    let mut fire = |detector: Detector, evidence: String| {
        signals.push(Signal {
            detector,
            level: policy.level(detector),
            evidence,
        })
    };
    let c = policy.currency;
    if now.busiest_minute > Decimal::from(policy.burst_per_minute) {
        fire(
            Detector::Burst,
            format!(
                "{} requests in one minute (ceiling {})",
                now.busiest_minute, policy.burst_per_minute
            ),
        );
    }
    if !now.used() {
        return signals;
    }
    // dormancy needs no baseline: the last use may be older than the baseline's window
    if let Some(last) = baseline.last_used {
        let idle = (hour.date_naive() - last).num_days();
        if idle > i64::from(policy.dormant_days) {
            fire(
                Detector::Dormant,
                format!("used after {idle} idle days (last use {last})"),
            );
        }
    }
    if baseline.history_days < policy.min_history_days {
        return signals;
    }
    let h = hour.hour();
    let (usual_spend, usual_requests, usual_tokens) = baseline.usual_at(h);
    let spend_spike = now.spend >= policy.min_hourly_cost
        && !usual_spend.is_zero()
        && now.spend >= usual_spend * policy.spike_factor;
    let requests_spike = now.requests >= Decimal::from(policy.min_hourly_requests)
        && !usual_requests.is_zero()
        && now.requests >= usual_requests * policy.spike_factor;
    let tokens_spike = now.tokens >= Decimal::from(policy.min_hourly_tokens)
        && !usual_tokens.is_zero()
        && now.tokens >= usual_tokens * policy.spike_factor;
    if spend_spike || requests_spike || tokens_spike {
        fire(
            Detector::Spike,
            format!(
                "{h:02}:00 UTC: spend {}, {}, {}",
                against_usual(
                    Money::new(now.spend, c),
                    now.spend,
                    usual_spend,
                    Money::new(usual_spend, c)
                ),
                against_usual(
                    format!("{} requests", now.requests),
                    now.requests,
                    usual_requests,
                    usual_requests
                ),
                against_usual(
                    format!("{} tokens", now.tokens),
                    now.tokens,
                    usual_tokens,
                    usual_tokens
                ),
            ),
        );
    }
    if !baseline.used_hours.contains(&h) && !baseline.aggregated && !now.aggregated {
        fire(
            Detector::OffHours,
            format!(
                "used at {h:02}:00 UTC, an hour it was never used at in {} days",
                baseline.history_days
            ),
        );
    }
    signals
}

impl Finding {
    /// The finding made of `signals` (none: nothing found). Two or more signals together
    /// raise the highest level by one.
    pub fn of(
        key: &KeyRecord,
        hour: DateTime<Utc>,
        figures: HourFigures,
        signals: Vec<Signal>,
    ) -> Option<Finding> {
        let top = signals.iter().map(|s| s.level).max()?;
        let level = if signals.len() > 1 { top.raised() } else { top };
        Some(Finding {
            key_id: key.spec.id.clone(),
            scope: key.spec.scope.clone(),
            hour,
            level,
            figures,
            signals,
        })
    }

    /// Stable per key, hour and level: a later run finds the same finding, and a finding
    /// that grows worse within the hour is a new one.
    pub fn alert_id(&self) -> String {
        crate::alert::alert_id(
            &format!("security:{}", self.key_id),
            WindowKind::Daily,
            self.hour,
            self.level.as_str(),
            Decimal::ZERO,
        )
    }

    pub fn detectors(&self) -> Vec<&'static str> {
        self.signals.iter().map(|s| s.detector.as_str()).collect()
    }

    /// The alert: `low`/`medium` go where routing sends `security` (or the severity's tier);
    /// `high` and `critical` go to every channel.
    pub fn event(&self, settings: &Settings, now: DateTime<Utc>) -> AlertEvent {
        let policy = &settings.security;
        let severity = self.level.severity();
        let channels = if self.level >= ThreatLevel::High {
            settings.channels.keys().cloned().collect()
        } else {
            settings
                .routing
                .get("security")
                .or_else(|| settings.routing.get(severity.as_str()))
                .cloned()
                .unwrap_or_default()
        };
        let c = policy.currency;
        let evidence: Vec<&str> = self.signals.iter().map(|s| s.evidence.as_str()).collect();
        let period = Period::containing(WindowKind::Daily, Zone::UTC, self.hour);
        AlertEvent {
            schema_version: ALERT_SCHEMA_VERSION,
            alert_id: self.alert_id(),
            kind: AlertKind::Security,
            budget_id: String::new(),
            scope: self.scope.clone(),
            window: WindowKind::Daily,
            period_key: format!("H#{}", self.hour.format("%Y-%m-%dT%H")),
            period_start: period.start,
            period_end: period.end,
            tier: format!("security-{}", self.level.as_str()),
            severity,
            basis: Basis::Actual,
            // the larger ledger: what the provider counted when nobody reported it
            spend: Money::new(self.figures.spend.max(self.figures.provider_spend), c),
            limit: Money::zero(c),
            threshold: Money::zero(c),
            percent: Decimal::ZERO,
            forecast: Forecast::TooEarly,
            actions: policy.actions.get(&self.level).cloned().unwrap_or_default(),
            channels,
            summary: format!(
                "SECURITY {}: key {} ({}) in the hour from {}: {}",
                self.level.as_str().to_uppercase(),
                self.key_id,
                self.scope,
                self.hour.format("%-d %b %Y %H:00 UTC"),
                evidence.join("; ")
            ),
            raised_at: now,
            related_alert_id: None,
            escalation_level: None,
            runbook_url: settings.runbook_url.clone(),
            details: AlertDetails::Security {
                key: self.key_id.clone(),
                level: self.level,
                hour: self.hour,
                figures: self.figures,
                signals: self.signals.clone(),
            },
        }
    }
}

/// The ack marker of one detector of a key on one day.
pub fn ack_id(key_id: &str, detector: Detector, day: NaiveDate) -> String {
    format!("{key_id}#{}#{day}", detector.as_str())
}

/// What the scan did with one finding.
#[derive(Debug, Clone, Serialize)]
pub struct FindingReport {
    pub key_id: String,
    pub hour: DateTime<Utc>,
    pub level: ThreatLevel,
    pub detectors: Vec<&'static str>,
    /// `published`, `already_raised`, `held_by_other`, `would_publish`, `failed`, or why it
    /// was suppressed (`planned: <reason>`, `acknowledged`).
    pub outcome: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanReport {
    pub keys_watched: usize,
    pub findings: Vec<FindingReport>,
    /// Keys whose throttle was lifted: a whole hour after their finding passed without one.
    pub throttles_lifted: Vec<String>,
    /// Models whose price-book price of a completed day is well above what the provider
    /// charged (ADR 026): reported once per provider and day.
    #[serde(default)]
    pub price_book_drift: Vec<crate::ledger::PriceBookDrift>,
    pub failures: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyStatus;
    use crate::settings::PlannedWindow;
    use rust_decimal_macros::dec;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn figures(spend: Decimal, requests: i64) -> HourFigures {
        HourFigures {
            spend,
            requests: requests.into(),
            busiest_minute: Decimal::from(requests / 10),
            tokens: Decimal::ZERO,
            aggregated: false,
            provider_spend: Decimal::ZERO,
        }
    }

    /// Used at 10:00 and 11:00 UTC on the days `from`..=`to` before 2026-11-23.
    fn history(from: i64, to: i64, spend: Decimal) -> BTreeMap<DateTime<Utc>, HourFigures> {
        let mut h = BTreeMap::new();
        for back in from..=to {
            for hour in [10, 11] {
                let t = at("2026-11-23T00:00:00Z") - Duration::days(back) + Duration::hours(hour);
                h.insert(t, figures(spend, 40));
            }
        }
        h
    }

    fn today() -> NaiveDate {
        "2026-11-23".parse().unwrap()
    }

    fn names(signals: &[Signal]) -> Vec<&'static str> {
        signals.iter().map(|s| s.detector.as_str()).collect()
    }

    #[test]
    fn the_baseline_is_the_median_of_each_hour_over_the_days_since_first_use() {
        let b = Baseline::learn(&history(1, 20, dec!(2)), today(), 28);
        assert_eq!(b.history_days, 20);
        assert_eq!(b.usual_spend[10], dec!(2));
        assert_eq!(b.usual_spend[3], Decimal::ZERO);
        assert_eq!(b.used_hours, BTreeSet::from([10, 11]));
        assert_eq!(b.active_hour_spend, dec!(2));
        assert_eq!(b.last_used, Some("2026-11-22".parse().unwrap()));
        // usage older than the window is not history
        let old = Baseline::learn(&history(40, 50, dec!(2)), today(), 28);
        assert_eq!((old.history_days, old.last_used), (0, None));
    }

    /// Issue 25 §5.8: `0 tokens (∞x the usual 0)` said nothing a person could use.
    #[test]
    fn a_spike_over_an_hour_without_usual_traffic_says_so_instead_of_infinity() {
        let b = Baseline::learn(&history(1, 20, dec!(2)), today(), 28);
        let spike = detect(
            at("2026-11-23T10:00:00Z"),
            &figures(dec!(20), 40),
            &b,
            &SecurityPolicy::default(),
        );
        let evidence = &spike[0].evidence;
        assert!(
            evidence.ends_with("0 tokens (no usual traffic at this hour)"),
            "{evidence}"
        );
        assert!(
            evidence.contains("spend 20.00 USD (10x the usual 2.00 USD)"),
            "{evidence}"
        );
        assert!(!evidence.contains('∞'), "{evidence}");
    }

    #[test]
    fn off_hours_is_not_judged_when_records_sum_up_more_than_an_hour() {
        let policy = SecurityPolicy::default();
        let small = figures(dec!(0.5), 2);
        let precise = Baseline::learn(&history(1, 20, dec!(2)), today(), 28);
        let fires = |b: &Baseline, now: &HourFigures| {
            names(&detect(at("2026-11-23T03:00:00Z"), now, b, &policy))
        };
        assert_eq!(fires(&precise, &small), ["off_hours"]);
        // daily totals stamped at 10:00 and 11:00 say nothing about the hours of use
        let mut daily = history(1, 20, dec!(2));
        daily.values_mut().for_each(|f| f.aggregated = true);
        let aggregated = Baseline::learn(&daily, today(), 28);
        assert!(aggregated.aggregated);
        assert_eq!(fires(&aggregated, &small), Vec::<&str>::new());
        // nor does an hour that is itself an aggregate
        let summed = HourFigures {
            aggregated: true,
            ..small
        };
        assert_eq!(fires(&precise, &summed), Vec::<&str>::new());
        // the spike still compares the hour's total
        let big = HourFigures {
            aggregated: true,
            ..figures(dec!(25), 40)
        };
        assert_eq!(fires(&aggregated, &big), ["spike"]);
    }

    #[test]
    fn the_usual_hour_is_compared_and_levels_combine() {
        let policy = SecurityPolicy::default();
        let b = Baseline::learn(&history(1, 20, dec!(2)), today(), 28);
        // 9x at its usual hour: nothing; 10x: a spike
        let quiet = detect(
            at("2026-11-23T10:00:00Z"),
            &figures(dec!(18), 40),
            &b,
            &policy,
        );
        assert!(quiet.is_empty(), "{quiet:?}");
        let spike = detect(
            at("2026-11-23T10:00:00Z"),
            &figures(dec!(20), 40),
            &b,
            &policy,
        );
        assert_eq!(names(&spike), ["spike"]);
        // at 03:00 even a small use is off-hours (low); 10x the usual active hour adds a spike
        let small = detect(
            at("2026-11-23T03:00:00Z"),
            &figures(dec!(0.5), 2),
            &b,
            &policy,
        );
        assert_eq!(names(&small), ["off_hours"]);
        let night = detect(
            at("2026-11-23T03:00:00Z"),
            &figures(dec!(25), 40),
            &b,
            &policy,
        );
        assert_eq!(names(&night), ["spike", "off_hours"]);
        let key = KeyRecord {
            spec: crate::keys::KeySpec {
                id: "k".into(),
                provider: crate::keys::ProviderKind::Anthropic,
                scope: Scope::parse("anthropic/k").unwrap(),
                secret_arn: None,
                key_id: None,
                project_id: None,
                user: None,
                rotation: None,
                allow_delete: false,
            },
            status: KeyStatus::Active,
            version: 0,
        };
        let hour = at("2026-11-23T03:00:00Z");
        let f = figures(dec!(25), 40);
        assert_eq!(
            Finding::of(&key, hour, f, small).unwrap().level,
            ThreatLevel::Low
        );
        assert_eq!(
            Finding::of(&key, hour, f, night).unwrap().level,
            ThreatLevel::Critical,
            "high and low together are one above high"
        );
        assert!(Finding::of(&key, hour, f, Vec::new()).is_none());
    }

    #[test]
    fn a_dormant_key_and_a_young_key() {
        let policy = SecurityPolicy::default();
        // used for three weeks, idle for the last ten days
        let idle = Baseline::learn(&history(11, 31, dec!(2)), today(), 56);
        let woke = detect(
            at("2026-11-23T10:00:00Z"),
            &figures(dec!(2), 40),
            &idle,
            &policy,
        );
        assert_eq!(names(&woke), ["dormant"]);
        assert!(woke[0].evidence.contains("11 idle days"), "{woke:?}");
        // five days of history: only a burst can fire
        let young = Baseline::learn(&history(1, 5, dec!(2)), today(), 28);
        let mut busy = figures(dec!(500), 4000);
        busy.busiest_minute = dec!(100);
        assert!(detect(at("2026-11-23T03:00:00Z"), &busy, &young, &policy).is_empty());
        busy.busiest_minute = dec!(101);
        let burst = detect(at("2026-11-23T03:00:00Z"), &busy, &young, &policy);
        assert_eq!(names(&burst), ["burst"]);
    }

    #[test]
    fn planned_windows_cover_the_hours_they_overlap() {
        let mut policy = SecurityPolicy::default();
        policy.planned.push(PlannedWindow {
            key: "k".into(),
            from: at("2026-11-23T02:30:00Z"),
            to: at("2026-11-23T04:00:00Z"),
            reason: "load test".into(),
        });
        assert!(
            policy
                .planned_for("k", at("2026-11-23T02:00:00Z"))
                .is_some()
        );
        assert!(
            policy
                .planned_for("k", at("2026-11-23T03:00:00Z"))
                .is_some()
        );
        assert!(
            policy
                .planned_for("k", at("2026-11-23T04:00:00Z"))
                .is_none()
        );
        assert!(
            policy
                .planned_for("other", at("2026-11-23T03:00:00Z"))
                .is_none()
        );
    }
}
