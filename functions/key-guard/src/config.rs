//! key-guard configuration, read once at start-up. Admin keys are read by ARN.

use spendguard_app::env::check_api_url;
use spendguard_app::env::{Env, EnvError};
use spendguard_http::gcp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The DynamoDB table (`SPENDGUARD_TABLE`).
    pub table: String,
    /// Enables Anthropic key administration (`SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN`).
    pub anthropic_admin_key_arn: Option<String>,
    pub anthropic_api_url: String,
    /// Stops also set Anthropic's workspace and organisation spend limits (an early-access
    /// preview of Anthropic's: off unless the organisation has it;
    /// `SPENDGUARD_ANTHROPIC_SPEND_LIMITS`, `true` or `false`).
    pub anthropic_spend_limits: bool,
    /// Enables OpenAI key administration (`SPENDGUARD_OPENAI_ADMIN_KEY_ARN`).
    pub openai_admin_key_arn: Option<String>,
    pub openai_api_url: String,
    /// A Google service-account key file in Secrets Manager, for GCP shutdowns
    /// (`SPENDGUARD_GCP_CREDENTIAL_ARN`).
    pub gcp_credential_arn: Option<String>,
    /// Overrides the key file's `token_uri` (`SPENDGUARD_GCP_TOKEN_URL`).
    pub gcp_token_url: Option<String>,
    pub gcp_billing_api_url: String,
    pub gcp_iam_api_url: String,
    /// The alerts SNS topic the stop-path drill publishes its problems to
    /// (`SPENDGUARD_ALERTS_TOPIC_ARN`; without it the drill only reports).
    pub alerts_topic_arn: Option<String>,
    /// The function's own name (`AWS_LAMBDA_FUNCTION_NAME`, set by Lambda): it and the stack's
    /// other functions are never stopped by a shutdown.
    pub own_function_name: Option<String>,
    /// The alert-signing key (`SPENDGUARD_ALERT_SIGNING_KEY_ARN`): alerts published are signed
    /// with it and alerts received must verify under it (none: unsigned, for local runs).
    pub alert_signing_key_arn: Option<String>,
}

impl Config {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, EnvError> {
        let config = Config {
            table: env.required("SPENDGUARD_TABLE", "the DynamoDB table name")?,
            anthropic_admin_key_arn: env.optional("SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN"),
            anthropic_api_url: env.parsed(
                "SPENDGUARD_ANTHROPIC_API_URL",
                "https://api.anthropic.com".to_string(),
            )?,
            anthropic_spend_limits: env.parsed("SPENDGUARD_ANTHROPIC_SPEND_LIMITS", false)?,
            openai_admin_key_arn: env.optional("SPENDGUARD_OPENAI_ADMIN_KEY_ARN"),
            openai_api_url: env.parsed(
                "SPENDGUARD_OPENAI_API_URL",
                "https://api.openai.com".to_string(),
            )?,
            gcp_credential_arn: env.optional("SPENDGUARD_GCP_CREDENTIAL_ARN"),
            gcp_token_url: env.optional("SPENDGUARD_GCP_TOKEN_URL"),
            gcp_billing_api_url: env.parsed(
                "SPENDGUARD_GCP_BILLING_API_URL",
                gcp::BILLING_API.to_string(),
            )?,
            gcp_iam_api_url: env.parsed("SPENDGUARD_GCP_IAM_API_URL", gcp::IAM_API.to_string())?,
            alerts_topic_arn: env.optional("SPENDGUARD_ALERTS_TOPIC_ARN"),
            own_function_name: env.optional("AWS_LAMBDA_FUNCTION_NAME"),
            alert_signing_key_arn: env.optional(spendguard_app::env::ALERT_SIGNING_KEY),
        };
        check_api_url("SPENDGUARD_ANTHROPIC_API_URL", &config.anthropic_api_url)?;
        check_api_url(
            "SPENDGUARD_GCP_BILLING_API_URL",
            &config.gcp_billing_api_url,
        )?;
        check_api_url("SPENDGUARD_GCP_IAM_API_URL", &config.gcp_iam_api_url)?;
        if let Some(url) = &config.gcp_token_url {
            check_api_url("SPENDGUARD_GCP_TOKEN_URL", url)?;
        }
        check_api_url("SPENDGUARD_OPENAI_API_URL", &config.openai_api_url)?;
        Ok(config)
    }
}
