//! The alert bus on SNS: each AlertEvent published with the attributes the subscriptions filter on.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_sns::types::MessageAttributeValue;
use spendguard_app::ports::bus::AlertBus;
use spendguard_app::ports::bus::BusError;
use spendguard_app::signing::AlertSigning;
use spendguard_domain::alert::AlertEvent;
use spendguard_domain::alert_signature::SIGNATURE_ATTRIBUTE;

/// Publishes to an SNS topic with the attributes subscriptions filter on:
/// `severity` (String), `actions` (String.Array), `kind` and `budget_id` (String), and, when
/// the deployment has an alert-signing key, the message's signature (`spendguard_signature`).
pub struct SnsBus {
    client: aws_sdk_sns::Client,
    topic_arn: String,
    signing: Option<Arc<AlertSigning>>,
}

impl SnsBus {
    pub fn new(client: aws_sdk_sns::Client, topic_arn: impl Into<String>) -> Self {
        SnsBus {
            client,
            topic_arn: topic_arn.into(),
            signing: None,
        }
    }

    /// Signs every message with the deployment's alert-signing key.
    pub fn signed(self, signing: Option<Arc<AlertSigning>>) -> Self {
        SnsBus { signing, ..self }
    }
}

fn attribute(data_type: &str, value: String) -> Result<MessageAttributeValue, BusError> {
    MessageAttributeValue::builder()
        .data_type(data_type)
        .string_value(value)
        .build()
        .map_err(|e| BusError(e.to_string()))
}

#[async_trait]
impl AlertBus for SnsBus {
    async fn publish(&self, event: &AlertEvent) -> Result<(), BusError> {
        let message = serde_json::to_string(event).map_err(|e| BusError(e.to_string()))?;
        let actions =
            serde_json::to_string(&event.action_names()).map_err(|e| BusError(e.to_string()))?;
        let kind = serde_json::to_value(event.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let signature = match &self.signing {
            Some(signing) => Some(
                signing
                    .key()
                    .await
                    .map_err(|e| BusError(format!("not signed, not published: {e}")))?
                    .sign(&message),
            ),
            None => None,
        };
        let mut publish = self
            .client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(event.subject())
            .message(message)
            .message_attributes(
                "severity",
                attribute("String", event.severity.as_str().to_string())?,
            )
            .message_attributes("actions", attribute("String.Array", actions)?)
            .message_attributes("kind", attribute("String", kind)?);
        if let Some(signature) = signature {
            publish =
                publish.message_attributes(SIGNATURE_ATTRIBUTE, attribute("String", signature)?);
        }
        // SNS refuses an empty String attribute (a daily report belongs to no budget)
        if !event.budget_id.is_empty() {
            publish = publish
                .message_attributes("budget_id", attribute("String", event.budget_id.clone())?);
        }
        publish
            .send()
            .await
            .map_err(|e| BusError(aws_sdk_sns::error::DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }
}
