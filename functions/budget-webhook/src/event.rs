//! Lambda events -> routes: a Function URL request, or an SNS trigger (the AWS Budgets topic).

use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest;
use aws_lambda_events::event::sns::SnsEvent;
use lambda_runtime::Diagnostic;
use serde_json::{Value, json};

use crate::handler::Webhook;
use crate::http::HttpRequest;

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    #[error("SNS trigger from topic {0}, which is not in SPENDGUARD_SNS_TOPIC_ARNS")]
    TopicNotAllowed(String),
    #[error("cannot record the notification (will be retried): {0}")]
    Store(#[from] spendguard_app::ports::store::StoreError),
}

impl From<EventError> for Diagnostic {
    fn from(e: EventError) -> Diagnostic {
        let error_type = match &e {
            EventError::InvalidEvent(_) => "InvalidEvent",
            EventError::TopicNotAllowed(_) => "TopicNotAllowed",
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
        let event: SnsEvent =
            serde_json::from_value(event).map_err(|e| EventError::InvalidEvent(e.to_string()))?;
        let mut results = Vec::new();
        for record in event.records {
            let allowed = webhook
                .sns
                .as_ref()
                .is_some_and(|s| s.verifier.topic_allowed(&record.sns.topic_arn).is_ok());
            if !allowed {
                return Err(EventError::TopicNotAllowed(record.sns.topic_arn));
            }
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
