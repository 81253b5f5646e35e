//! alert-fanout configuration, read once at start-up. Channel secrets are read by ARN from the
//! settings stored with the budgets, never from the environment.

use std::time::Duration;

use spendguard_app::env::{Env, EnvError};
use spendguard_http::poster::RetryPolicy;

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
        })
    }
}
