//! budget-check configuration, read once at start-up. Secrets are referenced by ARN only.

use spendguard_core::env::{Env, EnvError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The DynamoDB table (`SPENDGUARD_TABLE`).
    pub table: String,
    /// The alerts SNS topic (`SPENDGUARD_ALERTS_TOPIC_ARN`).
    pub alerts_topic_arn: String,
    /// Enables the `aws_budgets` source (`SPENDGUARD_AWS_ACCOUNT_ID`).
    pub aws_account_id: Option<String>,
    /// Enables the `cost_explorer` source: $0.01 per request (`SPENDGUARD_COST_EXPLORER=enabled`).
    pub cost_explorer: bool,
    /// How long a Cost Explorer answer is reused (`SPENDGUARD_COST_EXPLORER_CACHE_HOURS`, default 6).
    pub cost_explorer_cache_hours: i64,
    /// Enables the `openai` source (`SPENDGUARD_OPENAI_ADMIN_KEY_ARN`).
    pub openai_admin_key_arn: Option<String>,
    pub openai_api_url: String,
    /// Enables the `anthropic` source (`SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN`).
    pub anthropic_admin_key_arn: Option<String>,
    pub anthropic_api_url: String,
    /// How long an unfinished alert claim blocks other runs (`SPENDGUARD_CLAIM_LEASE_SECONDS`).
    pub claim_lease_seconds: i64,
}

impl Config {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, EnvError> {
        let config = Config {
            table: env.required("SPENDGUARD_TABLE", "the DynamoDB table name")?,
            alerts_topic_arn: env.required(
                "SPENDGUARD_ALERTS_TOPIC_ARN",
                "the ARN of the alerts SNS topic",
            )?,
            aws_account_id: env.optional("SPENDGUARD_AWS_ACCOUNT_ID"),
            cost_explorer: env.flag("SPENDGUARD_COST_EXPLORER")?,
            cost_explorer_cache_hours: env.parsed("SPENDGUARD_COST_EXPLORER_CACHE_HOURS", 6)?,
            openai_admin_key_arn: env.optional("SPENDGUARD_OPENAI_ADMIN_KEY_ARN"),
            openai_api_url: env.parsed(
                "SPENDGUARD_OPENAI_API_URL",
                "https://api.openai.com".to_string(),
            )?,
            anthropic_admin_key_arn: env.optional("SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN"),
            anthropic_api_url: env.parsed(
                "SPENDGUARD_ANTHROPIC_API_URL",
                "https://api.anthropic.com".to_string(),
            )?,
            claim_lease_seconds: env.parsed("SPENDGUARD_CLAIM_LEASE_SECONDS", 300)?,
        };
        if let Some(id) = &config.aws_account_id
            && (id.len() != 12 || !id.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(EnvError {
                variable: "SPENDGUARD_AWS_ACCOUNT_ID".into(),
                message: format!("`{id}` is not a 12-digit AWS account id"),
            });
        }
        for (name, url) in [
            ("SPENDGUARD_OPENAI_API_URL", &config.openai_api_url),
            ("SPENDGUARD_ANTHROPIC_API_URL", &config.anthropic_api_url),
        ] {
            if !(url.starts_with("https://")
                || url.starts_with("http://127.0.0.1")
                || url.starts_with("http://localhost"))
            {
                return Err(EnvError {
                    variable: name.into(),
                    message: format!(
                        "`{url}` must be an https URL (plain http only for a local stand-in)"
                    ),
                });
            }
        }
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
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, EnvError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_env(&Env(move |k: &str| map.get(k).cloned()))
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
        assert!(!c.cost_explorer && c.openai_admin_key_arn.is_none() && c.aws_account_id.is_none());
        assert_eq!(c.claim_lease_seconds, 300);
    }

    #[test]
    fn every_bad_variable_is_named() {
        let cases: [(&[(&str, &str)], &str); 5] = [
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
        ];
        for (pairs, variable) in cases {
            assert_eq!(config(pairs).unwrap_err().variable, variable);
        }
    }
}
