//! The deployment's own CloudWatch alarms, as their state changes reach the operator topic:
//! parsed strictly (CloudWatch publishes them unsigned, so every field is bounded and checked)
//! and turned into an [`AlertKind::Alarm`] alert for the operator channels. An alarm only
//! notifies: its alert orders no action, whatever it says.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::alert::{
    ALERT_SCHEMA_VERSION, AlarmState, AlertDetails, AlertEvent, AlertKind, alert_id,
};
use crate::budget::{Basis, Severity};
use crate::forecast::Forecast;
use crate::money::{Currency, Money};
use crate::period::{Period, WindowKind, Zone};
use crate::scope::Scope;

/// The tier name of an [`AlertKind::Alarm`] alert.
pub const ALARM_TIER: &str = "deployment_alarm";

/// The `budget_id` an alarm's alert carries (it is about the deployment, not a budget).
pub const ALARM_SOURCE: &str = "deployment";

/// Where each alarm's row of the runbook is (docs/deploy.md, `#alarm-<name>`).
pub const RUNBOOK: &str = "https://github.com/spendguard/spendguard/blob/main/docs/deploy.md";

/// The alarms spendguard deploys, by their name after the stack's (or `name`'s) prefix; each
/// has an anchor `alarm-<name>` in docs/deploy.md.
pub const DEPLOYED_ALARMS: [&str; 17] = [
    "failed-events",
    "budget-check-errors",
    "budget-check-silent",
    "pending-usage-lag",
    "pending-usage-age",
    "alert-fanout-errors",
    "key-guard-errors",
    "budget-webhook-errors",
    "budget-webhook-5xx",
    "daily-aggregate-errors",
    "usage-rollup-errors",
    "budget-check-throttles",
    "alert-fanout-throttles",
    "key-guard-throttles",
    "budget-webhook-throttles",
    "daily-aggregate-throttles",
    "usage-rollup-throttles",
];

/// CloudWatch's limits: a name has at most 255 characters, a description 1,024.
pub const MAX_NAME: usize = 255;
pub const MAX_DESCRIPTION: usize = 1024;
/// The reason is shown up to this many characters (CloudWatch's can be longer).
pub const REASON_SHOWN: usize = 500;
/// SNS's largest message.
pub const MAX_MESSAGE: usize = 256 * 1024;

fn parse_state(field: &'static str, text: &str) -> Result<AlarmState, AlarmError> {
    match text {
        "ALARM" => Ok(AlarmState::Alarm),
        "OK" => Ok(AlarmState::Ok),
        "INSUFFICIENT_DATA" => Ok(AlarmState::InsufficientData),
        other => Err(AlarmError::new(
            field,
            format!(
                "`{}` is not ALARM, OK or INSUFFICIENT_DATA",
                shown(other, 40)
            ),
        )),
    }
}

/// Why a message is not a CloudWatch alarm notification: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {problem}")]
pub struct AlarmError {
    pub field: &'static str,
    pub problem: String,
}

impl AlarmError {
    fn new(field: &'static str, problem: impl Into<String>) -> Self {
        AlarmError {
            field,
            problem: problem.into(),
        }
    }
}

/// One state change of a CloudWatch alarm, as its SNS notification says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmNotification {
    pub name: String,
    pub description: Option<String>,
    pub account: String,
    pub region: String,
    pub state: AlarmState,
    pub previous: Option<AlarmState>,
    /// At most [`REASON_SHOWN`] characters.
    pub reason: String,
    pub changed_at: DateTime<Utc>,
}

/// At most `max` characters of `text`.
fn shown(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn text<'a>(v: &'a Value, field: &'static str) -> Result<&'a str, AlarmError> {
    match v.get(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(AlarmError::new(field, "missing")),
        Some(_) => Err(AlarmError::new(field, "not a string")),
    }
}

fn optional_text<'a>(v: &'a Value, field: &'static str) -> Result<Option<&'a str>, AlarmError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => text(v, field).map(Some),
    }
}

fn bounded<'a>(
    field: &'static str,
    value: &'a str,
    max: usize,
    controls: bool,
) -> Result<&'a str, AlarmError> {
    if value.chars().count() > max {
        return Err(AlarmError::new(
            field,
            format!("longer than {max} characters"),
        ));
    }
    if !controls && value.chars().any(char::is_control) {
        return Err(AlarmError::new(field, "contains control characters"));
    }
    Ok(value)
}

/// CloudWatch writes `2026-11-20T18:04:12.123+0000`; RFC 3339 is taken too.
fn instant(text: &str) -> Result<DateTime<Utc>, AlarmError> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            AlarmError::new(
                "StateChangeTime",
                format!(
                    "`{}` is not a time like 2026-11-20T18:04:12.123+0000",
                    shown(text, 40)
                ),
            )
        })
}

impl AlarmNotification {
    /// Reads a CloudWatch alarm notification (the SNS message's text). Fields this does not
    /// use (`Trigger`, `AlarmArn`, ...) are ignored; those it uses are checked and bounded.
    pub fn parse(message: &str) -> Result<Self, AlarmError> {
        if message.len() > MAX_MESSAGE {
            return Err(AlarmError::new(
                "Message",
                format!("larger than {MAX_MESSAGE} bytes"),
            ));
        }
        let v: Value = serde_json::from_str(message)
            .map_err(|e| AlarmError::new("Message", format!("not JSON: {e}")))?;
        if !v.is_object() {
            return Err(AlarmError::new("Message", "not a JSON object"));
        }
        let name = bounded("AlarmName", text(&v, "AlarmName")?, MAX_NAME, false)?;
        if name.is_empty() {
            return Err(AlarmError::new("AlarmName", "empty"));
        }
        let description = optional_text(&v, "AlarmDescription")?
            .map(|d| bounded("AlarmDescription", d, MAX_DESCRIPTION, true))
            .transpose()?;
        let account = text(&v, "AWSAccountId")?;
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AlarmError::new(
                "AWSAccountId",
                format!("`{}` is not a 12-digit account id", shown(account, 40)),
            ));
        }
        let region = bounded("Region", text(&v, "Region")?, 64, false)?;
        let state = parse_state("NewStateValue", text(&v, "NewStateValue")?)?;
        let previous = optional_text(&v, "OldStateValue")?
            .map(|s| parse_state("OldStateValue", s))
            .transpose()?;
        let reason = shown(text(&v, "NewStateReason")?, REASON_SHOWN);
        let changed_at = instant(text(&v, "StateChangeTime")?)?;
        Ok(AlarmNotification {
            name: name.to_string(),
            description: description.map(str::to_string),
            account: account.to_string(),
            region: region.to_string(),
            state,
            previous,
            reason,
            changed_at,
        })
    }

    /// The alarm's name without its deployment's prefix, when it is one spendguard deploys.
    pub fn deployed_name(&self) -> Option<&'static str> {
        DEPLOYED_ALARMS
            .iter()
            .copied()
            .filter(|suffix| {
                self.name
                    .strip_suffix(suffix)
                    .is_some_and(|prefix| prefix.ends_with('-'))
            })
            .max_by_key(|suffix| suffix.len())
    }

    /// Whether this is one of fan-out's own alarms (its errors or throttles).
    pub fn about_fanout(&self) -> bool {
        self.deployed_name()
            .is_some_and(|name| name.starts_with("alert-fanout-"))
    }

    /// The runbook row of this alarm (docs/deploy.md), for the alarms spendguard deploys.
    pub fn runbook_url(&self) -> Option<String> {
        self.deployed_name()
            .map(|name| format!("{RUNBOOK}#alarm-{name}"))
    }

    /// The incident of this alarm: the same for every state change of the same alarm, so
    /// PagerDuty's `dedup_key` triggers and resolves one incident per alarm.
    pub fn incident_key(&self) -> String {
        alarm_id(&self.name, "incident", DateTime::<Utc>::UNIX_EPOCH)
    }

    /// The alert for this state change, to `channels`. Its id is stable per (alarm, state,
    /// change time): SNS's redeliveries of one notification are delivered once. It orders
    /// nothing.
    pub fn event(&self, channels: Vec<String>) -> AlertEvent {
        let day = Period::containing(WindowKind::Daily, Zone::UTC, self.changed_at);
        let zero = Money::zero(Currency::USD);
        let severity = match self.state {
            AlarmState::Alarm => Severity::Critical,
            AlarmState::InsufficientData => Severity::Warning,
            AlarmState::Ok => Severity::Info,
        };
        let about = self
            .description
            .as_deref()
            .map(|d| format!(" ({})", shown(d, 200)))
            .unwrap_or_default();
        AlertEvent {
            schema_version: ALERT_SCHEMA_VERSION,
            alert_id: alarm_id(&self.name, self.state.as_str(), self.changed_at),
            kind: AlertKind::Alarm,
            budget_id: ALARM_SOURCE.into(),
            scope: Scope::root(),
            window: WindowKind::Daily,
            period_key: day.key(),
            period_start: day.start,
            period_end: day.end,
            tier: ALARM_TIER.into(),
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
                "{}: alarm {}{about}: {}",
                self.state.as_str(),
                self.name,
                self.reason
            ),
            raised_at: self.changed_at,
            related_alert_id: Some(self.incident_key()),
            escalation_level: None,
            runbook_url: self.runbook_url(),
            details: AlertDetails::Alarm {
                alarm: self.name.clone(),
                state: self.state,
                previous: self.previous,
                reason: self.reason.clone(),
                description: self.description.clone(),
                account: self.account.clone(),
                region: self.region.clone(),
                changed_at: self.changed_at,
            },
        }
    }
}

fn alarm_id(name: &str, what: &str, at: DateTime<Utc>) -> String {
    alert_id(
        &format!("alarm\u{0}{name}\u{0}{what}"),
        WindowKind::Daily,
        at,
        ALARM_TIER,
        Decimal::ZERO,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn notification() -> Value {
        json!({
            "AlarmName": "spendguard-alert-fanout-errors",
            "AlarmDescription": "alert-fanout failed: alerts may not be reaching people.",
            "AWSAccountId": "123456789012",
            "AlarmConfigurationUpdatedTimestamp": "2026-11-01T09:00:00.000+0000",
            "NewStateValue": "ALARM",
            "NewStateReason": "Threshold Crossed: 1 out of the last 1 datapoints [2.0 (20/11/26 18:00:00)] was greater than the threshold (0.0) (minimum 1 datapoint for OK -> ALARM transition).",
            "StateChangeTime": "2026-11-20T18:05:12.345+0000",
            "Region": "EU (Ireland)",
            "AlarmArn": "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:spendguard-alert-fanout-errors",
            "OldStateValue": "OK",
            "OKActions": [],
            "AlarmActions": ["arn:aws:sns:eu-west-1:123456789012:spendguard-operator"],
            "InsufficientDataActions": [],
            "Trigger": {"MetricName": "Errors", "Namespace": "AWS/Lambda", "StatisticType": "Statistic",
                        "Statistic": "SUM", "Unit": null,
                        "Dimensions": [{"value": "spendguard-alert-fanout", "name": "FunctionName"}],
                        "Period": 300, "EvaluationPeriods": 1, "ComparisonOperator": "GreaterThanThreshold",
                        "Threshold": 0.0, "TreatMissingData": "notBreaching", "EvaluateLowSampleCountPercentile": ""}
        })
    }

    fn parse(v: &Value) -> Result<AlarmNotification, AlarmError> {
        AlarmNotification::parse(&v.to_string())
    }

    #[test]
    fn a_cloudwatch_notification_is_read() {
        let n = parse(&notification()).unwrap();
        assert_eq!(n.name, "spendguard-alert-fanout-errors");
        assert_eq!(
            (n.state, n.previous),
            (AlarmState::Alarm, Some(AlarmState::Ok))
        );
        assert_eq!(n.changed_at.to_rfc3339(), "2026-11-20T18:05:12.345+00:00");
        assert_eq!(n.deployed_name(), Some("alert-fanout-errors"));
        assert_eq!(
            n.runbook_url().unwrap(),
            format!("{RUNBOOK}#alarm-alert-fanout-errors")
        );
        // a description may be null; the old state absent
        let mut v = notification();
        v["AlarmDescription"] = Value::Null;
        v.as_object_mut().unwrap().remove("OldStateValue");
        let n = parse(&v).unwrap();
        assert_eq!((n.description, n.previous), (None, None));
    }

    #[test]
    fn what_is_not_a_notification_is_refused_naming_the_field() {
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "NewStateValue",
                json!("FIRING"),
                "`NewStateValue`: `FIRING` is not ALARM, OK or INSUFFICIENT_DATA",
            ),
            ("NewStateValue", json!(3), "`NewStateValue`: not a string"),
            (
                "OldStateValue",
                json!("alarm"),
                "`OldStateValue`: `alarm` is not ALARM, OK or INSUFFICIENT_DATA",
            ),
            (
                "AlarmName",
                json!("x".repeat(256)),
                "`AlarmName`: longer than 255 characters",
            ),
            ("AlarmName", json!(""), "`AlarmName`: empty"),
            (
                "AlarmName",
                json!("a\nb"),
                "`AlarmName`: contains control characters",
            ),
            (
                "AlarmDescription",
                json!("d".repeat(1025)),
                "`AlarmDescription`: longer than 1024 characters",
            ),
            (
                "AWSAccountId",
                json!("12345"),
                "`AWSAccountId`: `12345` is not a 12-digit account id",
            ),
            (
                "StateChangeTime",
                json!("yesterday"),
                "`StateChangeTime`: `yesterday` is not a time like 2026-11-20T18:04:12.123+0000",
            ),
            (
                "Region",
                json!("r".repeat(65)),
                "`Region`: longer than 64 characters",
            ),
        ];
        for (field, value, expected) in cases {
            let mut v = notification();
            v[field] = value;
            assert_eq!(parse(&v).unwrap_err().to_string(), expected);
        }
        for field in [
            "AlarmName",
            "AWSAccountId",
            "NewStateValue",
            "NewStateReason",
            "StateChangeTime",
            "Region",
        ] {
            let mut v = notification();
            v.as_object_mut().unwrap().remove(field);
            assert_eq!(
                parse(&v).unwrap_err(),
                AlarmError::new(field, "missing"),
                "{field}"
            );
        }
        assert_eq!(
            AlarmNotification::parse("[1]").unwrap_err().field,
            "Message"
        );
        assert_eq!(
            AlarmNotification::parse("not json").unwrap_err().field,
            "Message"
        );
        let huge = format!("{{\"AlarmName\": \"{}\"}}", "x".repeat(MAX_MESSAGE));
        assert_eq!(
            AlarmNotification::parse(&huge).unwrap_err().field,
            "Message"
        );
    }

    #[test]
    fn an_alertevent_is_not_an_alarm_notification() {
        let wire = json!({"schema_version": 1, "alert_id": "x", "kind": "budget", "actions": ["shutdown"]});
        assert_eq!(
            parse(&wire).unwrap_err(),
            AlarmError::new("AlarmName", "missing")
        );
    }

    #[test]
    fn a_long_unicode_name_makes_a_subject_of_at_most_100_characters() {
        let mut v = notification();
        v["AlarmName"] = json!("ü".repeat(255));
        let subject = parse(&v).unwrap().event(vec![]).subject();
        assert_eq!(subject.chars().count(), 100);
    }

    #[test]
    fn a_long_reason_is_cut_for_display() {
        let mut v = notification();
        v["NewStateReason"] = json!("é".repeat(5000));
        assert_eq!(parse(&v).unwrap().reason.chars().count(), REASON_SHOWN);
    }

    #[test]
    fn each_state_change_is_one_alert_and_each_alarm_one_incident() {
        let firing = parse(&notification()).unwrap();
        let event = firing.event(vec!["ops-slack".into()]);
        assert_eq!(event.kind, AlertKind::Alarm);
        assert_eq!(event.severity, Severity::Critical);
        assert!(event.actions.is_empty());
        assert_eq!(event.channels, ["ops-slack"]);
        // the same notification again (SNS redelivers): the same alert
        assert_eq!(
            event.alert_id,
            parse(&notification()).unwrap().event(vec![]).alert_id
        );
        let mut ok = notification();
        ok["NewStateValue"] = json!("OK");
        ok["OldStateValue"] = json!("ALARM");
        ok["StateChangeTime"] = json!("2026-11-20T18:15:12.345+0000");
        let resolved = parse(&ok).unwrap().event(vec![]);
        assert_eq!(resolved.severity, Severity::Info);
        assert_ne!(resolved.alert_id, event.alert_id);
        assert_eq!(resolved.incident_key(), event.incident_key());
        // the next time it fires is another alert of the same incident
        let mut again = notification();
        again["StateChangeTime"] = json!("2026-11-21T02:00:00.000+0000");
        let again = parse(&again).unwrap().event(vec![]);
        assert_ne!(again.alert_id, event.alert_id);
        assert_eq!(again.incident_key(), event.incident_key());
        let mut other = notification();
        other["AlarmName"] = json!("spendguard-key-guard-errors");
        assert_ne!(
            parse(&other).unwrap().event(vec![]).incident_key(),
            event.incident_key()
        );
        let mut unknown = notification();
        unknown["NewStateValue"] = json!("INSUFFICIENT_DATA");
        assert_eq!(
            parse(&unknown).unwrap().event(vec![]).severity,
            Severity::Warning
        );
    }

    #[test]
    fn an_alarm_alert_orders_nothing_even_if_actions_were_added() {
        let mut event = parse(&notification()).unwrap().event(vec![]);
        event.actions = vec![crate::budget::Action::Shutdown];
        assert!(matches!(
            event.key_order().0,
            crate::alert::KeyOrder::Ignore(_)
        ));
    }

    #[test]
    fn an_alarm_alert_reads_back_as_it_was_written() {
        let event = parse(&notification())
            .unwrap()
            .event(vec!["ops-slack".into()]);
        let wire = serde_json::to_value(&event).unwrap();
        assert_eq!(wire["details"]["state"], "ALARM");
        let back: AlertEvent = serde_json::from_value(wire).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn every_deployed_alarm_has_its_runbook_row_and_only_those() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let deploy = std::fs::read_to_string(format!("{root}/docs/deploy.md")).unwrap();
        let template = std::fs::read_to_string(format!("{root}/template.yaml")).unwrap();
        for name in DEPLOYED_ALARMS {
            assert!(
                deploy.contains(&format!("<a id=\"alarm-{name}\"></a>")),
                "{name}"
            );
            assert!(
                template.contains(&format!("AlarmName: !Sub ${{AWS::StackName}}-{name}\n")),
                "{name}"
            );
        }
        assert_eq!(
            template.matches("AlarmName: !Sub").count(),
            DEPLOYED_ALARMS.len()
        );
        let mut v = notification();
        v["AlarmName"] = json!("my-own-alarm");
        assert_eq!(parse(&v).unwrap().runbook_url(), None);
        v["AlarmName"] = json!("prod-budget-check-errors");
        assert_eq!(
            parse(&v).unwrap().deployed_name(),
            Some("budget-check-errors")
        );
        v["AlarmName"] = json!("budget-check-errors");
        assert_eq!(parse(&v).unwrap().deployed_name(), None);
        // fan-out's own alarms
        for (name, own) in [
            ("spendguard-alert-fanout-errors", true),
            ("prod-alert-fanout-throttles", true),
            ("spendguard-key-guard-errors", false),
            ("alert-fanout-errors", false),
        ] {
            v["AlarmName"] = json!(name);
            assert_eq!(parse(&v).unwrap().about_fanout(), own, "{name}");
        }
    }
}
