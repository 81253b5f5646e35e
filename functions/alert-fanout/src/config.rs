//! alert-fanout configuration, read once at start-up. Channel secrets are read by ARN from the
//! settings stored with the budgets, never from the environment.

use std::time::Duration;

use spendguard_app::env::{Env, EnvError};
use spendguard_http::poster::RetryPolicy;

/// The operator topic's ARN (`SPENDGUARD_OPERATOR_TOPIC_ARN`) and the channels its alarms go
/// to (`SPENDGUARD_OPERATOR_CHANNELS`, comma-separated names of the budgets file's channels).
pub const OPERATOR_TOPIC: &str = "SPENDGUARD_OPERATOR_TOPIC_ARN";
pub const OPERATOR_CHANNELS: &str = "SPENDGUARD_OPERATOR_CHANNELS";

/// The optional route of the deployment's own alarms through fan-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorRoute {
    /// Records from this topic are CloudWatch alarm notifications (unsigned).
    pub topic_arn: String,
    pub channels: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The DynamoDB table (`SPENDGUARD_TABLE`).
    pub table: String,
    /// All attempts at one channel stay within this (`SPENDGUARD_DELIVERY_DEADLINE_SECONDS`,
    /// default 20; keep it below the function timeout).
    pub retry: RetryPolicy,
    /// The alert-signing key (`SPENDGUARD_ALERT_SIGNING_KEY_ARN`): alerts published are signed
    /// with it and alerts received must verify under it (none: unsigned, for local runs).
    pub alert_signing_key_arn: Option<String>,
    /// The deployment's alarms, to these channels (none: fan-out takes no alarm).
    pub operator: Option<OperatorRoute>,
}

fn operator_route<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<Option<OperatorRoute>, EnvError> {
    let bad = |variable: &str, message: &str| EnvError {
        variable: variable.into(),
        message: message.into(),
    };
    match (
        env.optional(OPERATOR_TOPIC),
        env.optional(OPERATOR_CHANNELS),
    ) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(bad(
            OPERATOR_CHANNELS,
            "required with SPENDGUARD_OPERATOR_TOPIC_ARN: the channels the alarms go to",
        )),
        (None, Some(_)) => Err(bad(
            OPERATOR_TOPIC,
            "required with SPENDGUARD_OPERATOR_CHANNELS: the topic the alarms come from",
        )),
        (Some(topic_arn), Some(list)) => {
            if !topic_arn.starts_with("arn:") || topic_arn.split(':').count() != 6 {
                return Err(bad(OPERATOR_TOPIC, "not an SNS topic ARN"));
            }
            let channels: Vec<String> = list.split(',').map(|c| c.trim().to_string()).collect();
            if channels.iter().any(|c| {
                c.is_empty()
                    || c.len() > 64
                    || c.chars().any(|ch| ch.is_whitespace() || ch.is_control())
            }) {
                return Err(bad(
                    OPERATOR_CHANNELS,
                    "channel names separated by commas, none empty, at most 64 characters, no spaces",
                ));
            }
            Ok(Some(OperatorRoute {
                topic_arn,
                channels,
            }))
        }
    }
}

impl Config {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, EnvError> {
        let deadline: u64 = env.parsed("SPENDGUARD_DELIVERY_DEADLINE_SECONDS", 20)?;
        if !(2..=600).contains(&deadline) {
            return Err(EnvError {
                variable: "SPENDGUARD_DELIVERY_DEADLINE_SECONDS".into(),
                message: "must be between 2 and 600 seconds".into(),
            });
        }
        Ok(Config {
            table: env.required("SPENDGUARD_TABLE", "the DynamoDB table name")?,
            alert_signing_key_arn: env.optional(spendguard_app::env::ALERT_SIGNING_KEY),
            retry: RetryPolicy {
                deadline: Duration::from_secs(deadline),
                ..RetryPolicy::default()
            },
            operator: operator_route(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spendguard_app::env::env_of;

    const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:spendguard-operator";

    fn route(pairs: &[(&str, &str)]) -> Result<Option<OperatorRoute>, EnvError> {
        let mut all = vec![("SPENDGUARD_TABLE", "t")];
        all.extend_from_slice(pairs);
        Config::from_env(&env_of(&all)).map(|c| c.operator)
    }

    #[test]
    fn the_operator_route_needs_its_topic_and_its_channels() {
        assert_eq!(route(&[]).unwrap(), None);
        assert_eq!(
            route(&[
                (OPERATOR_TOPIC, TOPIC),
                (OPERATOR_CHANNELS, "ops-slack, ops-pagerduty")
            ])
            .unwrap(),
            Some(OperatorRoute {
                topic_arn: TOPIC.into(),
                channels: vec!["ops-slack".into(), "ops-pagerduty".into()],
            })
        );
        let variable = |pairs: &[(&str, &str)]| route(pairs).unwrap_err().variable;
        assert_eq!(variable(&[(OPERATOR_TOPIC, TOPIC)]), OPERATOR_CHANNELS);
        assert_eq!(
            variable(&[(OPERATOR_CHANNELS, "ops-slack")]),
            OPERATOR_TOPIC
        );
        assert_eq!(
            variable(&[(OPERATOR_TOPIC, TOPIC), (OPERATOR_CHANNELS, "ops-slack,,x")]),
            OPERATOR_CHANNELS
        );
        assert_eq!(
            variable(&[
                (OPERATOR_TOPIC, "spendguard-operator"),
                (OPERATOR_CHANNELS, "ops-slack")
            ]),
            OPERATOR_TOPIC
        );
    }
}
