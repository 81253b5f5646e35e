//! Lambda events -> routes: a Function URL request, or an SNS trigger (the AWS Budgets topic).

use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest;
use chrono::Duration;
use lambda_runtime::Diagnostic;
use serde::Deserialize;
use serde_json::{Value, json};
use spendguard_http::verify::sns::SnsMessage;
use tracing::warn;

use crate::handler::Webhook;
use crate::http::HttpRequest;

/// How old a triggering record may be: Lambda keeps an asynchronous event up to its maximum
/// event age (6 hours, Lambda's default, which the deployment keeps for the webhook), and SNS
/// hands it over within moments of publishing.
const TRIGGER_MAX_AGE: Duration = Duration::hours(7);

/// A record of an SNS trigger: the message with its signature, as SNS signed it.
#[derive(Deserialize)]
struct SnsTrigger {
    #[serde(rename = "Records")]
    records: Vec<SnsRecord>,
}

#[derive(Deserialize)]
struct SnsRecord {
    #[serde(rename = "Sns")]
    sns: SnsMessage,
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    #[error("SNS trigger from topic {0}, which is not in SPENDGUARD_SNS_TOPIC_ARNS")]
    TopicNotAllowed(String),
    #[error("SNS record {message_id} not verified: {reason}")]
    NotVerified { message_id: String, reason: String },
    #[error("cannot record the notification (will be retried): {0}")]
    Store(#[from] spendguard_app::ports::store::StoreError),
}

impl From<EventError> for Diagnostic {
    fn from(e: EventError) -> Diagnostic {
        let error_type = match &e {
            EventError::InvalidEvent(_) => "InvalidEvent",
            EventError::TopicNotAllowed(_) => "TopicNotAllowed",
            EventError::NotVerified { .. } => "SnsNotVerified",
            EventError::Store(_) => "StoreUnavailable",
        };
        Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

fn is_sns_trigger(event: &Value) -> bool {
    event
        .get("Records")
        .and_then(Value::as_array)
        .and_then(|r| r.first())
        .and_then(|r| r.get("EventSource"))
        .and_then(Value::as_str)
        == Some("aws:sns")
}

pub async fn handle(webhook: &Webhook, event: Value) -> Result<Value, EventError> {
    if is_sns_trigger(&event) {
        let event: SnsTrigger =
            serde_json::from_value(event).map_err(|e| EventError::InvalidEvent(e.to_string()))?;
        let Some(sns) = webhook.sns.as_ref() else {
            let topic = event.records.first().map(|r| r.sns.topic_arn.clone());
            return Err(EventError::TopicNotAllowed(topic.unwrap_or_default()));
        };
        // every record first: a batch with one unverified record is refused whole
        for record in &event.records {
            sns.verifier
                .topic_allowed(&record.sns.topic_arn)
                .map_err(|_| EventError::TopicNotAllowed(record.sns.topic_arn.clone()))?;
            // whoever may invoke the function could hand it an SNS-shaped record (finding #20)
            if sns.verify_trigger_signatures {
                let now = webhook.clock.now();
                if let Err(e) = sns
                    .verifier
                    .verify_within(&record.sns, now, TRIGGER_MAX_AGE)
                    .await
                {
                    let message_id: String = record.sns.message_id.chars().take(100).collect();
                    warn!(reason = %e, %message_id, "SNS trigger record refused");
                    return Err(EventError::NotVerified {
                        message_id,
                        reason: e.to_string(),
                    });
                }
            }
        }
        let mut results = Vec::new();
        for record in event.records {
            results.push(
                webhook
                    .sns_notification(
                        &record.sns.message_id,
                        &record.sns.topic_arn,
                        &record.sns.message,
                    )
                    .await?,
            );
        }
        return Ok(json!({ "records": results }));
    }
    if event.get("requestContext").is_some() {
        let request: LambdaFunctionUrlRequest = serde_json::from_value(event)
            .map_err(|e| EventError::InvalidEvent(format!("Function URL event: {e}")))?;
        let response = webhook.http(HttpRequest::from_function_url(request)).await;
        return Ok(response.to_function_url());
    }
    Err(EventError::InvalidEvent(
        "neither a Function URL request nor an SNS trigger".into(),
    ))
}
