//! budget-check: an EventBridge schedule or a manual invocation -> one budget check.

use lambda_runtime::Diagnostic;
use serde::Deserialize;
use serde_json::Value;
use spendguard_app::flows::check::{CheckError, CheckOptions, CheckReport, Checker};

/// A manual invocation: `{}`, `{"dry_run": true}`, `{"budget_id": "openai-prod"}`.
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
