//! How long usage has waited to be rolled up into its ancestors (ADR 031): the
//! `PendingUsageAge` metric the scheduled check emits every run, which the
//! `<stack>-pending-usage-age` alarm watches. With a healthy stream an item waits about a
//! second; a dead or disabled stream makes every check find items up to one interval old; a
//! backlog larger than one check takes makes it grow.

use chrono::{DateTime, Utc};
use serde_json::json;

/// The metric's name, in the `spendguard` namespace, by `FunctionName` (the check's own,
/// so that two deployments in one account have a series each).
pub const PENDING_USAGE_AGE: &str = "PendingUsageAge";

/// Seconds the oldest pending item found at `now` has waited since it was written; 0 when
/// nothing was pending (and for an item stamped after `now`: a clock ahead elsewhere).
pub fn age_seconds(oldest_pending_since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> i64 {
    oldest_pending_since.map_or(0, |since| (now - since).num_seconds().max(0))
}

/// The CloudWatch Embedded Metric Format line of one check's [`age_seconds`].
pub fn age_emf_line(function: &str, age_seconds: i64, timestamp_ms: i64) -> String {
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": "spendguard",
                "Dimensions": [["FunctionName"]],
                "Metrics": [{"Name": PENDING_USAGE_AGE, "Unit": "Seconds"}],
            }],
        },
        "FunctionName": function,
        PENDING_USAGE_AGE: age_seconds,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn the_age_is_how_long_the_oldest_item_waited_and_zero_without_one() {
        let now = at("2026-12-07T11:34:00Z");
        assert_eq!(age_seconds(Some(at("2026-12-07T11:30:00Z")), now), 240);
        assert_eq!(age_seconds(None, now), 0);
        assert_eq!(age_seconds(Some(at("2026-12-07T11:34:05Z")), now), 0);
    }

    #[test]
    fn the_line_is_one_metric_by_function() {
        let line = age_emf_line("prod-budget-check", 240, 1_796_643_240_000);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "spendguard");
        assert_eq!(directive["Dimensions"], json!([["FunctionName"]]));
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "PendingUsageAge", "Unit": "Seconds"}])
        );
        assert_eq!(v["_aws"]["Timestamp"], 1_796_643_240_000_i64);
        assert_eq!(v["FunctionName"], "prod-budget-check");
        assert_eq!(v["PendingUsageAge"], 240);
    }
}
