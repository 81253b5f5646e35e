//! AlertEvent: what budget-check publishes once per crossing, and fan-out and key-guard consume.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::budget::{Action, Basis, Budget, Severity, Window};
use crate::evaluate::{Crossing, WindowEvaluation};
use crate::forecast::Forecast;
use crate::money::Money;
use crate::period::{Period, WindowKind};
use crate::scope::Scope;

pub const ALERT_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A budget tier was reached.
    Budget,
    /// A paging alert ended: its period is over or the tier is no longer reached.
    Recovery,
    /// A paging alert was not acknowledged in time: the next level is told.
    Escalation,
    /// A scope spent (or called) far above its usual day.
    Anomaly,
    /// The daily spend report.
    Report,
    /// A key behaves as a stolen key does (a spike, a burst, use at odd hours or after idle days).
    Security,
    /// A window of a budget could not be evaluated (an unreadable figure, a currency without a
    /// rate, a renamed AWS budget): nobody would hear of its spend until it is fixed.
    Unevaluable,
}

/// The tier name of an [`AlertKind::Unevaluable`] alert (its claim, open alert and recovery).
pub const UNEVALUABLE_TIER: &str = "budget_unevaluable";

/// A budget crossing, as published to the alerts topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub schema_version: u32,
    /// Stable per (budget, window, period start, tier, threshold): a replay has the same id.
    pub alert_id: String,
    pub kind: AlertKind,
    pub budget_id: String,
    pub scope: Scope,
    pub window: WindowKind,
    pub period_key: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub tier: String,
    pub severity: Severity,
    pub basis: Basis,
    pub spend: Money,
    pub limit: Money,
    pub threshold: Money,
    #[serde(with = "rust_decimal::serde::str")]
    pub percent: Decimal,
    pub forecast: Forecast,
    /// Actions the tier orders (key-guard carries out all but `notify`).
    pub actions: Vec<Action>,
    /// Channels the budget routes this tier to.
    pub channels: Vec<String>,
    pub summary: String,
    pub raised_at: DateTime<Utc>,
    /// For a recovery or an escalation: the alert it follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub related_alert_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation_level: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook_url: Option<String>,
    /// Kind-specific content: the spikes of an anomaly, the figures of a report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// The id of an alert: the same crossing always gets the same id; an edited threshold re-arms.
pub fn alert_id(
    budget_id: &str,
    window: WindowKind,
    period_start: DateTime<Utc>,
    tier: &str,
    threshold: Decimal,
) -> String {
    let mut h = Sha256::new();
    for part in [
        budget_id,
        window.as_str(),
        &period_start.to_rfc3339(),
        tier,
        &threshold.normalize().to_string(),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}

impl AlertEvent {
    pub fn for_crossing(
        budget: &Budget,
        evaluation: &WindowEvaluation,
        crossing: &Crossing,
        raised_at: DateTime<Utc>,
    ) -> AlertEvent {
        let period = &evaluation.period;
        let money = |amount: Decimal| Money::new(amount, budget.currency);
        let tier = &crossing.tier;
        let forecast_text = match evaluation.forecast {
            Forecast::Projected(f) => format!("forecast {}", money(f)),
            Forecast::TooEarly => "too early to forecast".to_string(),
            Forecast::Implausible(f) => format!("forecast {} flagged implausible", money(f)),
        };
        let reached_by = match tier.basis {
            Basis::Actual => "spend".to_string(),
            Basis::Forecast => "forecast".to_string(),
        };
        let summary = format!(
            "{severity}: budget {id} ({scope}) {window} {period}: {reached_by} reached tier {tier} \
             at {threshold}; spent {spend} of {limit} ({percent}%), {forecast_text}",
            severity = tier.severity.as_str().to_uppercase(),
            id = budget.id,
            scope = budget.scope,
            window = evaluation.kind,
            period = period.key(),
            tier = tier.name,
            threshold = money(crossing.threshold),
            spend = money(evaluation.actual),
            limit = money(evaluation.limit),
            percent = evaluation.percent,
        );
        AlertEvent {
            schema_version: ALERT_SCHEMA_VERSION,
            alert_id: alert_id(
                &budget.id,
                evaluation.kind,
                period.start,
                &tier.name,
                crossing.threshold,
            ),
            kind: AlertKind::Budget,
            budget_id: budget.id.clone(),
            scope: budget.scope.clone(),
            window: evaluation.kind,
            period_key: period.key(),
            period_start: period.start,
            period_end: period.end,
            tier: tier.name.clone(),
            severity: tier.severity,
            basis: tier.basis,
            spend: money(evaluation.actual),
            limit: money(evaluation.limit),
            threshold: money(crossing.threshold),
            percent: evaluation.percent,
            forecast: evaluation.forecast,
            actions: tier.actions.clone(),
            channels: budget.channels_for(&tier.name),
            summary,
            raised_at,
            related_alert_id: None,
            escalation_level: None,
            runbook_url: None,
            details: None,
        }
    }

    /// The operator alert for a window of `budget` that cannot be evaluated (`why`), raised
    /// once per budget, window and period and routed to the budget's paging channels.
    pub fn unevaluable(
        budget: &Budget,
        window: &Window,
        period: &Period,
        why: &str,
        raised_at: DateTime<Utc>,
    ) -> AlertEvent {
        let zero = Money::zero(budget.currency);
        let limit = Money::new(window.limit, budget.currency);
        let mut channels: Vec<String> = budget
            .windows
            .iter()
            .flat_map(|w| &w.tiers)
            .filter(|t| t.severity >= Severity::Critical)
            .flat_map(|t| budget.channels_for(&t.name))
            .collect();
        if channels.is_empty() {
            channels = budget.routing.values().flatten().cloned().collect();
        }
        channels.sort();
        channels.dedup();
        let why: String = why.chars().take(400).collect();
        AlertEvent {
            schema_version: ALERT_SCHEMA_VERSION,
            alert_id: alert_id(
                &budget.id,
                window.kind,
                period.start,
                UNEVALUABLE_TIER,
                Decimal::ZERO,
            ),
            kind: AlertKind::Unevaluable,
            budget_id: budget.id.clone(),
            scope: budget.scope.clone(),
            window: window.kind,
            period_key: period.key(),
            period_start: period.start,
            period_end: period.end,
            tier: UNEVALUABLE_TIER.into(),
            severity: Severity::Critical,
            basis: Basis::Actual,
            spend: zero,
            limit,
            threshold: zero,
            percent: Decimal::ZERO,
            forecast: Forecast::TooEarly,
            actions: Vec::new(),
            channels,
            summary: format!(
                "CRITICAL: budget {} ({}) {} {} cannot be evaluated: {why}. Its spend is not watched until this is fixed.",
                budget.id,
                budget.scope,
                window.kind,
                period.key()
            ),
            raised_at,
            related_alert_id: None,
            escalation_level: None,
            runbook_url: None,
            details: Some(serde_json::json!({ "error": why })),
        }
    }

    fn follow_up_id(&self, what: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.alert_id.as_bytes());
        h.update([0u8]);
        h.update(what.as_bytes());
        hex::encode(&h.finalize()[..16])
    }

    /// The recovery of this alert (`reason`: why it ended).
    pub fn recovery(&self, reason: &str, now: DateTime<Utc>) -> AlertEvent {
        AlertEvent {
            alert_id: self.follow_up_id("recovery"),
            kind: AlertKind::Recovery,
            // the actions the alert ordered: key-guard lifts a limit reduction on recovery
            summary: format!(
                "RECOVERED: budget {} ({}) {} {}: tier {} {reason}",
                self.budget_id, self.scope, self.window, self.period_key, self.tier
            ),
            raised_at: now,
            related_alert_id: Some(self.alert_id.clone()),
            escalation_level: None,
            ..self.clone()
        }
    }

    /// Escalation `level` of this alert, to `channels`.
    pub fn escalation(&self, level: u32, channels: Vec<String>, now: DateTime<Utc>) -> AlertEvent {
        AlertEvent {
            alert_id: self.follow_up_id(&format!("escalation-{level}")),
            kind: AlertKind::Escalation,
            channels,
            summary: format!(
                "ESCALATED (level {level}, not acknowledged): {}",
                self.summary
            ),
            raised_at: now,
            related_alert_id: Some(self.alert_id.clone()),
            escalation_level: Some(level),
            ..self.clone()
        }
    }

    /// The alert a delivery is about for deduplication at the receiver (PagerDuty `dedup_key`):
    /// the original alert for its recovery and escalations.
    pub fn incident_key(&self) -> &str {
        self.related_alert_id.as_deref().unwrap_or(&self.alert_id)
    }

    /// Names of the ordered actions, for the SNS `actions` attribute.
    pub fn action_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self.actions.iter().map(Action::name).collect();
        names.dedup();
        names
    }

    /// A short subject line (SNS allows 100 characters).
    pub fn subject(&self) -> String {
        let tail = format!("{} {} {}%", self.budget_id, self.window, self.percent);
        let mut s = match self.kind {
            AlertKind::Budget => format!("[spendguard] {} {tail}", self.severity.as_str()),
            AlertKind::Recovery => format!("[spendguard] recovered {} {tail}", self.severity),
            AlertKind::Escalation => format!(
                "[spendguard] escalated L{} {} {tail}",
                self.escalation_level.unwrap_or(1),
                self.severity
            ),
            AlertKind::Anomaly => format!(
                "[spendguard] anomaly {} {}: {}% of its usual day",
                self.scope,
                self.period_key.trim_start_matches("D#"),
                self.percent
            ),
            AlertKind::Report => format!(
                "[spendguard] daily spend report {}",
                self.period_key.trim_start_matches("D#")
            ),
            AlertKind::Security => format!(
                "[spendguard] security {} {} {}",
                self.tier.trim_start_matches("security-"),
                self.scope,
                self.period_key.trim_start_matches("H#")
            ),
            AlertKind::Unevaluable => format!(
                "[spendguard] cannot evaluate {} {} {}",
                self.budget_id, self.window, self.period_key
            ),
        };
        s.truncate(100);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn alert_id_is_stable_and_distinguishes_its_parts() {
        let start = t("2026-11-01T00:00:00Z");
        let id = alert_id("b", WindowKind::Monthly, start, "warning", dec!(1000));
        assert_eq!(
            id,
            alert_id("b", WindowKind::Monthly, start, "warning", dec!(1000.00))
        );
        assert_eq!(id.len(), 32);
        let others = [
            alert_id("c", WindowKind::Monthly, start, "warning", dec!(1000)),
            alert_id("b", WindowKind::Weekly, start, "warning", dec!(1000)),
            alert_id(
                "b",
                WindowKind::Monthly,
                t("2026-12-01T00:00:00Z"),
                "warning",
                dec!(1000),
            ),
            alert_id("b", WindowKind::Monthly, start, "critical", dec!(1000)),
            alert_id("b", WindowKind::Monthly, start, "warning", dec!(1200)),
        ];
        for other in others {
            assert_ne!(id, other);
        }
    }
}
