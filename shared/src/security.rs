//! Key-theft and burst detection (ADR 016). A leaked key does not fill a budget slowly: it
//! spends many times its usual rate, at hours it is never used, in bursts. Every scheduled
//! check compares each key's last two hours (hour counters, written by usage ingest) with what
//! the key usually does at that hour of the day, and acts in proportion to what it finds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{info, warn};

use crate::alert::{ALERT_SCHEMA_VERSION, AlertEvent, AlertKind};
use crate::budget::{Action, Basis, Settings, Severity};
use crate::bus::AlertBus;
use crate::forecast::Forecast;
use crate::keys::{KeyRecord, KeyStatus, ProviderKind};
use crate::lease::{Once, OnceError, once};
use crate::money::{Currency, FxRates, Money};
use crate::period::{Period, WindowKind, YearMonth, Zone};
use crate::records::{AuditEntry, Claim};
use crate::scope::Scope;
use crate::sources::key_usage::{KeyHours, KeyUsageSource, ProviderHour};
use crate::store::{StateStore, StoreError};
use crate::usage::{CounterKey, HourCounters, HourKey, Metric, start_of_hour};

/// Where `spendguard ack` records that a finding was expected (per key, detector and day).
pub const ACK_NAMESPACE: &str = "security-ack";
const BASELINE_CACHE: &str = "security-baseline";
const FINDING_CACHE: &str = "security-finding";
/// The finding that throttled a key (`reduce_limits`), until its recovery lifts the throttle.
const THROTTLE_CACHE: &str = "security-throttle";
/// Security claims are kept this long (a finding is claimed per key, hour and level).
const CLAIM_RETENTION: Duration = Duration::days(35);
/// How far back a key's last use is looked for when its baseline window saw none.
const DORMANCY_LOOKBACK_MONTHS: usize = 6;

/// What can look like a stolen key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// Spend or requests in an hour far above the key's usual for that hour of the day.
    Spike,
    /// More requests in one minute than the configured ceiling.
    Burst,
    /// Use at an hour of the day the key has never been used at.
    OffHours,
    /// Use of a key that had been idle for days.
    Dormant,
}

impl Detector {
    pub const ALL: [Detector; 4] = [
        Detector::Spike,
        Detector::Burst,
        Detector::OffHours,
        Detector::Dormant,
    ];
    pub const NAMES: &'static str = "spike, burst, off_hours, dormant";

    pub fn as_str(&self) -> &'static str {
        match self {
            Detector::Spike => "spike",
            Detector::Burst => "burst",
            Detector::OffHours => "off_hours",
            Detector::Dormant => "dormant",
        }
    }

    pub fn parse(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

/// How sure spendguard is that a key is abused; each level orders its own actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThreatLevel {
    /// Unusual but explainable: recorded and reported.
    Low,
    /// Suspicious: limits reduced, people warned.
    Medium,
    /// Likely compromise: the key is rotated, everyone alerted.
    High,
    /// Definite compromise: the key is disabled at once, on-call paged.
    Critical,
}

impl ThreatLevel {
    pub const NAMES: &'static str = "low, medium, high, critical";

    pub fn as_str(&self) -> &'static str {
        match self {
            ThreatLevel::Low => "low",
            ThreatLevel::Medium => "medium",
            ThreatLevel::High => "high",
            ThreatLevel::Critical => "critical",
        }
    }

    pub fn parse(name: &str) -> Option<ThreatLevel> {
        [
            ThreatLevel::Low,
            ThreatLevel::Medium,
            ThreatLevel::High,
            ThreatLevel::Critical,
        ]
        .into_iter()
        .find(|l| l.as_str() == name)
    }

    /// The alert severity a finding at this level is published with (fan-out routes on it).
    pub fn severity(&self) -> Severity {
        match self {
            ThreatLevel::Low => Severity::Info,
            ThreatLevel::Medium => Severity::Warning,
            ThreatLevel::High => Severity::Critical,
            ThreatLevel::Critical => Severity::Emergency,
        }
    }

    /// One level up: two signals together are worse than either alone.
    fn raised(&self) -> ThreatLevel {
        match self {
            ThreatLevel::Low => ThreatLevel::Medium,
            ThreatLevel::Medium => ThreatLevel::High,
            ThreatLevel::High | ThreatLevel::Critical => ThreatLevel::Critical,
        }
    }
}

/// Activity an operator planned (a load test, a backfill): findings for the key in this time
/// are recorded as suppressed and order nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedWindow {
    pub key: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub reason: String,
}

/// How keys are watched. Defaults: a spike is 10x the usual for the hour (high), a burst more
/// than 100 requests in a minute (medium), use at a never-used hour is low, use after 7 idle
/// days medium; two signals together are one level higher. At least 7 days of history before
/// anything but bursts can fire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityPolicy {
    pub enabled: bool,
    #[serde(with = "rust_decimal::serde::str")]
    pub spike_factor: Decimal,
    pub burst_per_minute: u64,
    /// Days since a key's first use before its baseline is trusted.
    pub min_history_days: u32,
    /// Days the baseline looks back.
    pub baseline_days: u32,
    /// A key unused for more than this many days is dormant.
    pub dormant_days: u32,
    /// An hour below this spend (in `currency`) is never a spike.
    #[serde(with = "rust_decimal::serde::str")]
    pub min_hourly_cost: Decimal,
    /// An hour below this many requests is never a spike.
    pub min_hourly_requests: u64,
    /// An hour below this many tokens is never a spike.
    #[serde(default = "default_min_hourly_tokens")]
    pub min_hourly_tokens: u64,
    /// Spend is compared in this currency (other currencies through the configured rates).
    pub currency: Currency,
    pub levels: BTreeMap<Detector, ThreatLevel>,
    pub actions: BTreeMap<ThreatLevel, Vec<Action>>,
    #[serde(default)]
    pub planned: Vec<PlannedWindow>,
}

fn default_min_hourly_tokens() -> u64 {
    100_000
}

impl Default for SecurityPolicy {
    fn default() -> Self {
        SecurityPolicy {
            enabled: true,
            spike_factor: Decimal::from(10),
            burst_per_minute: 100,
            min_history_days: 7,
            baseline_days: 28,
            dormant_days: 7,
            min_hourly_cost: Decimal::ONE,
            min_hourly_requests: 100,
            min_hourly_tokens: default_min_hourly_tokens(),
            currency: Currency::USD,
            levels: BTreeMap::from([
                (Detector::Spike, ThreatLevel::High),
                (Detector::Burst, ThreatLevel::Medium),
                (Detector::OffHours, ThreatLevel::Low),
                (Detector::Dormant, ThreatLevel::Medium),
            ]),
            actions: BTreeMap::from([
                (ThreatLevel::Low, vec![Action::Notify]),
                (
                    ThreatLevel::Medium,
                    vec![
                        Action::ReduceLimits {
                            factor: Decimal::new(1, 1),
                        },
                        Action::Notify,
                    ],
                ),
                (ThreatLevel::High, vec![Action::RotateKeys, Action::Notify]),
                (
                    ThreatLevel::Critical,
                    vec![Action::DisableKeys, Action::Notify],
                ),
            ]),
            planned: Vec::new(),
        }
    }
}

impl SecurityPolicy {
    fn level(&self, detector: Detector) -> ThreatLevel {
        self.levels
            .get(&detector)
            .copied()
            .unwrap_or(ThreatLevel::Medium)
    }

    fn planned_for(&self, key_id: &str, hour: DateTime<Utc>) -> Option<&PlannedWindow> {
        let end = hour + Duration::hours(1);
        self.planned
            .iter()
            .find(|w| w.key == key_id && w.from < end && hour < w.to)
    }
}

/// One hour of one key, as detection sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourFigures {
    #[serde(with = "rust_decimal::serde::str")]
    pub spend: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub requests: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub busiest_minute: Decimal,
    /// Input and output tokens.
    #[serde(default, with = "rust_decimal::serde::str")]
    pub tokens: Decimal,
}

impl HourFigures {
    /// Spend in `currency`; a cost in a currency without a configured rate is left out.
    pub fn of(c: &HourCounters, currency: Currency, rates: &FxRates) -> HourFigures {
        let spend = c
            .total
            .costs()
            .filter_map(|m| rates.convert(m, currency).ok())
            .map(|m| m.amount)
            .fold(Decimal::ZERO, Decimal::saturating_add);
        HourFigures {
            spend,
            requests: c.total.get(Metric::Requests),
            busiest_minute: c.busiest_minute(),
            // stored counters are bounded (MAX_COUNTER_VALUE): saturation is never reached,
            // and a saturated figure would still be flagged
            tokens: c
                .total
                .get(Metric::TokensIn)
                .saturating_add(c.total.get(Metric::TokensOut)),
        }
    }

    /// What the provider counted for the key's hour: it also sees calls nobody reported.
    pub fn merge_provider(&mut self, provider: &ProviderHour) {
        self.requests = self.requests.max(provider.requests);
        self.tokens = self.tokens.max(provider.tokens);
    }

    fn used(&self) -> bool {
        !self.requests.is_zero() || !self.spend.is_zero() || !self.tokens.is_zero()
    }
}

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

fn provider_hour<'m>(
    by_provider: &'m BTreeMap<ProviderKind, KeyHours>,
    key: &KeyRecord,
    hour: DateTime<Utc>,
) -> Option<&'m ProviderHour> {
    let key_id = key.spec.key_id.clone()?;
    by_provider.get(&key.spec.provider)?.get(&(key_id, hour))
}

/// One detector that fired, with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub detector: Detector,
    pub level: ThreatLevel,
    pub evidence: String,
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

fn times(observed: Decimal, usual: Decimal) -> String {
    if usual.is_zero() {
        "∞".into()
    } else {
        (observed / usual).round_dp(1).normalize().to_string()
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
                "{h:02}:00 UTC: spend {} ({}x the usual {}), {} requests ({}x the usual {}), {} tokens ({}x the usual {})",
                Money::new(now.spend, c),
                times(now.spend, usual_spend),
                Money::new(usual_spend, c),
                now.requests,
                times(now.requests, usual_requests),
                usual_requests,
                now.tokens,
                times(now.tokens, usual_tokens),
                usual_tokens
            ),
        );
    }
    if !baseline.used_hours.contains(&h) {
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

    fn detectors(&self) -> Vec<&'static str> {
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
            spend: Money::new(self.figures.spend, c),
            limit: Money::zero(c),
            threshold: Money::zero(c),
            percent: Decimal::ZERO,
            forecast: Forecast::TooEarly,
            actions: policy.actions.get(&self.level).cloned().unwrap_or_default(),
            channels,
            summary: format!(
                "SECURITY {}: key {} ({}) {}: {}",
                self.level.as_str().to_uppercase(),
                self.key_id,
                self.scope,
                self.hour.format("%Y-%m-%d %H:00 UTC"),
                evidence.join("; ")
            ),
            raised_at: now,
            related_alert_id: None,
            escalation_level: None,
            runbook_url: settings.runbook_url.clone(),
            details: Some(json!({
                "key": self.key_id,
                "level": self.level,
                "hour": self.hour,
                "figures": self.figures,
                "signals": self.signals,
            })),
        }
    }
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
    pub failures: Vec<String>,
}

/// The ack marker of one detector of a key on one day.
pub fn ack_id(key_id: &str, detector: Detector, day: NaiveDate) -> String {
    format!("{key_id}#{}#{day}", detector.as_str())
}

/// Marks a published finding as expected: its detectors stay quiet for that key for the rest
/// of the finding's day. False when no finding with that alert id is known.
pub async fn acknowledge(
    store: &dyn StateStore,
    alert_id: &str,
    actor: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let Some(doc) = store
        .get_cached(&format!("{FINDING_CACHE}#{alert_id}"), now)
        .await?
    else {
        return Ok(false);
    };
    let finding: Finding = crate::store::from_doc("finding", &doc)?;
    let day = finding.hour.date_naive();
    let until = day
        .succ_opt()
        .unwrap_or(day)
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now);
    for s in &finding.signals {
        store
            .put_marker(
                ACK_NAMESPACE,
                &ack_id(&finding.key_id, s.detector, day),
                now,
                until - now,
            )
            .await?;
    }
    store
        .append_audit(&AuditEntry {
            id: uuid::Uuid::new_v4().to_string(),
            at: now,
            actor: actor.into(),
            action: "security_finding_acknowledged".into(),
            scope: Some(finding.scope.clone()),
            detail: json!({"alert_id": alert_id, "key": finding.key_id, "day": day,
                "detectors": finding.detectors(), "reason": reason}),
        })
        .await?;
    Ok(true)
}

/// The scan a scheduled check runs over every active key.
pub struct SecurityScan<'a> {
    pub store: &'a dyn StateStore,
    pub bus: &'a dyn AlertBus,
    /// The providers' own usage per key (OpenAI, Anthropic), where configured.
    pub key_usage: &'a [Arc<dyn KeyUsageSource>],
    pub settings: &'a Settings,
    pub now: DateTime<Utc>,
    pub run_id: &'a str,
    pub dry_run: bool,
    pub lease: Duration,
}

impl SecurityScan<'_> {
    /// Looks at the previous and the current hour of every active key: one read of their
    /// hour counters, a baseline per key in use (learned once a day, then cached), and a
    /// claim per finding so that each is raised once per key, hour and level.
    pub async fn run(&self) -> Result<ScanReport, StoreError> {
        let policy = &self.settings.security;
        let mut report = ScanReport::default();
        if !policy.enabled {
            return Ok(report);
        }
        let keys: Vec<KeyRecord> = self
            .store
            .keys()
            .await?
            .into_iter()
            .filter(|k| k.status == KeyStatus::Active)
            .collect();
        report.keys_watched = keys.len();
        let current = start_of_hour(self.now);
        let hours = [current - Duration::hours(1), current];
        let wanted: Vec<HourKey> = keys
            .iter()
            .flat_map(|k| {
                hours.iter().map(|h| HourKey {
                    scope: k.spec.scope.clone(),
                    hour: *h,
                })
            })
            .collect();
        let counters = self.store.read_hours(&wanted).await?;
        // once per run and provider: what it counted for every registered key, these two hours
        let provider_hours = self
            .provider_hours(&keys, hours[0], current + Duration::hours(1), &mut report)
            .await;
        let mut found = BTreeSet::new();
        for key in &keys {
            // a stored hour that cannot be read is a blind spot: the run says so
            for h in &hours {
                let hour_key = HourKey {
                    scope: key.spec.scope.clone(),
                    hour: *h,
                };
                if let Some(why) = counters.get(&hour_key).and_then(|c| c.unreadable.as_ref()) {
                    report.failures.push(format!(
                        "theft detection of key {} at {}: {why}",
                        key.spec.id,
                        h.format("%Y-%m-%d %H:00 UTC")
                    ));
                }
            }
            let in_use: Vec<(DateTime<Utc>, HourFigures)> = hours
                .iter()
                .map(|h| {
                    let mut figures = counters
                        .get(&HourKey {
                            scope: key.spec.scope.clone(),
                            hour: *h,
                        })
                        .map(|c| HourFigures::of(c, policy.currency, &self.settings.rates))
                        .unwrap_or_default();
                    if let Some(p) = provider_hour(&provider_hours, key, *h) {
                        figures.merge_provider(p);
                    }
                    (*h, figures)
                })
                .filter(|(_, f)| f.used())
                .collect();
            if in_use.is_empty() {
                continue;
            }
            let baseline = self.baseline(key).await?;
            for (hour, figures) in in_use {
                let signals = detect(hour, &figures, &baseline, policy);
                if let Some(finding) = Finding::of(key, hour, figures, signals) {
                    found.insert(key.spec.id.clone());
                    let outcome = self.act(&finding).await;
                    if outcome == "failed" {
                        report
                            .failures
                            .push(format!("security finding for key {}", finding.key_id));
                    }
                    report.findings.push(FindingReport {
                        key_id: finding.key_id.clone(),
                        hour: finding.hour,
                        level: finding.level,
                        detectors: finding.detectors(),
                        outcome,
                    });
                }
            }
        }
        if !self.dry_run {
            self.lift_throttles(&keys, &found, &mut report).await?;
        }
        Ok(report)
    }

    /// Each provider's usage of the registry's keys in `[from, to)`, one walk per provider. A
    /// provider that fails is reported and detection goes on with the usage reports alone.
    async fn provider_hours(
        &self,
        keys: &[KeyRecord],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        report: &mut ScanReport,
    ) -> BTreeMap<ProviderKind, KeyHours> {
        let mut out = BTreeMap::new();
        for source in self.key_usage {
            let ids: Vec<String> = keys
                .iter()
                .filter(|k| k.spec.provider == source.provider())
                .filter_map(|k| k.spec.key_id.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            match source.hourly(from, to, &ids).await {
                Ok(hours) => {
                    out.insert(source.provider(), hours);
                }
                Err(e) => {
                    warn!(error = %e, "provider usage per key unavailable");
                    report.failures.push(e.to_string());
                }
            }
        }
        out
    }

    /// A key throttled by a finding gets its limit back once a whole hour after the finding's
    /// hour has passed without a finding: the finding's recovery is published once (key-guard
    /// lifts the factor the finding set). Only keys whose switch is throttled are looked up.
    async fn lift_throttles(
        &self,
        keys: &[KeyRecord],
        found: &BTreeSet<String>,
        report: &mut ScanReport,
    ) -> Result<(), StoreError> {
        let scopes: Vec<Scope> = keys.iter().map(|k| k.spec.scope.clone()).collect();
        let throttled: BTreeSet<Scope> = self
            .store
            .kill_switches(&scopes)
            .await?
            .into_iter()
            .filter(|s| s.value.limit_factor < Decimal::ONE)
            .map(|s| s.value.scope)
            .collect();
        let last_complete_hour = start_of_hour(self.now) - Duration::hours(1);
        for key in keys
            .iter()
            .filter(|k| throttled.contains(&k.spec.scope) && !found.contains(&k.spec.id))
        {
            let cache_key = format!("{THROTTLE_CACHE}#{}", key.spec.id);
            let Some(doc) = self.store.get_cached(&cache_key, self.now).await? else {
                continue;
            };
            let throttling: AlertEvent = crate::store::from_doc("throttling finding", &doc)?;
            let Some(hour) = throttling
                .details
                .as_ref()
                .and_then(|d| d.get("hour"))
                .and_then(|h| serde_json::from_value::<DateTime<Utc>>(h.clone()).ok())
            else {
                continue;
            };
            if last_complete_hour <= hour {
                continue;
            }
            let mut recovery = throttling.recovery("", self.now);
            recovery.summary = format!(
                "RECOVERED: key {} ({}) used as usual for a whole hour after its {} finding: limits lifted",
                key.spec.id, key.spec.scope, throttling.tier
            );
            let claim = Claim::key(
                &key.spec.id,
                &format!("security-recovery#{}", throttling.alert_id),
                self.run_id,
                self.lease,
                self.now + CLAIM_RETENTION,
            );
            match once(self.store, claim, self.now, || self.bus.publish(&recovery)).await {
                Ok(Once::Did(())) => {}
                Ok(Once::Done | Once::Busy) => continue,
                Err(OnceError::Store(e)) => return Err(e),
                Err(OnceError::Work(e)) => {
                    warn!(error = %e, key = %key.spec.id, "throttle recovery not published");
                    report
                        .failures
                        .push(format!("throttle recovery for key {}: {e}", key.spec.id));
                    continue;
                }
            }
            self.store.put_cached(&cache_key, "", self.now).await?;
            report.throttles_lifted.push(key.spec.id.clone());
        }
        Ok(())
    }

    /// The key's baseline for today: cached for the day, else learned from its hour counters.
    async fn baseline(&self, key: &KeyRecord) -> Result<Baseline, StoreError> {
        let policy = &self.settings.security;
        let today = self.now.date_naive();
        let cache_key = format!("{BASELINE_CACHE}#{}#{today}", key.spec.id);
        if let Some(doc) = self.store.get_cached(&cache_key, self.now).await? {
            return crate::store::from_doc("baseline", &doc);
        }
        let start = today - Duration::days(policy.baseline_days.into());
        let hours: Vec<HourKey> = start
            .iter_days()
            .take_while(|d| *d < today)
            .flat_map(|d| (0..24).filter_map(move |h| d.and_hms_opt(h, 0, 0).map(|t| t.and_utc())))
            .map(|hour| HourKey {
                scope: key.spec.scope.clone(),
                hour,
            })
            .collect();
        let mut history: BTreeMap<DateTime<Utc>, HourFigures> = self
            .store
            .read_hours(&hours)
            .await?
            .into_iter()
            // an unreadable hour of the history is left out of the medians, not guessed
            .filter(|(k, c)| match &c.unreadable {
                Some(why) => {
                    warn!(key = %key.spec.id, hour = %k.hour, %why, "hour left out of the baseline");
                    false
                }
                None => true,
            })
            .map(|(k, c)| {
                (
                    k.hour,
                    HourFigures::of(&c, policy.currency, &self.settings.rates),
                )
            })
            .collect();
        // the provider's count of the same hours: a baseline of what the key really does
        let mut complete = true;
        let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        if let (Some(source), Some(key_id), Some(from), Some(to)) = (
            self.key_usage
                .iter()
                .find(|s| s.provider() == key.spec.provider),
            &key.spec.key_id,
            midnight(start),
            midnight(today),
        ) {
            match source.hourly(from, to, std::slice::from_ref(key_id)).await {
                Ok(provider) => {
                    for ((_, hour), p) in &provider {
                        history.entry(*hour).or_default().merge_provider(p);
                    }
                }
                Err(e) => {
                    warn!(error = %e, key = %key.spec.id, "baseline learned without the provider's usage");
                    complete = false;
                }
            }
        }
        let mut baseline = Baseline::learn(&history, today, policy.baseline_days);
        if baseline.last_used.is_none() {
            baseline.last_used = self.last_use_before(key, today).await?;
        }
        if !self.dry_run && complete {
            let tomorrow = (today + Duration::days(1))
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc())
                .unwrap_or(self.now);
            self.store
                .put_cached(&cache_key, &crate::store::to_doc(&baseline)?, tomorrow)
                .await?;
        }
        Ok(baseline)
    }

    /// The last day before `today` the key was used, from its UTC month counters of the last
    /// six months (one batched read): a key idle for longer than the baseline's window is
    /// still known to be dormant.
    async fn last_use_before(
        &self,
        key: &KeyRecord,
        today: NaiveDate,
    ) -> Result<Option<NaiveDate>, StoreError> {
        let mut months = Vec::new();
        let mut month = YearMonth::of(today);
        for _ in 0..DORMANCY_LOOKBACK_MONTHS {
            months.push(CounterKey {
                scope: key.spec.scope.clone(),
                zone: Zone::UTC,
                month,
            });
            month = YearMonth::of(month.first_day() - Duration::days(1));
        }
        let counters = self.store.read_counters(&months).await?;
        Ok(counters
            .iter()
            .flat_map(|(k, m)| {
                m.days
                    .iter()
                    .filter(|(_, t)| !t.get(Metric::Records).is_zero())
                    .filter_map(move |(day, _)| k.month.first_day().with_day(*day))
            })
            .filter(|d| *d < today)
            .max())
    }

    /// Suppresses a planned or acknowledged finding; raises the rest once.
    async fn act(&self, finding: &Finding) -> String {
        let policy = &self.settings.security;
        if let Some(w) = policy.planned_for(&finding.key_id, finding.hour) {
            return format!("planned: {}", w.reason);
        }
        let day = finding.hour.date_naive();
        let mut acknowledged = true;
        for s in &finding.signals {
            let id = ack_id(&finding.key_id, s.detector, day);
            match self.store.has_marker(ACK_NAMESPACE, &id, self.now).await {
                Ok(true) => {}
                Ok(false) => acknowledged = false,
                Err(e) => {
                    warn!(error = %e, "acknowledgements unreadable: acting on the finding");
                    acknowledged = false;
                }
            }
        }
        if acknowledged {
            return "acknowledged".into();
        }
        if self.dry_run {
            return "would_publish".into();
        }
        let event = finding.event(self.settings, self.now);
        let claim = Claim::key(
            &finding.key_id,
            &format!(
                "security#{}#{}",
                finding.hour.format("%Y-%m-%dT%H"),
                finding.level.as_str()
            ),
            self.run_id,
            self.lease,
            finding.hour + CLAIM_RETENTION,
        );
        let throttles = event
            .actions
            .iter()
            .any(|a| matches!(a, Action::ReduceLimits { .. }));
        // kept for `spendguard ack` until the day after the finding's
        let kept_until = finding.hour + Duration::days(2);
        let raise = || async {
            let doc = crate::store::to_doc(finding).map_err(|e| e.to_string())?;
            self.store
                .put_cached(
                    &format!("{FINDING_CACHE}#{}", event.alert_id),
                    &doc,
                    kept_until,
                )
                .await
                .map_err(|e| e.to_string())?;
            if throttles {
                let doc = crate::store::to_doc(&event).map_err(|e| e.to_string())?;
                self.store
                    .put_cached(
                        &format!("{THROTTLE_CACHE}#{}", finding.key_id),
                        &doc,
                        finding.hour + Duration::days(7),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
            }
            self.bus.publish(&event).await.map_err(|e| e.to_string())
        };
        match once(self.store, claim, self.now, raise).await {
            Ok(Once::Did(())) => {}
            Ok(Once::Done) => return "already_raised".into(),
            Ok(Once::Busy) => return "held_by_other".into(),
            Err(e) => {
                warn!(error = %e, key = %finding.key_id, "security alert not published");
                return "failed".into();
            }
        }
        let audit = AuditEntry {
            id: uuid::Uuid::new_v4().to_string(),
            at: self.now,
            actor: "budget-check".into(),
            action: "security_finding".into(),
            scope: Some(finding.scope.clone()),
            detail: json!({"alert_id": event.alert_id, "finding": finding}),
        };
        if let Err(e) = self.store.append_audit(&audit).await {
            warn!(error = %e, key = %finding.key_id, "security finding not audited");
        }
        info!(key = %finding.key_id, level = finding.level.as_str(), detectors = ?finding.detectors(), "security finding raised");
        "published".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
