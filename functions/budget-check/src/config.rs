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
    /// Which of the binary's two deployed functions this is (`SPENDGUARD_ROLE`).
    pub role: Role,
}

/// budget-check's binary is deployed twice (ADR 031): the scheduled check, and the roll-up of
/// pending usage on the table's stream, so that stream invocations neither keep the check's
/// dead man's switch green nor take its reserved concurrency. Each refuses the other's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `check` (the default): schedules and manual invokes.
    Check,
    /// `roll-up`: the table's stream and `{"roll_up": "all"}`.
    RollUp,
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
            role: match env.optional("SPENDGUARD_ROLE").as_deref() {
                None | Some("check") => Role::Check,
                Some("roll-up") => Role::RollUp,
                Some(other) => {
                    return Err(EnvError {
                        variable: "SPENDGUARD_ROLE".into(),
                        message: format!("`{other}`: expected `check` or `roll-up`"),
                    });
                }
            },
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
        assert_eq!(c.role, Role::Check);
        let roll_up = config(&[BASE[0], BASE[1], ("SPENDGUARD_ROLE", "roll-up")]).unwrap();
        assert_eq!(roll_up.role, Role::RollUp);
    }

    #[test]
    fn every_bad_variable_is_named() {
        let cases: [(&[(&str, &str)], &str); 7] = [
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
            (
                &[BASE[0], BASE[1], ("SPENDGUARD_ROLE", "rollup")],
                "SPENDGUARD_ROLE",
            ),
        ];
        for (pairs, variable) in cases {
            assert_eq!(config(pairs).unwrap_err().variable, variable);
        }
    }
}
