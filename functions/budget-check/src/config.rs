//! budget-check configuration, read once at start-up. Secrets are referenced by ARN only.

use spendguard_app::env::SourcesConfig;
use spendguard_app::env::{Env, EnvError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The DynamoDB table (`SPENDGUARD_TABLE`).
    pub table: String,
    /// The alerts SNS topic (`SPENDGUARD_ALERTS_TOPIC_ARN`).
    pub alerts_topic_arn: String,
    pub sources: SourcesConfig,
    /// How long an unfinished alert claim blocks other runs (`SPENDGUARD_CLAIM_LEASE_SECONDS`).
    pub claim_lease_seconds: i64,
    /// The alert-signing key (`SPENDGUARD_ALERT_SIGNING_KEY_ARN`): alerts published are signed
    /// with it and alerts received must verify under it (none: unsigned, for local runs).
    pub alert_signing_key_arn: Option<String>,
}

impl Config {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, EnvError> {
        let config = Config {
            table: env.required("SPENDGUARD_TABLE", "the DynamoDB table name")?,
            alerts_topic_arn: env.required(
                "SPENDGUARD_ALERTS_TOPIC_ARN",
                "the ARN of the alerts SNS topic",
            )?,
            sources: SourcesConfig::from_env(env)?,
            claim_lease_seconds: env.parsed("SPENDGUARD_CLAIM_LEASE_SECONDS", 300)?,
            alert_signing_key_arn: env.optional(spendguard_app::env::ALERT_SIGNING_KEY),
        };
        if !(1..=3600).contains(&config.claim_lease_seconds) {
            return Err(EnvError {
                variable: "SPENDGUARD_CLAIM_LEASE_SECONDS".into(),
                message: "must be between 1 and 3600".into(),
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spendguard_app::env::env_of;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, EnvError> {
        Config::from_env(&env_of(pairs))
    }

    const BASE: [(&str, &str); 2] = [
        ("SPENDGUARD_TABLE", "spendguard"),
        (
            "SPENDGUARD_ALERTS_TOPIC_ARN",
            "arn:aws:sns:eu-west-1:123456789012:alerts",
        ),
    ];

    #[test]
    fn minimal_configuration_has_no_optional_sources() {
        let c = config(&BASE).unwrap();
        assert_eq!(c.table, "spendguard");
        assert_eq!(c.sources, SourcesConfig::default());
        assert_eq!(c.claim_lease_seconds, 300);
    }

    #[test]
    fn every_bad_variable_is_named() {
        let cases: [(&[(&str, &str)], &str); 6] = [
            (
                &[("SPENDGUARD_ALERTS_TOPIC_ARN", "arn")],
                "SPENDGUARD_TABLE",
            ),
            (&[("SPENDGUARD_TABLE", "t")], "SPENDGUARD_ALERTS_TOPIC_ARN"),
            (
                &[BASE[0], BASE[1], ("SPENDGUARD_AWS_ACCOUNT_ID", "12345")],
                "SPENDGUARD_AWS_ACCOUNT_ID",
            ),
            (
                &[BASE[0], BASE[1], ("SPENDGUARD_COST_EXPLORER", "maybe")],
                "SPENDGUARD_COST_EXPLORER",
            ),
            (
                &[
                    BASE[0],
                    BASE[1],
                    ("SPENDGUARD_OPENAI_API_URL", "http://evil.example"),
                ],
                "SPENDGUARD_OPENAI_API_URL",
            ),
            (
                &[BASE[0], BASE[1], ("SPENDGUARD_CLAIM_LEASE_SECONDS", "0")],
                "SPENDGUARD_CLAIM_LEASE_SECONDS",
            ),
        ];
        for (pairs, variable) in cases {
            assert_eq!(config(pairs).unwrap_err().variable, variable);
        }
    }
}
