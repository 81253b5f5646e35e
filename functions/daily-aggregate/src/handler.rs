//! The nightly schedule, `{"date": "YYYY-MM-DD"}`, or `{"from": ..., "to": ...}` -> summaries.

use chrono::NaiveDate;
use lambda_runtime::Diagnostic;
use serde::Deserialize;
use serde_json::{Value, json};
use spendguard_app::flows::nightly::{Days, Nightly, NightlyError};

#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    #[error(transparent)]
    Nightly(#[from] NightlyError),
}

impl From<AggregateError> for Diagnostic {
    fn from(e: AggregateError) -> Diagnostic {
        let error_type = match &e {
            AggregateError::InvalidEvent(_)
            | AggregateError::Nightly(NightlyError::Backwards(..) | NightlyError::TooLong(_)) => {
                "InvalidEvent"
            }
            AggregateError::Nightly(NightlyError::Store(_)) => "StoreUnavailable",
            AggregateError::Nightly(NightlyError::Publish(_)) => "PublishFailed",
            AggregateError::Nightly(NightlyError::Unreadable(_)) => "CountersUnreadable",
        };
        Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, untagged)]
enum Manual {
    Date { date: NaiveDate },
    Range { from: NaiveDate, to: NaiveDate },
}

/// Maps the event to the days to summarise.
pub fn days_for(event: &Value) -> Result<Days, AggregateError> {
    if event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        || event == &json!({})
    {
        return Ok(Days::Yesterday);
    }
    match serde_json::from_value::<Manual>(event.clone()) {
        Ok(Manual::Date { date }) => Ok(Days::Date(date)),
        Ok(Manual::Range { from, to }) => Ok(Days::Range(from, to)),
        Err(_) => Err(AggregateError::InvalidEvent(
            "expected a scheduled event, {\"date\": \"YYYY-MM-DD\"} or {\"from\": \"YYYY-MM-DD\", \"to\": \"YYYY-MM-DD\"}".into(),
        )),
    }
}

pub async fn handle(nightly: &Nightly, event: Value) -> Result<Value, AggregateError> {
    let days = days_for(&event)?;
    let report = nightly.run(days).await?;
    Ok(json!({ "days": report }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_maps_to_days() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/daily-aggregate");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let event: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let days = days_for(&event).unwrap();
            match path.file_name().unwrap().to_str().unwrap() {
                "scheduled.json" => assert_eq!(days, Days::Yesterday),
                "date.json" => assert!(matches!(days, Days::Date(_))),
                "range.json" => assert!(matches!(days, Days::Range(..))),
                other => panic!("no expectation for {other}"),
            }
            seen += 1;
        }
        assert_eq!(seen, 3);
    }

    #[test]
    fn malformed_requests_are_refused() {
        for bad in [
            json!({"date": "yesterday"}),
            json!({"from": "2026-11-01"}),
            json!({"days": 3}),
        ] {
            assert!(
                matches!(days_for(&bad), Err(AggregateError::InvalidEvent(_))),
                "{bad}"
            );
        }
    }
}
