//! Budgets and the settings they are evaluated under, as loaded from a budgets file and stored.

use std::collections::BTreeMap;
use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::Currency;
use crate::period::{WindowKind, Zone};
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
    /// The provider's own hard spend limit is kept equal to `limit` (monthly OpenAI windows;
    /// `domain::caps`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub provider_cap: bool,
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
