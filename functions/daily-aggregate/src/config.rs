//! daily-aggregate configuration, read once at start-up.

use spendguard_app::env::{Env, EnvError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The DynamoDB table (`SPENDGUARD_TABLE`).
    pub table: String,
    /// The alerts SNS topic anomalies and the daily report go to (`SPENDGUARD_ALERTS_TOPIC_ARN`).
    pub alerts_topic_arn: String,
}

impl Config {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, EnvError> {
        Ok(Config {
            table: env.required("SPENDGUARD_TABLE", "the DynamoDB table name")?,
            alerts_topic_arn: env.required(
                "SPENDGUARD_ALERTS_TOPIC_ARN",
                "the ARN of the alerts SNS topic",
            )?,
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
                ("SPENDGUARD_ALERTS_TOPIC_ARN", topic)
            ]),
            Ok(Config {
                table: "spendguard".into(),
                alerts_topic_arn: topic.into(),
            })
        );
        let missing = config(&[("SPENDGUARD_TABLE", "spendguard")]).unwrap_err();
        assert_eq!(missing.variable, "SPENDGUARD_ALERTS_TOPIC_ARN");
        let missing = config(&[("SPENDGUARD_ALERTS_TOPIC_ARN", topic)]).unwrap_err();
        assert_eq!(missing.variable, "SPENDGUARD_TABLE");
    }
}
