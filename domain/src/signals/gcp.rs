//! GCP Cloud Billing budget notifications, delivered by Pub/Sub push.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::budgets_file::MAX_AMOUNT;
use crate::money::Currency;
use crate::usage::json_decimal;

/// Largest decoded `data` accepted (real notifications are well under 1 KB).
const MAX_DATA_BYTES: usize = 16 * 1024;

#[derive(Debug, Deserialize)]
pub struct PushEnvelope {
    pub message: PushMessage,
    pub subscription: String,
}

/// Pub/Sub sends some fields twice, in camelCase and snake_case; either may be present.
#[derive(Debug, Deserialize)]
pub struct PushMessage {
    #[serde(default)]
    pub attributes: HashMap<String, String>,
    pub data: String,
    #[serde(rename = "messageId", default)]
    message_id_camel: Option<String>,
    #[serde(rename = "message_id", default)]
    message_id_snake: Option<String>,
    #[serde(rename = "publishTime", default)]
    publish_time_camel: Option<String>,
    #[serde(rename = "publish_time", default)]
    publish_time_snake: Option<String>,
}

impl PushMessage {
    pub fn message_id(&self) -> Option<&str> {
        self.message_id_camel
            .as_deref()
            .or(self.message_id_snake.as_deref())
    }

    pub fn publish_time(&self) -> Option<&str> {
        self.publish_time_camel
            .as_deref()
            .or(self.publish_time_snake.as_deref())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationWire {
    budget_display_name: String,
    cost_amount: Box<RawValue>,
    cost_interval_start: String,
    budget_amount: Box<RawValue>,
    #[serde(rename = "budgetAmountType", default)]
    _budget_amount_type: String,
    currency_code: String,
    #[serde(default)]
    alert_threshold_exceeded: Option<Box<RawValue>>,
    #[serde(default)]
    forecast_threshold_exceeded: Option<Box<RawValue>>,
}

/// A validated budget notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetNotification {
    pub message_id: String,
    /// The Pub/Sub subscription that pushed it (`projects/<p>/subscriptions/<s>`).
    pub subscription: String,
    pub published_at: DateTime<Utc>,
    /// From the `budgetId` attribute: what budgets in spendguard refer to.
    pub budget_id: String,
    pub billing_account_id: Option<String>,
    pub display_name: String,
    pub cost: Decimal,
    pub budget: Decimal,
    pub currency: Currency,
    pub cost_interval_start: DateTime<Utc>,
    /// Fraction of the budget (1.0 = 100 %, 2.0 = 200 %), when an actual threshold was crossed.
    pub alert_threshold: Option<Decimal>,
    /// The same for a forecast threshold.
    pub forecast_threshold: Option<Decimal>,
}

impl BudgetNotification {
    /// A message with a threshold field reports a crossing; one without is an observation.
    pub fn is_crossing(&self) -> bool {
        self.alert_threshold.is_some() || self.forecast_threshold.is_some()
    }

    /// The key a crossing is deduplicated on: (budget, interval, threshold).
    pub fn crossing_key(&self) -> Option<String> {
        self.is_crossing().then(|| {
            format!(
                "{}#{}#{}#{}",
                self.budget_id,
                self.cost_interval_start.timestamp(),
                self.alert_threshold
                    .map(|t| t.normalize().to_string())
                    .unwrap_or_default(),
                self.forecast_threshold
                    .map(|t| t.normalize().to_string())
                    .unwrap_or_default()
            )
        })
    }
}

/// Why a push was refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct NotificationError {
    pub field: &'static str,
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> NotificationError {
    NotificationError {
        field,
        message: message.into(),
    }
}

fn time(field: &'static str, text: &str) -> Result<DateTime<Utc>, NotificationError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| err(field, format!("not an RFC 3339 time: {e}")))
}

/// Largest threshold fraction accepted (100 = 10,000 % of the budget).
const MAX_THRESHOLD: Decimal = Decimal::ONE_HUNDRED;

fn amount(field: &'static str, raw: &RawValue, max: Decimal) -> Result<Decimal, NotificationError> {
    let v = json_decimal(raw).map_err(|m| err(field, m))?;
    if v.is_sign_negative() && !v.is_zero() {
        return Err(err(field, format!("must not be negative (got {v})")));
    }
    if v > max {
        return Err(err(field, format!("must be at most {max} (got {v})")));
    }
    Ok(v)
}

/// Parses a push body: the envelope, then the base64 notification inside it.
pub fn parse_push(body: &[u8]) -> Result<BudgetNotification, NotificationError> {
    let envelope: PushEnvelope = serde_json::from_slice(body)
        .map_err(|e| err("body", format!("not a Pub/Sub push envelope: {e}")))?;
    if envelope.subscription.is_empty() || envelope.subscription.len() > 255 {
        return Err(err("subscription", "must be 1 to 255 characters"));
    }
    let m = envelope.message;
    let message_id = m.message_id().unwrap_or_default().to_string();
    if message_id.is_empty() || message_id.len() > 128 {
        return Err(err("message.messageId", "must be 1 to 128 characters"));
    }
    let publish_time = m
        .publish_time()
        .ok_or_else(|| err("message.publishTime", "missing"))?;
    let budget_id = m
        .attributes
        .get("budgetId")
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .ok_or_else(|| {
            err(
                "message.attributes.budgetId",
                "missing: is this a Cloud Billing budget topic?",
            )
        })?
        .clone();
    if m.data.len() > MAX_DATA_BYTES * 4 / 3 + 4 {
        return Err(err("message.data", "too large for a budget notification"));
    }
    let data = STANDARD
        .decode(m.data.trim())
        .map_err(|_| err("message.data", "not base64"))?;
    let n: NotificationWire = serde_json::from_slice(&data)
        .map_err(|e| err("message.data", format!("not a budget notification: {e}")))?;
    let threshold = |field: &'static str,
                     raw: &Option<Box<RawValue>>|
     -> Result<Option<Decimal>, NotificationError> {
        raw.as_deref()
            .map(|r| amount(field, r, MAX_THRESHOLD))
            .transpose()
    };
    Ok(BudgetNotification {
        subscription: envelope.subscription,
        published_at: time("message.publishTime", publish_time)?,
        message_id,
        billing_account_id: m.attributes.get("billingAccountId").cloned(),
        budget_id,
        display_name: n.budget_display_name,
        cost: amount("costAmount", &n.cost_amount, MAX_AMOUNT)?,
        budget: amount("budgetAmount", &n.budget_amount, MAX_AMOUNT)?,
        currency: Currency::parse(&n.currency_code)
            .map_err(|e| err("currencyCode", e.to_string()))?,
        cost_interval_start: time("costIntervalStart", &n.cost_interval_start)?,
        alert_threshold: threshold("alertThresholdExceeded", &n.alert_threshold_exceeded)?,
        forecast_threshold: threshold("forecastThresholdExceeded", &n.forecast_threshold_exceeded)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub fn push(data: serde_json::Value, attributes: serde_json::Value) -> Vec<u8> {
        json!({
            "message": {
                "attributes": attributes,
                "data": STANDARD.encode(data.to_string()),
                "messageId": "136969346945",
                "publishTime": "2026-11-22T10:00:00.123456789Z"
            },
            "subscription": "projects/p/subscriptions/spendguard"
        })
        .to_string()
        .into_bytes()
    }

    fn attrs() -> serde_json::Value {
        json!({"billingAccountId": "01ABCD-234567-89EFGH", "budgetId": "7c1e2d3f", "schemaVersion": "1.0"})
    }

    #[test]
    fn a_routine_status_message_is_an_observation() {
        let n = parse_push(&push(
            json!({"budgetDisplayName": "data", "costAmount": 140.321, "costIntervalStart": "2026-11-01T00:00:00Z",
                   "budgetAmount": 3000, "budgetAmountType": "SPECIFIED_AMOUNT", "currencyCode": "USD"}),
            attrs(),
        ))
        .unwrap();
        assert!(!n.is_crossing());
        assert_eq!(n.cost.to_string(), "140.321");
        assert_eq!(n.budget_id, "7c1e2d3f");
        assert_eq!(n.crossing_key(), None);
    }

    #[test]
    fn two_point_zero_means_two_hundred_percent() {
        let n = parse_push(
            &push(
                json!({"budgetDisplayName": "data", "alertThresholdExceeded": 2.0, "costAmount": 6001.5, "costIntervalStart": "2026-11-01T00:00:00Z",
                       "budgetAmount": 3000, "budgetAmountType": "SPECIFIED_AMOUNT", "currencyCode": "USD"}),
                attrs(),
            ),
        )
        .unwrap();
        assert!(n.is_crossing());
        assert_eq!(n.alert_threshold.unwrap().to_string(), "2.0");
        assert!(n.crossing_key().unwrap().ends_with("#2#"));
    }

    #[test]
    fn bad_pushes_name_the_field() {
        let good = json!({"budgetDisplayName": "d", "costAmount": 1, "costIntervalStart": "2026-11-01T00:00:00Z",
                          "budgetAmount": 3, "budgetAmountType": "SPECIFIED_AMOUNT", "currencyCode": "USD"});
        let mut negative = good.clone();
        negative["costAmount"] = json!(-5);
        let mut currency = good.clone();
        currency["currencyCode"] = json!("ZZZ");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{".to_vec(), "body"),
            (
                push(good.clone(), json!({"billingAccountId": "x"})),
                "message.attributes.budgetId",
            ),
            (push(negative, attrs()), "costAmount"),
            (push(currency, attrs()), "currencyCode"),
            (push(json!({"hello": 1}), attrs()), "message.data"),
        ];
        for (body, field) in cases {
            assert_eq!(parse_push(&body).unwrap_err().field, field);
        }
    }
}
