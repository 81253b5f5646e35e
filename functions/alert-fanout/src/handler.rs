//! The fan-out's events, mapped to its flow (`spendguard_app::flows::fanout`): alerts from SNS
//! go to every routed channel, once; a manual `ack` stops an escalation or marks a finding as
//! expected; the digest schedule sends the digests that are due.

use std::sync::Arc;

use aws_lambda_events::event::sns::SnsEvent;
use lambda_runtime::Diagnostic;
use serde::Deserialize;
use serde_json::{Value, json};
use spendguard_app::flows::fanout::{Acknowledged, Fanout, FanoutError};
use spendguard_app::signing::{Admission, AlertSigning};
use spendguard_domain::alarm::AlarmNotification;
use spendguard_domain::alert::AlertEvent;
use tracing::error;

use crate::config::OperatorRoute;
use spendguard_domain::alert_signature::SIGNATURE_ATTRIBUTE;

#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
enum Manual {
    /// Stops escalation of an open alert; for a security finding, marks its pattern as
    /// expected for the rest of its day (`reason` says why, kept in the audit log).
    Ack {
        alert_id: String,
        actor: String,
        #[serde(default)]
        reason: Option<String>,
    },
    /// Sends the digests that are due.
    FlushDigests,
}

pub struct Handler {
    pub fanout: Fanout,
    /// The deployment's alert-signing key: an alert that does not verify under it is refused,
    /// never delivered (none: alerts are taken unsigned, for local runs).
    pub signing: Option<Arc<AlertSigning>>,
    /// The deployment's alarms from the operator topic, to the operator channels (none: a
    /// record that is an alarm notification is an error).
    pub operator: Option<OperatorRoute>,
}

impl Handler {
    /// The Lambda entry point: SNS alerts (and, from the operator topic, the deployment's
    /// alarms), a manual action, or the digest schedule.
    pub async fn handle(&self, event: Value) -> Result<Value, FanoutError> {
        if event.get("Records").is_some() {
            let sns: SnsEvent = serde_json::from_value(event)
                .map_err(|e| FanoutError::InvalidEvent(e.to_string()))?;
            let mut reports = Vec::new();
            let mut failures = Vec::new();
            let mut refused = Vec::new();
            for record in sns.records {
                let from_operator_topic = self
                    .operator
                    .as_ref()
                    .filter(|route| route.topic_arn == record.sns.topic_arn);
                if let Some(route) = from_operator_topic {
                    // CloudWatch publishes unsigned: the topic is what admits the record, and
                    // all it can be is an alarm notification, which orders nothing
                    let alarm = AlarmNotification::parse(&record.sns.message).map_err(|e| {
                        FanoutError::InvalidEvent(format!(
                            "SNS message {} from the operator topic is not a CloudWatch alarm \
                             notification (that topic carries nothing else): {e}",
                            record.sns.message_id
                        ))
                    })?;
                    let report = self
                        .fanout
                        .deliver(&alarm.event(route.channels.clone()))
                        .await?;
                    let failed = report.failed();
                    // fan-out's own alarms whose delivery fails do not fail the invocation: that
                    // failure would keep fan-out's errors alarm changing state, and each change
                    // would fail again (the operator e-mail reaches people without fan-out)
                    if alarm.about_fanout() && !failed.is_empty() {
                        error!(alarm = %alarm.name, failures = %failed.join("; "),
                            "fan-out's own alarm could not be delivered; not retried (ADR 025)");
                    } else {
                        failures.extend(failed);
                    }
                    reports.push(report);
                    continue;
                }
                if self.operator.is_none() && AlarmNotification::parse(&record.sns.message).is_ok()
                {
                    return Err(FanoutError::InvalidEvent(format!(
                        "SNS message {} from {} is a CloudWatch alarm notification, but fan-out \
                         has no operator route (SPENDGUARD_OPERATOR_TOPIC_ARN, \
                         SPENDGUARD_OPERATOR_CHANNELS: OperatorChannels / operator_channels)",
                        record.sns.message_id, record.sns.topic_arn
                    )));
                }
                if let Some(signing) = &self.signing {
                    let signature = record
                        .sns
                        .message_attributes
                        .get(SIGNATURE_ATTRIBUTE)
                        .map(|a| a.value.as_str());
                    let admission = signing
                        .admit(
                            self.fanout.store.as_ref(),
                            self.fanout.clock.as_ref(),
                            "alert-fanout",
                            &record.sns.message_id,
                            &record.sns.message,
                            signature,
                        )
                        .await?;
                    if let Admission::Refused(why) = admission {
                        refused.push(why);
                        continue;
                    }
                }
                let alert: AlertEvent = serde_json::from_str(&record.sns.message).map_err(|e| {
                    FanoutError::InvalidEvent(format!(
                        "SNS message {} is not an AlertEvent: {e}",
                        record.sns.message_id
                    ))
                })?;
                let report = self.fanout.deliver(&alert).await?;
                failures.extend(report.failed());
                reports.push(report);
            }
            if !failures.is_empty() {
                return Err(FanoutError::DeliveryFailed { failures });
            }
            // a forged alert pages nobody; an error, so the errors alarm and the dead-letter
            // queue show it
            if !refused.is_empty() {
                return Err(FanoutError::Forged(refused));
            }
            return Ok(json!({ "delivered": reports }));
        }
        let scheduled = event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event");
        let manual = if scheduled {
            Manual::FlushDigests
        } else {
            serde_json::from_value(event).map_err(|e| {
                FanoutError::InvalidEvent(format!(
                    "{e}: expected an SNS event, {{\"action\": \"ack\", \"alert_id\", \"actor\"}} or {{\"action\": \"flush_digests\"}}"
                ))
            })?
        };
        match manual {
            Manual::Ack {
                alert_id,
                actor,
                reason,
            } => Ok(
                match self.fanout.acknowledge(&alert_id, &actor, reason).await? {
                    Acknowledged::Alert => json!({ "acknowledged": alert_id, "by": actor }),
                    Acknowledged::AlreadyAcknowledged { by, at } => {
                        json!({ "acknowledged": alert_id, "already_by": by, "at": at })
                    }
                    Acknowledged::Finding { reason } => {
                        json!({ "acknowledged": alert_id, "by": actor, "expected": reason })
                    }
                },
            ),
            Manual::FlushDigests => {
                let sent = self.fanout.flush_digests().await?;
                Ok(json!({ "digests_sent": sent }))
            }
        }
    }
}

/// How Lambda (and the CLI) reports a fan-out error: its type names the kind of failure.
pub fn diagnostic(e: FanoutError) -> Diagnostic {
    let error_type = match &e {
        FanoutError::InvalidEvent(_) => "InvalidEvent",
        FanoutError::UnknownAlert(_) => "UnknownAlert",
        FanoutError::Store(_) => "StoreUnavailable",
        FanoutError::DeliveryFailed { .. } => "DeliveryFailed",
        FanoutError::Signing(_) => "SigningKeyUnavailable",
        FanoutError::Forged(_) => "ForgedAlert",
    };
    Diagnostic {
        error_type: error_type.into(),
        error_message: e.to_string(),
    }
}
