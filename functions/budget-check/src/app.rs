//! Builds the checker from configuration: clients once per cold start, secrets read once.

use std::sync::Arc;

use aws_config::SdkConfig;
use chrono::Duration;
use spendguard_core::bus::SnsBus;
use spendguard_core::check::Checker;
use spendguard_core::clock::SystemClock;
use spendguard_core::secret::{SecretError, SecretVault, SecretsManagerVault};
use spendguard_core::sources::{
    AnthropicCosts, AwsBudgets, CostExplorer, GcpBudgetObservations, HttpSettings, OpenAiCosts,
    SpendSource, UsageCounters,
};
use spendguard_core::store::{DynamoStore, StateStore};

use crate::config::Config;

/// Everything `main` needs to serve invocations.
pub async fn checker(config: &Config, sdk: &SdkConfig) -> Result<Checker, SecretError> {
    let store: Arc<dyn StateStore> = Arc::new(DynamoStore::new(
        aws_sdk_dynamodb::Client::new(sdk),
        &config.table,
    ));
    let bus = Arc::new(SnsBus::new(
        aws_sdk_sns::Client::new(sdk),
        &config.alerts_topic_arn,
    ));
    let mut sources: Vec<Arc<dyn SpendSource>> = vec![
        Arc::new(UsageCounters::new(store.clone())),
        Arc::new(GcpBudgetObservations::new(store.clone())),
    ];
    if let Some(account) = &config.aws_account_id {
        sources.push(Arc::new(AwsBudgets::new(
            aws_sdk_budgets::Client::new(sdk),
            account,
        )));
    }
    if config.cost_explorer {
        sources.push(Arc::new(CostExplorer::new(
            aws_sdk_costexplorer::Client::new(sdk),
            store.clone(),
            Duration::hours(config.cost_explorer_cache_hours),
        )));
    }
    if config.openai_admin_key_arn.is_some() || config.anthropic_admin_key_arn.is_some() {
        let vault = SecretsManagerVault::new(aws_sdk_secretsmanager::Client::new(sdk));
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
    Ok(Checker {
        store,
        bus,
        sources,
        clock: Arc::new(SystemClock),
        claim_lease: Duration::seconds(config.claim_lease_seconds),
    })
}
