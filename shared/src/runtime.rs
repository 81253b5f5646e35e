//! Adapters built from configuration once per cold start: where a function keeps state and
//! reads secrets ([`Backends`]), and the spend sources of the functions that evaluate budgets
//! (budget-check, budget-webhook).

use std::sync::Arc;

use aws_config::SdkConfig;
use chrono::Duration;

use crate::clock::{Clock, SystemClock};
use crate::env::{Env, EnvError};
use crate::keys::ProviderKind;
use crate::secret::{SecretError, SecretVault, SecretsManagerVault};
use crate::sources::key_usage::{KeyUsageSource, ProviderKeyUsage};
use crate::sources::{
    AnthropicCosts, AwsBudgets, CostExplorer, GcpBudgetObservations, HttpSettings, OpenAiCosts,
    SpendSource, UsageCounters,
};
use crate::store::{DynamoStore, StateStore};

/// Where a function keeps its state, reads its secrets and tells the time. Deployed: DynamoDB,
/// Secrets Manager and the system clock ([`Backends::aws`]); the `spendguard` CLI runs the same
/// handlers on the embedded store with `file:` secrets and, in its demo, a simulated clock.
#[derive(Clone)]
pub struct Backends {
    pub store: Arc<dyn StateStore>,
    pub vault: Arc<dyn SecretVault>,
    pub clock: Arc<dyn Clock>,
}

impl Backends {
    pub fn aws(sdk: &SdkConfig, table: &str) -> Backends {
        Backends {
            store: Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), table)),
            vault: Arc::new(SecretsManagerVault::new(
                aws_sdk_secretsmanager::Client::new(sdk),
            )),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Which spend sources this deployment reads (`usage` and `gcp_budget` always).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcesConfig {
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
}

impl Default for SourcesConfig {
    fn default() -> Self {
        SourcesConfig {
            aws_account_id: None,
            cost_explorer: false,
            cost_explorer_cache_hours: 6,
            openai_admin_key_arn: None,
            openai_api_url: "https://api.openai.com".into(),
            anthropic_admin_key_arn: None,
            anthropic_api_url: "https://api.anthropic.com".into(),
        }
    }
}

/// An https URL, or plain http to a loopback stand-in (tests, local runs).
pub fn check_api_url(variable: &str, url: &str) -> Result<(), EnvError> {
    if url.starts_with("https://")
        || url.starts_with("http://127.0.0.1")
        || url.starts_with("http://localhost")
    {
        Ok(())
    } else {
        Err(EnvError {
            variable: variable.into(),
            message: format!("`{url}` must be an https URL (plain http only for a local stand-in)"),
        })
    }
}

impl SourcesConfig {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, EnvError> {
        let defaults = SourcesConfig::default();
        let config = SourcesConfig {
            aws_account_id: env.optional("SPENDGUARD_AWS_ACCOUNT_ID"),
            cost_explorer: env.flag("SPENDGUARD_COST_EXPLORER")?,
            cost_explorer_cache_hours: env.parsed(
                "SPENDGUARD_COST_EXPLORER_CACHE_HOURS",
                defaults.cost_explorer_cache_hours,
            )?,
            openai_admin_key_arn: env.optional("SPENDGUARD_OPENAI_ADMIN_KEY_ARN"),
            openai_api_url: env.parsed("SPENDGUARD_OPENAI_API_URL", defaults.openai_api_url)?,
            anthropic_admin_key_arn: env.optional("SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN"),
            anthropic_api_url: env
                .parsed("SPENDGUARD_ANTHROPIC_API_URL", defaults.anthropic_api_url)?,
        };
        if let Some(id) = &config.aws_account_id
            && (id.len() != 12 || !id.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(EnvError {
                variable: "SPENDGUARD_AWS_ACCOUNT_ID".into(),
                message: format!("`{id}` is not a 12-digit AWS account id"),
            });
        }
        check_api_url("SPENDGUARD_OPENAI_API_URL", &config.openai_api_url)?;
        check_api_url("SPENDGUARD_ANTHROPIC_API_URL", &config.anthropic_api_url)?;
        if !(1..=48).contains(&config.cost_explorer_cache_hours) {
            return Err(EnvError {
                variable: "SPENDGUARD_COST_EXPLORER_CACHE_HOURS".into(),
                message: "must be between 1 and 48".into(),
            });
        }
        Ok(config)
    }
}

/// The providers' usage per key (theft detection) where their admin keys are configured.
pub async fn key_usage_sources(
    config: &SourcesConfig,
    backends: &Backends,
) -> Result<Vec<Arc<dyn KeyUsageSource>>, SecretError> {
    let http = reqwest::Client::new();
    let mut out: Vec<Arc<dyn KeyUsageSource>> = Vec::new();
    for (provider, arn, url) in [
        (
            ProviderKind::Openai,
            &config.openai_admin_key_arn,
            &config.openai_api_url,
        ),
        (
            ProviderKind::Anthropic,
            &config.anthropic_admin_key_arn,
            &config.anthropic_api_url,
        ),
    ] {
        if let Some(arn) = arn {
            out.push(Arc::new(ProviderKeyUsage::new(
                provider,
                http.clone(),
                url,
                backends.vault.read(arn).await?,
                HttpSettings::default(),
            )));
        }
    }
    Ok(out)
}

/// The spend sources of a deployment; provider admin keys are read from Secrets Manager once.
pub async fn spend_sources(
    config: &SourcesConfig,
    sdk: &SdkConfig,
    backends: &Backends,
) -> Result<Vec<Arc<dyn SpendSource>>, SecretError> {
    let store = backends.store.clone();
    let mut sources: Vec<Arc<dyn SpendSource>> = vec![
        Arc::new(UsageCounters::new(store.clone())),
        Arc::new(GcpBudgetObservations::new(store.clone())),
    ];
    if let Some(account) = &config.aws_account_id {
        sources.push(Arc::new(
            AwsBudgets::new(aws_sdk_budgets::Client::new(sdk), account)
                .with_notifications(store.clone()),
        ));
    }
    if config.cost_explorer {
        sources.push(Arc::new(CostExplorer::new(
            aws_sdk_costexplorer::Client::new(sdk),
            store.clone(),
            Duration::hours(config.cost_explorer_cache_hours),
        )));
    }
    if config.openai_admin_key_arn.is_some() || config.anthropic_admin_key_arn.is_some() {
        let vault = &backends.vault;
        let http = reqwest::Client::new();
        if let Some(arn) = &config.openai_admin_key_arn {
            let key = vault.read(arn).await?;
            sources.push(Arc::new(OpenAiCosts::new(
                http.clone(),
                &config.openai_api_url,
                key,
                HttpSettings::default(),
            )));
        }
        if let Some(arn) = &config.anthropic_admin_key_arn {
            let key = vault.read(arn).await?;
            sources.push(Arc::new(AnthropicCosts::new(
                http,
                &config.anthropic_api_url,
                key,
                HttpSettings::default(),
            )));
        }
    }
    Ok(sources)
}
