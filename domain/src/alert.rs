//! AlertEvent: what budget-check publishes once per crossing, and fan-out and key-guard consume.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::budget::{Action, Basis, Budget, Severity, Window};
use crate::daily::{DailyReport, Spike};
use crate::evaluate::{Crossing, WindowEvaluation};
use crate::forecast::Forecast;
use crate::key_hours::{HourFigures, Signal};
use crate::money::Money;
use crate::period::{Period, WindowKind, Zone};
use crate::scope::Scope;
use crate::settings::ThreatLevel;

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
    /// The stop-path drill found a stop that could not be carried out now (a revoked admin key,
    /// a key gone at its provider, a resource not found): once per problem and day.
    Drill,
    /// One of the deployment's own CloudWatch alarms changed state (ALARM, OK,
    /// INSUFFICIENT_DATA), from the operator topic: it notifies the operator channels only.
    Alarm,
}

/// The tier name of an [`AlertKind::Drill`] alert.
pub const DRILL_TIER: &str = "stop_path_drill";

/// The tier name of an [`AlertKind::Unevaluable`] alert (its claim, open alert and recovery).
pub const UNEVALUABLE_TIER: &str = "budget_unevaluable";

/// A CloudWatch alarm's state ([`AlertKind::Alarm`]; parsed in `crate::alarm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlarmState {
    Alarm,
    Ok,
    InsufficientData,
}

impl AlarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Alarm => "ALARM",
            AlarmState::Ok => "OK",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }
}

/// What an alert of each kind carries beyond the fields every alert has. On the wire it is the
/// `details` object (absent for budget alerts, recoveries and escalations); which shape it has
/// follows from `kind`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AlertDetails {
    /// A budget tier: the common fields say it all.
    #[default]
    None,
    Unevaluable {
        error: String,
    },
    /// What the drill could not do, and how to fix it.
    Drill {
        subject: String,
        problem: String,
        fix: String,
    },
    Anomaly {
        spikes: Vec<Spike>,
        zone: Zone,
        /// The provider or cloud source whose day series spiked (`openai`, ...); none for
        /// the app-reported usage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    Report(DailyReport),
    Security {
        key: String,
        level: ThreatLevel,
        hour: DateTime<Utc>,
        figures: HourFigures,
        signals: Vec<Signal>,
    },
    /// A state change of a CloudWatch alarm (`crate::alarm`).
    Alarm {
        alarm: String,
        state: AlarmState,
        #[serde(skip_serializing_if = "Option::is_none")]
        previous: Option<AlarmState>,
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        account: String,
        region: String,
        changed_at: DateTime<Utc>,
    },
}

impl AlertDetails {
    pub fn is_none(&self) -> bool {
        *self == AlertDetails::None
    }

    /// Reads the `details` of an alert of `kind` (absent or null: none).
    pub fn of(kind: AlertKind, details: Option<serde_json::Value>) -> Result<Self, String> {
        let Some(value) = details.filter(|v| !v.is_null()) else {
            return Ok(AlertDetails::None);
        };
        #[derive(Deserialize)]
        struct Unevaluable {
            error: String,
        }
        #[derive(Deserialize)]
        struct Drill {
            subject: String,
            problem: String,
            fix: String,
        }
        #[derive(Deserialize)]
        struct Anomaly {
            spikes: Vec<Spike>,
            zone: Zone,
            #[serde(default)]
            source: Option<String>,
        }
        #[derive(Deserialize)]
        struct Security {
            key: String,
            level: ThreatLevel,
            hour: DateTime<Utc>,
            figures: HourFigures,
            signals: Vec<Signal>,
        }
        #[derive(Deserialize)]
        struct Alarm {
            alarm: String,
            state: AlarmState,
            #[serde(default)]
            previous: Option<AlarmState>,
            reason: String,
            #[serde(default)]
            description: Option<String>,
            account: String,
            region: String,
            changed_at: DateTime<Utc>,
        }
        let bad = |e: serde_json::Error| format!("details of a {kind:?} alert: {e}");
        Ok(match kind {
            AlertKind::Unevaluable => {
                let d: Unevaluable = serde_json::from_value(value).map_err(bad)?;
                AlertDetails::Unevaluable { error: d.error }
            }
            AlertKind::Anomaly => {
                let d: Anomaly = serde_json::from_value(value).map_err(bad)?;
                AlertDetails::Anomaly {
                    spikes: d.spikes,
                    zone: d.zone,
                    source: d.source,
                }
            }
            AlertKind::Report => AlertDetails::Report(serde_json::from_value(value).map_err(bad)?),
            AlertKind::Drill => {
                let d: Drill = serde_json::from_value(value).map_err(bad)?;
                AlertDetails::Drill {
                    subject: d.subject,
                    problem: d.problem,
                    fix: d.fix,
                }
            }
            AlertKind::Security => {
                let d: Security = serde_json::from_value(value).map_err(bad)?;
                AlertDetails::Security {
                    key: d.key,
                    level: d.level,
                    hour: d.hour,
                    figures: d.figures,
                    signals: d.signals,
                }
            }
            AlertKind::Alarm => {
                let d: Alarm = serde_json::from_value(value).map_err(bad)?;
                AlertDetails::Alarm {
                    alarm: d.alarm,
                    state: d.state,
                    previous: d.previous,
                    reason: d.reason,
                    description: d.description,
                    account: d.account,
                    region: d.region,
                    changed_at: d.changed_at,
                }
            }
            AlertKind::Budget => AlertDetails::None,
            // a recovery or an escalation keeps the details of the alert it follows
            AlertKind::Recovery | AlertKind::Escalation => [
                AlertKind::Security,
                AlertKind::Anomaly,
                AlertKind::Unevaluable,
                AlertKind::Report,
            ]
            .into_iter()
            .find_map(|followed| AlertDetails::of(followed, Some(value.clone())).ok())
            .ok_or_else(|| format!("details of a {kind:?} alert match no alert they follow"))?,
        })
    }
}

/// An alert as published to the alerts topic: a budget crossing, its recovery or escalation,
/// an anomaly, the daily report, a security finding, a window that cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireAlertEvent")]
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
    /// For a recovery or an escalation: the alert it follows; for an alarm: the alarm's
    /// incident (one per alarm, whatever its state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub related_alert_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation_level: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runbook_url: Option<String>,
    /// Kind-specific content: the spikes of an anomaly, the figures of a report, a finding's
    /// evidence, why a window cannot be evaluated.
    #[serde(default, skip_serializing_if = "AlertDetails::is_none")]
    pub details: AlertDetails,
}

/// An alert as it arrives, before its `details` are read by its `kind`.
#[derive(Deserialize)]
struct WireAlertEvent {
    schema_version: u32,
    alert_id: String,
    kind: AlertKind,
    budget_id: String,
    scope: Scope,
    window: WindowKind,
    period_key: String,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    tier: String,
    severity: Severity,
    basis: Basis,
    spend: Money,
    limit: Money,
    threshold: Money,
    #[serde(with = "rust_decimal::serde::str")]
    percent: Decimal,
    forecast: Forecast,
    actions: Vec<Action>,
    channels: Vec<String>,
    summary: String,
    raised_at: DateTime<Utc>,
    #[serde(default)]
    related_alert_id: Option<String>,
    #[serde(default)]
    escalation_level: Option<u32>,
    #[serde(default)]
    runbook_url: Option<String>,
    #[serde(default)]
    details: Option<serde_json::Value>,
}

impl TryFrom<WireAlertEvent> for AlertEvent {
    type Error = String;

    fn try_from(w: WireAlertEvent) -> Result<Self, String> {
        Ok(AlertEvent {
            details: AlertDetails::of(w.kind, w.details)?,
            schema_version: w.schema_version,
            alert_id: w.alert_id,
            kind: w.kind,
            budget_id: w.budget_id,
            scope: w.scope,
            window: w.window,
            period_key: w.period_key,
            period_start: w.period_start,
            period_end: w.period_end,
            tier: w.tier,
            severity: w.severity,
            basis: w.basis,
            spend: w.spend,
            limit: w.limit,
            threshold: w.threshold,
            percent: w.percent,
            forecast: w.forecast,
            actions: w.actions,
            channels: w.channels,
            summary: w.summary,
            raised_at: w.raised_at,
            related_alert_id: w.related_alert_id,
            escalation_level: w.escalation_level,
            runbook_url: w.runbook_url,
        })
    }
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
        &window.to_string(),
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
    /// The alert of a crossing, claimed in the crossing's period; `None` for a rolling
    /// crossing an earlier evaluation claimed ([`Crossing::claimed_in`]).
    pub fn for_crossing(
        budget: &Budget,
        evaluation: &WindowEvaluation,
        crossing: &Crossing,
        raised_at: DateTime<Utc>,
    ) -> Option<AlertEvent> {
        let period = crossing.claimed_in.as_ref()?;
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
            period = period.label(),
            tier = tier.name,
            threshold = money(crossing.threshold),
            spend = money(evaluation.actual),
            limit = money(evaluation.limit),
            percent = evaluation.percent,
        );
        Some(AlertEvent {
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
            details: AlertDetails::None,
        })
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
                period.label()
            ),
            raised_at,
            related_alert_id: None,
            escalation_level: None,
            runbook_url: None,
            details: AlertDetails::Unevaluable {
                error: why.to_string(),
            },
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
    /// Whether this alert's period is over at `now`. A rolling crossing's window ends a minute
    /// after it, but the crossing lasts while the tier is reached: its alert has no period to
    /// end and recovers only when an evaluation no longer reaches the tier. (A rolling window
    /// that cannot be evaluated is alerted per UTC hour, which ends.)
    pub fn period_over(&self, now: DateTime<Utc>) -> bool {
        let rolling_crossing =
            self.kind == AlertKind::Budget && matches!(self.window, WindowKind::Rolling { .. });
        !rolling_crossing && now >= self.period_end
    }

    /// Whether an evaluation of the period `period_key` of this alert's window judges its tier:
    /// one of the alert's own period, or for a rolling window the current one.
    pub fn judged_by(&self, period_key: &str) -> bool {
        matches!(self.window, WindowKind::Rolling { .. }) || self.period_key == period_key
    }

    pub fn recovery(&self, reason: &str, now: DateTime<Utc>) -> AlertEvent {
        AlertEvent {
            alert_id: self.follow_up_id("recovery"),
            kind: AlertKind::Recovery,
            // the actions the alert ordered: key-guard lifts a limit reduction on recovery
            summary: format!(
                "RECOVERED: budget {} ({}) {} {}: tier {} {reason}",
                self.budget_id,
                self.scope,
                self.window,
                Period::label_of_key(&self.period_key),
                self.tier
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
            AlertKind::Drill if self.severity >= Severity::Critical => {
                format!(
                    "[spendguard] a stop could not be carried out: {}",
                    self.scope
                )
            }
            AlertKind::Drill => format!("[spendguard] not as configured: {}", self.scope),
            AlertKind::Alarm => match &self.details {
                AlertDetails::Alarm { alarm, state, .. } => {
                    format!("[spendguard] {} {alarm}", state.as_str())
                }
                _ => "[spendguard] alarm".into(),
            },
        };
        // on a character boundary: an alarm's name may be any Unicode
        s.truncate(s.char_indices().nth(100).map_or(s.len(), |(i, _)| i));
        s
    }
}

/// What key-guard does with an alert: the one place that decides which alerts act on keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrder {
    /// Engage the kill switch and stop the keys (and, for a shutdown, the opted-in resources).
    Stop { shutdown: bool },
    /// Lower the limit factor and/or rotate the keys' secrets, keys left running.
    Adjust {
        factor: Option<Decimal>,
        rotate: bool,
    },
    /// A recovery of a tier that lowered the limit factor: raise it back.
    Lift { factor: Decimal },
    /// Nothing for key-guard, and why.
    Ignore(&'static str),
}

impl AlertEvent {
    /// What key-guard does with this alert, and who it records as the actor. Only budget
    /// tiers and security findings order key actions; keys come back only by an operator's
    /// restore.
    pub fn key_order(&self) -> (KeyOrder, &'static str) {
        let factor = self.actions.iter().find_map(|a| match a {
            Action::ReduceLimits { factor } => Some(*factor),
            _ => None,
        });
        let stops = self
            .actions
            .iter()
            .any(|a| matches!(a, Action::DisableKeys | Action::Shutdown));
        let rotate = self.actions.contains(&Action::RotateKeys);
        let actor = match self.kind {
            AlertKind::Security => "security",
            _ => "budget-check",
        };
        let order = match self.kind {
            AlertKind::Budget | AlertKind::Security if stops => KeyOrder::Stop {
                shutdown: self.actions.contains(&Action::Shutdown),
            },
            AlertKind::Budget | AlertKind::Security if factor.is_some() || rotate => {
                KeyOrder::Adjust { factor, rotate }
            }
            AlertKind::Budget | AlertKind::Security => {
                KeyOrder::Ignore("the alert orders nothing key-guard does")
            }
            AlertKind::Recovery => match factor {
                Some(factor) => KeyOrder::Lift { factor },
                None => KeyOrder::Ignore("recovered; keys are restored by an operator"),
            },
            AlertKind::Escalation => KeyOrder::Ignore("escalations do not act"),
            AlertKind::Anomaly | AlertKind::Report | AlertKind::Unevaluable => {
                KeyOrder::Ignore("anomalies, reports and unevaluable windows order no action")
            }
            AlertKind::Drill => KeyOrder::Ignore("the stop-path drill reports, it orders nothing"),
            AlertKind::Alarm => KeyOrder::Ignore("a deployment alarm only notifies"),
        };
        // a recovery lifts what budget-check lowered
        let actor = if matches!(order, KeyOrder::Lift { .. }) {
            "budget-check"
        } else {
            actor
        };
        (order, actor)
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

    /// The alert inside an SNS fixture of events/alert-fanout.
    fn fixture(name: &str) -> serde_json::Value {
        let path = format!(
            "{}/../events/alert-fanout/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let event: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        serde_json::from_str(event["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap()
    }

    #[test]
    fn every_kind_reads_its_own_details_and_writes_them_back_unchanged() {
        for (name, kind) in [
            ("warning", AlertKind::Budget),
            ("recovery", AlertKind::Recovery),
            ("escalation", AlertKind::Escalation),
            ("anomaly", AlertKind::Anomaly),
            ("report", AlertKind::Report),
        ] {
            let wire = fixture(name);
            let event: AlertEvent = serde_json::from_value(wire.clone()).unwrap();
            assert_eq!(event.kind, kind, "{name}");
            let typed_as = match &event.details {
                AlertDetails::None => "none",
                AlertDetails::Anomaly { .. } => "anomaly",
                AlertDetails::Report(_) => "report",
                other => panic!("{name}: {other:?}"),
            };
            let expected = match kind {
                AlertKind::Anomaly => "anomaly",
                AlertKind::Report => "report",
                _ => "none",
            };
            assert_eq!(typed_as, expected, "{name}");
            // the wire is unchanged, key order aside
            assert_eq!(serde_json::to_value(&event).unwrap(), wire, "{name}");
        }
    }

    #[test]
    fn details_that_do_not_fit_their_kind_are_refused_naming_them() {
        let mut wire = fixture("anomaly");
        wire["details"] = serde_json::json!({"spikes": "many", "zone": "UTC"});
        let err = serde_json::from_value::<AlertEvent>(wire)
            .unwrap_err()
            .to_string();
        assert!(err.contains("details of a Anomaly alert"), "{err}");
        let mut wire = fixture("report");
        wire["kind"] = serde_json::json!("security");
        let err = serde_json::from_value::<AlertEvent>(wire)
            .unwrap_err()
            .to_string();
        assert!(err.contains("details of a Security alert"), "{err}");
        // a budget alert carries none, whatever is sent
        let mut wire = fixture("warning");
        wire["details"] = serde_json::json!({"anything": 1});
        let event: AlertEvent = serde_json::from_value(wire).unwrap();
        assert_eq!(event.details, AlertDetails::None);
    }

    #[test]
    fn only_budget_tiers_and_findings_order_key_actions() {
        let base: AlertEvent = serde_json::from_value(fixture("warning")).unwrap();
        let with = |kind: AlertKind, actions: Vec<Action>| AlertEvent {
            kind,
            actions,
            ..base.clone()
        };
        let half = Action::ReduceLimits { factor: dec!(0.5) };
        let cases = [
            (
                with(AlertKind::Budget, vec![Action::Notify, Action::DisableKeys]),
                KeyOrder::Stop { shutdown: false },
                "budget-check",
            ),
            (
                with(AlertKind::Security, vec![Action::Shutdown]),
                KeyOrder::Stop { shutdown: true },
                "security",
            ),
            (
                with(AlertKind::Budget, vec![half, Action::RotateKeys]),
                KeyOrder::Adjust {
                    factor: Some(dec!(0.5)),
                    rotate: true,
                },
                "budget-check",
            ),
            (
                with(AlertKind::Recovery, vec![half]),
                KeyOrder::Lift { factor: dec!(0.5) },
                "budget-check",
            ),
        ];
        for (alert, order, actor) in cases {
            assert_eq!(alert.key_order(), (order, actor), "{:?}", alert.actions);
        }
        for (kind, actions) in [
            (AlertKind::Budget, vec![Action::Notify]),
            (AlertKind::Recovery, vec![Action::DisableKeys]),
            (AlertKind::Escalation, vec![Action::DisableKeys]),
            (AlertKind::Anomaly, vec![Action::DisableKeys]),
            (AlertKind::Unevaluable, vec![Action::Shutdown]),
        ] {
            let (order, _) = with(kind, actions).key_order();
            assert!(matches!(order, KeyOrder::Ignore(_)), "{kind:?}: {order:?}");
        }
    }
}
