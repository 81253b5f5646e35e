//! The stop-path drill: proof, without stopping anything, that every configured stop could be
//! carried out now. Each problem it finds becomes one critical alert per day.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::alert::{
    ALERT_SCHEMA_VERSION, AlertDetails, AlertEvent, AlertKind, DRILL_TIER, alert_id,
};
use crate::budget::{Basis, Severity};
use crate::forecast::Forecast;
use crate::money::{Currency, Money};
use crate::period::{Period, WindowKind, Zone};
use crate::scope::Scope;
use crate::settings::PolicySet;

/// One thing a stop would need and could not have now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillProblem {
    /// What it is about: `key openai-prod`, `admin key anthropic`, `resource openai:project:…`.
    pub subject: String,
    /// The scope whose stop it would fail.
    pub scope: Scope,
    pub problem: String,
    pub fix: String,
}

/// What a drill checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillReport {
    /// Checks made (keys, secrets, provider limits, resources, credentials).
    pub checked: usize,
    pub problems: Vec<DrillProblem>,
}

/// The channels a drill alert goes to: every channel a budget routes its critical or emergency
/// tiers to (the people a failed stop would matter to); without any, every channel defined, and
/// at least the log.
pub fn drill_channels(policy: &PolicySet) -> Vec<String> {
    let mut channels: Vec<String> = policy
        .budgets
        .iter()
        .flat_map(|b| {
            b.windows
                .iter()
                .flat_map(|w| &w.tiers)
                .filter(|t| t.severity >= Severity::Critical)
                .flat_map(|t| b.channels_for(&t.name))
        })
        .collect();
    if channels.is_empty() {
        channels = policy.settings.channels.keys().cloned().collect();
    }
    if channels.is_empty() {
        channels.push("log".into());
    }
    channels.sort();
    channels.dedup();
    channels
}

impl DrillProblem {
    /// The problem's critical alert for the UTC day of `now`: the same problem on the same day
    /// has the same id (one alert), the next day a new one.
    pub fn alert(&self, channels: Vec<String>, now: DateTime<Utc>) -> AlertEvent {
        let day = Period::containing(WindowKind::Daily, Zone::UTC, now);
        // the fix names the kind of problem; the problem's text may carry request ids
        let seed = format!("{}\u{0}{}", self.subject, self.fix);
        self.event(
            alert_id(
                &seed,
                WindowKind::Daily,
                day.start,
                DRILL_TIER,
                Decimal::ZERO,
            ),
            Severity::Critical,
            channels,
            now,
        )
    }

    /// The problem's alert once per `occurrence`, whatever the day (a provider cap changed by
    /// hand: once per change).
    pub fn alert_once(
        &self,
        occurrence: &str,
        severity: Severity,
        channels: Vec<String>,
        now: DateTime<Utc>,
    ) -> AlertEvent {
        let seed = format!("{}\u{0}{occurrence}", self.subject);
        let id = alert_id(
            &seed,
            WindowKind::Daily,
            DateTime::<Utc>::UNIX_EPOCH,
            DRILL_TIER,
            Decimal::ZERO,
        );
        self.event(id, severity, channels, now)
    }

    fn event(
        &self,
        alert_id: String,
        severity: Severity,
        channels: Vec<String>,
        now: DateTime<Utc>,
    ) -> AlertEvent {
        let day = Period::containing(WindowKind::Daily, Zone::UTC, now);
        let zero = Money::zero(Currency::USD);
        AlertEvent {
            schema_version: ALERT_SCHEMA_VERSION,
            alert_id,
            kind: AlertKind::Drill,
            budget_id: "stop-path-drill".into(),
            scope: self.scope.clone(),
            window: WindowKind::Daily,
            period_key: day.key(),
            period_start: day.start,
            period_end: day.end,
            tier: DRILL_TIER.into(),
            severity,
            basis: Basis::Actual,
            spend: zero,
            limit: zero,
            threshold: zero,
            percent: Decimal::ZERO,
            forecast: Forecast::TooEarly,
            actions: Vec::new(),
            channels,
            summary: format!(
                "{}: a stop of {} is not as configured: {}: {}. Fix: {}",
                severity.as_str().to_uppercase(),
                self.scope,
                self.subject,
                self.problem,
                self.fix
            ),
            raised_at: now,
            related_alert_id: None,
            escalation_level: None,
            runbook_url: None,
            details: AlertDetails::Drill {
                subject: self.subject.clone(),
                problem: self.problem.clone(),
                fix: self.fix.clone(),
            },
        }
    }
}
