//! Small records the store keeps: spend observations, alert claims, the audit log, kill switches.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::Money;
use crate::period::WindowKind;
use crate::scope::Scope;

/// Spend a source reported for one window of a budget, as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub budget_id: String,
    /// The source kind (`aws_budgets`, `openai`, `gcp_budget`, ...).
    pub source: String,
    pub window: WindowKind,
    /// The period the spend belongs to (`M#2026-11`).
    pub period_key: String,
    pub actual: Money,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Money>,
    pub observed_at: DateTime<Utc>,
}

/// A claim on raising one alert: only one claimant ever publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertClaim {
    pub budget_id: String,
    pub window: WindowKind,
    pub period_key: String,
    pub tier: String,
    pub alert_id: String,
    /// Who holds the claim (one id per check run).
    pub owner: String,
    /// How long a claim that was never finished blocks others (a crashed claimant).
    pub lease: Duration,
    /// When the claim may be forgotten (after its period).
    pub expires_at: DateTime<Utc>,
}

impl AlertClaim {
    /// The claim's key within its budget: window, period, tier and alert id.
    pub fn claim_key(&self) -> String {
        format!(
            "{}#{}#{}#{}",
            self.window, self.period_key, self.tier, self.alert_id
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This claimant won: it must publish, then finish (or release on failure).
    Won,
    /// Already published by someone: nothing to do.
    AlreadyRaised,
    /// Another claimant holds a live lease and may still publish.
    HeldByOther,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: String,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    pub detail: serde_json::Value,
}

/// The state of a kill switch. Applications stop calling when it is not `Open`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum SwitchState {
    Open,
    Engaged {
        reason: String,
        actor: String,
        at: DateTime<Utc>,
    },
    Restoring {
        step: u32,
        since: DateTime<Utc>,
    },
}

/// The kill switch of a scope, with the limit factor applications should honour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitch {
    pub scope: Scope,
    pub state: SwitchState,
    /// 1.0 is normal; 0.1 means "use a tenth of your usual rate".
    #[serde(with = "rust_decimal::serde::str")]
    pub limit_factor: Decimal,
    pub updated_at: DateTime<Utc>,
}

/// A kill switch as stored, with the version used for optimistic concurrency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}
