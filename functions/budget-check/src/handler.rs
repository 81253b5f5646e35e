//! budget-check: an EventBridge schedule or a manual invocation -> one budget check; the
//! table's stream (pending usage items) or `{"roll_up": "all"}` -> a roll-up (ADR 031).

use std::collections::{BTreeMap, HashMap};

use crate::config::Role;
use chrono::{DateTime, Utc};
use lambda_runtime::Diagnostic;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use spendguard_app::flows::check::{CheckError, CheckOptions, CheckReport, Checker};
use spendguard_app::flows::rollup::roll_up_all;
use spendguard_app::ports::store::{StateStore, StoreError};
use spendguard_aws::dynamo::pending_leaf;
use spendguard_domain::scope::Scope;

/// A manual invocation: `{}`, `{"dry_run": true}`, `{"budget_id": "openai-prod"}`. A dry run
/// publishes and records nothing but still rolls pending usage up first (moving spend changes
/// no total, and its figures are then exact); the ended periods that roll-up reached are left
/// to the next scheduled run, as a `budget_id` run leaves them (ADR 031).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManualRequest {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    budget_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    #[error(transparent)]
    Check(#[from] CheckError),
    /// Pending usage could not be rolled up: the stream retries the batch (and sends it to
    /// the failed-events queue when it keeps failing).
    #[error("roll-up failed: {0}")]
    RollUp(StoreError),
    /// The check ran, but some spend could not be read or some alert not published: a retry
    /// may finish it.
    #[error("budget check incomplete (run {run_id}): {}", failures.join("; "))]
    Incomplete {
        run_id: String,
        failures: Vec<String>,
    },
    /// The check ran to the end, but these windows cannot be evaluated (each raised a
    /// `budget_unevaluable` alert): no retry helps until the budget or its data is fixed.
    #[error("windows cannot be evaluated (run {run_id}): {}", windows.join("; "))]
    Unevaluable {
        run_id: String,
        windows: Vec<String>,
    },
}

impl From<HandlerError> for Diagnostic {
    fn from(e: HandlerError) -> Diagnostic {
        let error_type = match &e {
            HandlerError::InvalidEvent(_) => "InvalidEvent",
            HandlerError::Check(CheckError::UnknownBudget(_)) => "UnknownBudget",
            HandlerError::Check(CheckError::Store(s)) if s.is_retryable() => "StoreUnavailable",
            HandlerError::Check(CheckError::Store(_)) => "StoreCorrupt",
            HandlerError::RollUp(s) if s.is_retryable() => "StoreUnavailable",
            HandlerError::RollUp(_) => "StoreCorrupt",
            HandlerError::Incomplete { .. } => "CheckIncomplete",
            HandlerError::Unevaluable { .. } => "BudgetsUnevaluable",
        };
        Diagnostic {
            error_type: error_type.into(),
            error_message: e.to_string(),
        }
    }
}

/// What the deployment's EventBridge Scheduler schedule sends (`template.yaml`, `terraform/`).
pub const SCHEDULER_SOURCE: &str = "spendguard.schedule";

/// Maps the event to check options. A scheduled event checks everything.
pub fn options_for(event: &Value) -> Result<CheckOptions, HandlerError> {
    // EventBridge rules send their envelope; EventBridge Scheduler sends the deployment's input
    let scheduled = (event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
        && event.get("source").and_then(Value::as_str) == Some("aws.events"))
        || event == &serde_json::json!({"source": SCHEDULER_SOURCE});
    if scheduled {
        return Ok(CheckOptions {
            actor: "schedule".into(),
            ..CheckOptions::default()
        });
    }
    let manual: ManualRequest = serde_json::from_value(event.clone()).map_err(|e| {
        HandlerError::InvalidEvent(format!(
            "{e}: expected a scheduled event or {{\"dry_run\": bool, \"budget_id\": string}}"
        ))
    })?;
    Ok(CheckOptions {
        dry_run: manual.dry_run,
        only: manual.budget_id.into_iter().collect(),
        actor: "manual".into(),
        skip_unconfigured_sources: false,
        audit_only_when_acted: false,
        ..CheckOptions::default()
    })
}

/// What a roll-up invocation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolledUp {
    /// The leaves whose pending items were looked at.
    pub leaves: usize,
    /// The pending items moved into their counters.
    pub moved: usize,
    /// The stream records whose leaf could not be rolled up (Lambda's partial batch response:
    /// the mapping retries from the first of them, then sends them to the failed-events
    /// queue), so that one bad leaf does not hold back the others.
    #[serde(rename = "batchItemFailures", skip_serializing_if = "Vec::is_empty")]
    pub batch_item_failures: Vec<BatchItemFailure>,
}

/// A stream record Lambda should deliver again: its sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

/// A DynamoDB stream event (the documented Lambda event shape; only what a roll-up needs).
#[derive(Debug, Deserialize)]
struct StreamEvent {
    #[serde(rename = "Records")]
    records: Vec<StreamRecord>,
}

#[derive(Debug, Deserialize)]
struct StreamRecord {
    #[serde(rename = "eventSource")]
    event_source: String,
    #[serde(rename = "eventName")]
    event_name: String,
    dynamodb: StreamKeys,
}

#[derive(Debug, Deserialize)]
struct StreamKeys {
    #[serde(rename = "Keys")]
    keys: HashMap<String, StringAttribute>,
    #[serde(rename = "SequenceNumber")]
    sequence_number: String,
}

#[derive(Debug, Deserialize)]
struct StringAttribute {
    #[serde(rename = "S")]
    s: Option<String>,
}

/// The leaves a stream batch names, each with the sequence numbers of its records naming it.
/// `None`: not a stream event.
fn leaves_to_roll_up(event: &Value) -> Result<Option<BTreeMap<Scope, Vec<String>>>, HandlerError> {
    if event.get("roll_up").is_some() {
        return Err(HandlerError::InvalidEvent(
            "roll_up: expected \"all\" (a stream batch names its own leaves)".into(),
        ));
    }
    if event.get("Records").is_none() {
        return Ok(None);
    }
    let stream: StreamEvent = serde_json::from_value(event.clone()).map_err(|e| {
        HandlerError::InvalidEvent(format!("{e}: expected a DynamoDB stream event"))
    })?;
    let mut leaves: BTreeMap<Scope, Vec<String>> = BTreeMap::new();
    for (i, record) in stream.records.iter().enumerate() {
        if record.event_source != "aws:dynamodb" {
            return Err(HandlerError::InvalidEvent(format!(
                "Records[{i}].eventSource: `{}` is not aws:dynamodb",
                record.event_source
            )));
        }
        // the event source mapping passes inserts and changes of pending items only; a
        // roll-up's own deletes (REMOVE) need nothing
        if record.event_name == "REMOVE" {
            continue;
        }
        let key = |name: &str| record.dynamodb.keys.get(name).and_then(|a| a.s.as_deref());
        let leaf = key("PK")
            .zip(key("SK"))
            .and_then(|(pk, sk)| pending_leaf(pk, sk));
        match leaf {
            Some(leaf) => leaves
                .entry(leaf)
                .or_default()
                .push(record.dynamodb.sequence_number.clone()),
            None => {
                return Err(HandlerError::InvalidEvent(format!(
                    "Records[{i}].dynamodb.Keys: not a pending usage item (check the event source mapping's filter)"
                )));
            }
        };
    }
    Ok(Some(leaves))
}

/// Rolls up what `event` names, if it is a roll-up event.
pub async fn roll_up(
    store: &dyn StateStore,
    event: &Value,
    now: DateTime<Utc>,
) -> Result<Option<RolledUp>, HandlerError> {
    if event == &serde_json::json!({"roll_up": "all"}) {
        // the manual recovery after a stalled stream: every leaf, a page at a time
        let (leaves, moved) = roll_up_all(store, now)
            .await
            .map_err(HandlerError::RollUp)?;
        tracing::info!(leaves, moved, "pending usage rolled up");
        return Ok(Some(RolledUp {
            leaves,
            moved,
            batch_item_failures: Vec::new(),
        }));
    }
    let Some(leaves) = leaves_to_roll_up(event)? else {
        return Ok(None);
    };
    let all: Vec<Scope> = leaves.keys().cloned().collect();
    let mut batch_item_failures = Vec::new();
    let moved = match store.roll_up(&all, now).await {
        Ok(moved) => moved,
        // leaf by leaf, to tell the failing ones (a roll-up moves each pending item once, so
        // what the first attempt moved is not moved again)
        Err(e) => {
            tracing::warn!(error = %e, "roll-up of the batch failed; leaf by leaf");
            let mut moved = 0;
            for (leaf, records) in &leaves {
                match store.roll_up(std::slice::from_ref(leaf), now).await {
                    Ok(n) => moved += n,
                    Err(e) => {
                        tracing::error!(leaf = %leaf, error = %e, "roll-up failed");
                        batch_item_failures.extend(records.iter().map(|r| BatchItemFailure {
                            item_identifier: r.clone(),
                        }));
                    }
                }
            }
            moved
        }
    };
    tracing::info!(leaves = all.len(), moved, "pending usage rolled up");
    Ok(Some(RolledUp {
        leaves: all.len(),
        moved,
        batch_item_failures,
    }))
}

/// What an invocation answers.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Check(Box<CheckReport>),
    RolledUp(RolledUp),
}

/// Any invocation of the function deployed as `role`: the roll-up function rolls up and
/// refuses anything else; the check refuses stream records (a trigger wired to the wrong
/// function fails visibly) and takes a manual `{"roll_up": "all"}` as well.
pub async fn handle_any(
    checker: &Checker,
    role: Role,
    event: Value,
) -> Result<Answer, HandlerError> {
    if role == Role::Check && event.get("Records").is_some() {
        return Err(HandlerError::InvalidEvent(
            "stream records go to the roll-up function (SPENDGUARD_ROLE=roll-up), not to budget-check: check the event source mapping".into(),
        ));
    }
    let now = checker.clock.now();
    match roll_up(checker.store.as_ref(), &event, now).await? {
        Some(rolled) => Ok(Answer::RolledUp(rolled)),
        None if role == Role::RollUp => Err(HandlerError::InvalidEvent(
            "this function rolls up pending usage (SPENDGUARD_ROLE=roll-up): it takes the table's stream or {\"roll_up\": \"all\"}; a budget check goes to budget-check".into(),
        )),
        None => Ok(Answer::Check(Box::new(handle(checker, event).await?))),
    }
}

pub async fn handle(checker: &Checker, event: Value) -> Result<CheckReport, HandlerError> {
    let options = options_for(&event)?;
    let report = checker.run(&options).await?;
    // A deployment that cannot read a source its budgets use is misconfigured: fail loudly.
    let mut failures = report.failures.clone();
    failures.extend(report.unconfigured.iter().map(|kind| {
        format!(
            "source `{kind}` is used by budgets but not configured (see docs/budgets.md#sources)"
        )
    }));
    if !failures.is_empty() {
        return Err(HandlerError::Incomplete {
            run_id: report.run_id,
            failures,
        });
    }
    if !report.unevaluable.is_empty() {
        return Err(HandlerError::Unevaluable {
            run_id: report.run_id,
            windows: report.unevaluable,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_maps_to_options() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/budget-check");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let event: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let options = options_for(&event).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            match name.as_str() {
                "scheduled.json" | "scheduler.json" => assert_eq!(options.actor, "schedule"),
                "dry-run.json" => assert!(options.dry_run),
                "one-budget.json" => assert_eq!(options.only, ["openai-prod"]),
                other => panic!("fixture {other} has no expectation here"),
            }
            seen += 1;
        }
        assert_eq!(seen, 4);
    }

    #[test]
    fn unknown_fields_are_refused_with_guidance() {
        let err = options_for(&serde_json::json!({"dryrun": true})).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unknown field `dryrun`"), "{text}");
        assert_eq!(Diagnostic::from(err).error_type, "InvalidEvent");
    }

    #[test]
    fn an_empty_object_checks_everything() {
        let o = options_for(&serde_json::json!({})).unwrap();
        assert!(!o.dry_run && o.only.is_empty());
    }
}
