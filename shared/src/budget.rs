//! Budgets and the settings they are evaluated under, as loaded from a budgets file and stored.

use std::collections::BTreeMap;
use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{Currency, FxRates};
use crate::period::{WindowKind, Zone};
use crate::pricing::PriceBook;
use crate::scope::Scope;

/// A budget: a scope, a currency, and one or more windows with tiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub scope: Scope,
    pub currency: Currency,
    pub zone: Zone,
    pub windows: Vec<Window>,
    pub source: SourceSpec,
    /// Tier name -> channel names, with defaults already applied.
    pub routing: BTreeMap<String, Vec<String>>,
}

impl Budget {
    pub fn window(&self, kind: WindowKind) -> Option<&Window> {
        self.windows.iter().find(|w| w.kind == kind)
    }

    pub fn channels_for(&self, tier: &str) -> Vec<String> {
        self.routing.get(tier).cloned().unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub kind: WindowKind,
    #[serde(with = "rust_decimal::serde::str")]
    pub limit: Decimal,
    pub tiers: Vec<Tier>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    pub name: String,
    pub threshold: Threshold,
    pub basis: Basis,
    pub severity: Severity,
    pub actions: Vec<Action>,
}

impl Tier {
    /// The spend at which this tier is reached, in the budget's currency.
    pub fn threshold_amount(&self, limit: Decimal) -> Decimal {
        match self.threshold {
            Threshold::Percent(p) => limit * p / Decimal::ONE_HUNDRED,
            Threshold::Amount(a) => a,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "value")]
pub enum Threshold {
    /// Percent of the window's limit (`80` = 80 %).
    Percent(#[serde(with = "rust_decimal::serde::str")] Decimal),
    /// An absolute amount in the budget's currency.
    Amount(#[serde(with = "rust_decimal::serde::str")] Decimal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Basis {
    Actual,
    Forecast,
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Basis::Actual => "actual",
            Basis::Forecast => "forecast",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
    Emergency,
}

impl Severity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
            Severity::Emergency => "emergency",
        }
    }

    /// The severity a tier gets from its name when none is given.
    pub fn for_tier_name(name: &str) -> Option<Severity> {
        match name {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            "emergency" => Some(Severity::Emergency),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a tier orders when it is crossed. Key-guard carries out all but `notify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    Notify,
    ReduceLimits {
        #[serde(with = "rust_decimal::serde::str")]
        factor: Decimal,
    },
    DisableKeys,
    /// Rotate the keys under the scope (Secrets Manager rotation, carried out by key-guard).
    RotateKeys,
    Shutdown,
}

impl Action {
    /// The name used in the SNS `actions` message attribute (subscriptions filter on it).
    pub fn name(&self) -> &'static str {
        match self {
            Action::Notify => "notify",
            Action::ReduceLimits { .. } => "reduce_limits",
            Action::DisableKeys => "disable_keys",
            Action::RotateKeys => "rotate_keys",
            Action::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::ReduceLimits { factor } => write!(f, "reduce_limits({factor})"),
            other => f.write_str(other.name()),
        }
    }
}

/// Where a budget's spend comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SourceSpec {
    /// spendguard's own counters, fed by usage reports (rolled up by scope).
    Usage,
    /// An AWS Budgets budget: `CalculatedSpend` actual and forecast.
    AwsBudgets { budget_name: String },
    /// AWS Cost Explorer month-to-date (opt-in: every request costs $0.01), optionally one service.
    CostExplorer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
    },
    /// OpenAI organization costs, optionally one project.
    Openai {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project_id: Option<String>,
    },
    /// Anthropic cost report, optionally one workspace.
    Anthropic {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workspace_id: Option<String>,
    },
    /// A GCP billing budget whose notifications arrive at budget-webhook.
    GcpBudget { budget_id: String },
}

impl SourceSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Usage => "usage",
            SourceSpec::AwsBudgets { .. } => "aws_budgets",
            SourceSpec::CostExplorer { .. } => "cost_explorer",
            SourceSpec::Openai { .. } => "openai",
            SourceSpec::Anthropic { .. } => "anthropic",
            SourceSpec::GcpBudget { .. } => "gcp_budget",
        }
    }

    /// The currency the source reports in, when it is always the same: OpenAI, Anthropic and
    /// Cost Explorer report US dollars; AWS Budgets the unit of a cost budget (US dollars).
    /// Usage records and GCP (the billing account's currency) can report any.
    pub fn reported_currency(&self) -> Option<Currency> {
        match self {
            SourceSpec::Openai { .. }
            | SourceSpec::Anthropic { .. }
            | SourceSpec::CostExplorer { .. }
            | SourceSpec::AwsBudgets { .. } => Some(Currency::USD),
            SourceSpec::Usage | SourceSpec::GcpBudget { .. } => None,
        }
    }
}

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
    pub anomaly: crate::aggregate::AnomalyPolicy,
    #[serde(default)]
    pub security: crate::security::SecurityPolicy,
    #[serde(default)]
    pub shutdown: crate::shutdown::ShutdownPolicy,
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
}
