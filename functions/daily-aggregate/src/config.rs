//! daily-aggregate configuration, read once at start-up.

use spendguard_app::env::{Env, EnvError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The DynamoDB table (`SPENDGUARD_TABLE`).
    pub table: String,
    /// The alerts SNS topic anomalies and the daily report go to (`SPENDGUARD_ALERTS_TOPIC_ARN`).
    pub alerts_topic_arn: String,
    /// The alert-signing key (`SPENDGUARD_ALERT_SIGNING_KEY_ARN`): alerts published are signed
    /// with it and alerts received must verify under it (none: unsigned, for local runs).
    pub alert_signing_key_arn: Option<String>,
}

impl Config {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, EnvError> {
        Ok(Config {
            table: env.required("SPENDGUARD_TABLE", "the DynamoDB table name")?,
            alerts_topic_arn: env.required(
                "SPENDGUARD_ALERTS_TOPIC_ARN",
                "the ARN of the alerts SNS topic",
            )?,
            alert_signing_key_arn: env.optional(spendguard_app::env::ALERT_SIGNING_KEY),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spendguard_app::env::env_of;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, EnvError> {
        Config::from_env(&env_of(pairs))
    }

    #[test]
    fn the_table_and_the_topic_are_required_and_named() {
        let topic = "arn:aws:sns:eu-west-1:123456789012:alerts";
        assert_eq!(
            config(&[
                ("SPENDGUARD_TABLE", "spendguard"),
                ("SPENDGUARD_ALERTS_TOPIC_ARN", topic),
                (
                    "SPENDGUARD_ALERT_SIGNING_KEY_ARN",
                    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:signing"
                )
            ]),
            Ok(Config {
                table: "spendguard".into(),
                alerts_topic_arn: topic.into(),
                alert_signing_key_arn: Some(
                    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:signing".into()
                ),
            })
        );
        let missing = config(&[("SPENDGUARD_TABLE", "spendguard")]).unwrap_err();
        assert_eq!(missing.variable, "SPENDGUARD_ALERTS_TOPIC_ARN");
        let missing = config(&[("SPENDGUARD_ALERTS_TOPIC_ARN", topic)]).unwrap_err();
        assert_eq!(missing.variable, "SPENDGUARD_TABLE");
    }
}
