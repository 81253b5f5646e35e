//! The settings of one budgets file: channels, prices, rates, forecasts, escalation, restore,
//! and the policies of the engines (anomalies, theft detection, shutdown). Data only.

use crate::budget::Action;
use crate::budget::Budget;
use crate::budget::Severity;
use crate::money::{Currency, FxRates};
use crate::period::Zone;
use crate::pricing::PriceBook;
use crate::scope::Scope;
use chrono::Duration;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A delivery channel named in routing. Its endpoint or key lives in a secret, never here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSpec {
    pub kind: ChannelKind,
    /// Secrets Manager ARN (deployed) or `file:<path>` (local runs) holding the endpoint / key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Collect warnings to this channel into one digest per this many minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest_minutes: Option<u32>,
}

/// Who is told next when a paging alert (critical, emergency) is not acknowledged in time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationPolicy {
    pub levels: Vec<EscalationLevel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationLevel {
    /// Minutes after the alert was raised.
    pub after_minutes: u32,
    pub channels: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Slack,
    Pagerduty,
    Teams,
    Discord,
    Webhook,
    Email,
    Log,
}

impl ChannelKind {
    pub const NAMES: &'static str = "slack, pagerduty, teams, discord, webhook, email, log";

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "slack" => ChannelKind::Slack,
            "pagerduty" => ChannelKind::Pagerduty,
            "teams" => ChannelKind::Teams,
            "discord" => ChannelKind::Discord,
            "webhook" => ChannelKind::Webhook,
            "email" => ChannelKind::Email,
            "log" => ChannelKind::Log,
            _ => return None,
        })
    }
}

/// Guards that keep a forecast from acting on too little data or on absurd projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForecastPolicy {
    /// A projection made before this share of the period has passed is not acted on.
    #[serde(with = "rust_decimal::serde::str")]
    pub min_elapsed_percent: Decimal,
    /// A projection above this multiple of the limit is flagged as implausible, not acted on.
    #[serde(with = "rust_decimal::serde::str")]
    pub max_multiple_of_limit: Decimal,
    /// Weight (0..=1) of the recent daily rate against the period's average rate.
    #[serde(with = "rust_decimal::serde::str")]
    pub recent_weight: Decimal,
}

impl Default for ForecastPolicy {
    fn default() -> Self {
        ForecastPolicy {
            min_elapsed_percent: Decimal::new(4, 0),
            max_multiple_of_limit: Decimal::new(10, 0),
            recent_weight: Decimal::new(5, 1),
        }
    }
}

/// Settings shared by every budget of one budgets file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelSpec>,
    #[serde(default)]
    pub prices: PriceBook,
    #[serde(default)]
    pub rates: FxRates,
    #[serde(default)]
    pub forecast: ForecastPolicy,
    #[serde(default)]
    pub escalation: EscalationPolicy,
    /// Where on-call finds what to do (linked from every alert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook_url: Option<String>,
    #[serde(default)]
    pub restore: RestorePolicy,
    /// The default routing (tier name -> channels); also routes `anomaly` and `report` alerts.
    #[serde(default)]
    pub routing: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub anomaly: crate::settings::AnomalyPolicy,
    #[serde(default)]
    pub security: crate::settings::SecurityPolicy,
    #[serde(default)]
    pub shutdown: crate::settings::ShutdownPolicy,
}

/// Everything one budgets file defines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySet {
    pub settings: Settings,
    pub budgets: Vec<Budget>,
    /// The keys spendguard may disable and rotate.
    #[serde(default)]
    pub keys: Vec<crate::keys::KeySpec>,
}

/// Most time zones the budgets of one deployment may use, UTC included: a usage record updates
/// its counters once per zone, and all of one record's counters fit one DynamoDB transaction
/// (see `usage::bounds::MAX_SCOPE_DEPTH`).
pub const MAX_COUNTER_ZONES: usize = 8;

/// How a scope comes back after its keys are restored: its limit factor climbs these steps,
/// one per `step_minutes` (advanced by the scheduled checks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePolicy {
    #[serde(with = "decimal_list")]
    pub steps: Vec<Decimal>,
    pub step_minutes: u32,
}

impl Default for RestorePolicy {
    fn default() -> Self {
        RestorePolicy {
            steps: vec![Decimal::new(1, 1), Decimal::new(5, 1), Decimal::ONE],
            step_minutes: 5,
        }
    }
}

mod decimal_list {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[Decimal], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Decimal>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| t.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

impl PolicySet {
    /// Budgets whose source reports a currency no configured rate converts into theirs: their
    /// windows could never be evaluated (`spendguard validate` warns).
    pub fn currency_warnings(&self) -> Vec<String> {
        self.budgets
            .iter()
            .filter_map(|b| {
                let from = b.source.reported_currency()?;
                (!self.settings.rates.can_convert(from, b.currency)).then(|| {
                    format!(
                        "budget `{}` is kept in {} but its source `{}` reports {from}, and no rate converts it: its windows cannot be evaluated; add \"{from}/{}\" to [currency_rates]",
                        b.id,
                        b.currency,
                        b.source.kind(),
                        b.currency
                    )
                })
            })
            .collect()
    }

    /// The time zones usage is counted in: every budget's zone, and UTC (for reports; at most
    /// [`MAX_COUNTER_ZONES`]; the budgets file refuses more).
    pub fn counter_zones(budgets: &[Budget]) -> Vec<Zone> {
        let mut zones: Vec<Zone> = budgets.iter().map(|b| b.zone).collect();
        zones.push(Zone::UTC);
        zones.sort();
        zones.dedup();
        zones
    }

    /// The scopes whose usage is also counted by the minute for their budgets' hourly and
    /// rolling windows (ADR 027).
    pub fn minute_scopes(budgets: &[Budget]) -> std::collections::BTreeSet<crate::scope::Scope> {
        budgets
            .iter()
            .filter(|b| b.windows.iter().any(|w| w.kind.is_sub_daily()))
            .map(|b| b.scope.clone())
            .collect()
    }
}

/// How spikes are found. Defaults (ADR 010): cost 5x, requests 3x, tokens 10x the expected
/// day, with at least 14 days of history, and small absolute floors so noise is not paged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyPolicy {
    #[serde(with = "rust_decimal::serde::str")]
    pub cost_factor: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub requests_factor: Decimal,
    #[serde(with = "rust_decimal::serde::str")]
    pub tokens_factor: Decimal,
    /// Days of history (since the scope's first activity) before it can be anomalous.
    pub min_history_days: u32,
    /// Days the baseline looks back.
    pub baseline_days: u32,
    /// Below this cost (in the cost's currency) a day is never anomalous.
    #[serde(with = "rust_decimal::serde::str")]
    pub min_daily_cost: Decimal,
    /// Below this many requests a day is never anomalous.
    pub min_daily_requests: u64,
}

impl Default for AnomalyPolicy {
    fn default() -> Self {
        AnomalyPolicy {
            cost_factor: Decimal::from(5),
            requests_factor: Decimal::from(3),
            tokens_factor: Decimal::from(10),
            min_history_days: 14,
            baseline_days: 28,
            min_daily_cost: Decimal::ONE,
            min_daily_requests: 100,
        }
    }
}

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
    /// The provider counted far more spend for the key's hour than its applications reported:
    /// a leaked key or an uninstrumented caller.
    UnreportedSpend,
}

impl Detector {
    pub const ALL: [Detector; 5] = [
        Detector::Spike,
        Detector::Burst,
        Detector::OffHours,
        Detector::Dormant,
        Detector::UnreportedSpend,
    ];
    pub const NAMES: &'static str = "spike, burst, off_hours, dormant, unreported_spend";

    pub fn as_str(&self) -> &'static str {
        match self {
            Detector::Spike => "spike",
            Detector::Burst => "burst",
            Detector::OffHours => "off_hours",
            Detector::Dormant => "dormant",
            Detector::UnreportedSpend => "unreported_spend",
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
    pub fn raised(&self) -> ThreatLevel {
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
    /// Hours of the providers' per-key usage re-read at every check: an hour whose usage
    /// arrives late is evaluated when it arrives (ADR 026).
    #[serde(default = "default_provider_lateness_hours")]
    pub provider_lateness_hours: u32,
    /// Provider-reported spend of a key's hour at least this many times what its
    /// applications reported is `unreported_spend`.
    #[serde(
        default = "default_unreported_ratio",
        with = "rust_decimal::serde::str"
    )]
    pub unreported_ratio: Decimal,
    /// Unreported spend below this (in `currency`, per key and hour) is never a finding.
    #[serde(
        default = "default_min_unreported_cost",
        with = "rust_decimal::serde::str"
    )]
    pub min_unreported_cost: Decimal,
    /// Reported spend of a completed day at least this many times what the provider
    /// charged for it is `price_book_drift`.
    #[serde(
        default = "default_price_book_drift_ratio",
        with = "rust_decimal::serde::str"
    )]
    pub price_book_drift_ratio: Decimal,
}

fn default_min_hourly_tokens() -> u64 {
    100_000
}

/// Anthropic: usage "typically within 5 minutes … occasionally longer"; OpenAI gives no
/// figure. Six hours covers both with room (ADR 026).
pub const DEFAULT_PROVIDER_LATENESS_HOURS: u32 = 6;

fn default_provider_lateness_hours() -> u32 {
    DEFAULT_PROVIDER_LATENESS_HOURS
}

fn default_unreported_ratio() -> Decimal {
    Decimal::TWO
}

fn default_min_unreported_cost() -> Decimal {
    Decimal::from(5)
}

fn default_price_book_drift_ratio() -> Decimal {
    Decimal::new(15, 1)
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
                (Detector::UnreportedSpend, ThreatLevel::Medium),
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
            provider_lateness_hours: default_provider_lateness_hours(),
            unreported_ratio: default_unreported_ratio(),
            min_unreported_cost: default_min_unreported_cost(),
            price_book_drift_ratio: default_price_book_drift_ratio(),
        }
    }
}

impl SecurityPolicy {
    pub fn level(&self, detector: Detector) -> ThreatLevel {
        self.levels
            .get(&detector)
            .copied()
            .unwrap_or(ThreatLevel::Medium)
    }

    pub fn planned_for(&self, key_id: &str, hour: DateTime<Utc>) -> Option<&PlannedWindow> {
        let end = hour + Duration::hours(1);
        self.planned
            .iter()
            .find(|w| w.key == key_id && w.from < end && hour < w.to)
    }
}

/// Which resources opt in by name, and where tagged ones are looked for (the budgets file's
/// `[shutdown]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownPolicy {
    /// The AWS regions searched for tagged resources (the tagging API is regional): none named
    /// means key-guard's own region only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// IAM roles that get the deny-all policy (the tagging API cannot list roles); each must
    /// also carry the tag, which names its scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_roles: Vec<String>,
    /// GCP projects, each with its scope and what a shutdown does to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gcp: Vec<GcpProject>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcpProject {
    /// The project id.
    pub project: String,
    pub scope: Scope,
    /// Unlink the project's billing account (stops everything that costs money, free tier too).
    #[serde(default)]
    pub unlink_billing: bool,
    /// Service accounts whose user-managed keys are disabled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
}

/// Most regions `[shutdown] regions` may name: one shutdown searches each (a few calls apiece),
/// and AWS has fewer than this many regions per partition.
pub const MAX_SHUTDOWN_REGIONS: usize = 32;

impl ShutdownPolicy {
    /// Why `name` is not an AWS region name (`us-east-1`, `us-gov-west-1`, `cn-north-1`), if it
    /// is not: two letters, one or two words, a number.
    pub fn region_problem(name: &str) -> Option<String> {
        let parts: Vec<&str> = name.split('-').collect();
        let letters = |p: &&str| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase());
        let valid = (3..=4).contains(&parts.len())
            && parts[0].len() == 2
            && letters(&parts[0])
            && parts[1..parts.len() - 1].iter().all(letters)
            && parts.last().is_some_and(|n| {
                (1..=2).contains(&n.len()) && n.chars().all(|c| c.is_ascii_digit())
            });
        (!valid).then(|| {
            format!("`{name}` is not an AWS region name (like us-east-1 or us-gov-west-1)")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_are_two_letters_one_or_two_words_and_a_number() {
        for good in [
            "us-east-1",
            "eu-west-3",
            "us-gov-west-1",
            "cn-north-1",
            "ap-southeast-12",
            "us-isob-east-1",
        ] {
            assert_eq!(ShutdownPolicy::region_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "us-east",
            "useast-1",
            "US-EAST-1",
            "us-east-1a",
            "u-east-1",
            "us--1",
            "us-a-b-c-1",
            "us-east-123",
            "us-east-1 ",
        ] {
            assert!(ShutdownPolicy::region_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn the_budgets_file_names_the_regions_a_shutdown_searches_once_each() {
        let parse = |regions: &str| {
            crate::budgets_file::parse_budgets(
                "budgets.toml",
                &format!("version = 1\n[shutdown]\nregions = {regions}\n"),
            )
        };
        let policy = parse(r#"["us-east-1", "eu-west-1"]"#).unwrap();
        assert_eq!(policy.settings.shutdown.regions, ["us-east-1", "eu-west-1"]);
        assert!(parse("[]").unwrap().settings.shutdown.regions.is_empty());
        let errors = parse(r#"["us-east-1", "eu-west-1", "us-east-1", "eu_west_1"]"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            errors,
            "budgets.toml:3:38: shutdown.regions: `us-east-1` is named twice\n\
             budgets.toml:3:51: shutdown.regions: `eu_west_1` is not an AWS region name (like us-east-1 or us-gov-west-1)"
        );
        let many: Vec<String> = (1..=33).map(|n| format!("\"eu-west-{n}\"")).collect();
        let errors = parse(&format!("[{}]", many.join(", ")))
            .unwrap_err()
            .to_string();
        assert!(
            errors.contains("shutdown.regions: at most 32 regions"),
            "{errors}"
        );
    }
}
