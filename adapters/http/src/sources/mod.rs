//! Spend and key usage read from the providers' admin APIs.

pub mod anthropic;
pub mod key_usage;
pub mod openai;

use std::sync::Arc;

use spendguard_app::env::SourcesConfig;
use spendguard_app::ports::key_usage::KeyUsageSource;
use spendguard_app::ports::secrets::{SecretError, SecretVault};
use spendguard_app::ports::sources::SpendSource;
use spendguard_domain::keys::ProviderKind;

use crate::client::HttpSettings;
use crate::sources::anthropic::AnthropicCosts;
use crate::sources::key_usage::ProviderKeyUsage;
use crate::sources::openai::OpenAiCosts;

/// The providers' cost reports where their admin keys are configured (read from the vault once).
pub async fn spend_sources(
    config: &SourcesConfig,
    vault: &dyn SecretVault,
) -> Result<Vec<Arc<dyn SpendSource>>, SecretError> {
    let mut sources: Vec<Arc<dyn SpendSource>> = Vec::new();
    if config.openai_admin_key_arn.is_none() && config.anthropic_admin_key_arn.is_none() {
        return Ok(sources);
    }
    let http = crate::https::client();
    if let Some(arn) = &config.openai_admin_key_arn {
        sources.push(Arc::new(OpenAiCosts::new(
            http.clone(),
            &config.openai_api_url,
            vault.read(arn).await?,
            HttpSettings::default(),
        )));
    }
    if let Some(arn) = &config.anthropic_admin_key_arn {
        sources.push(Arc::new(AnthropicCosts::new(
            http,
            &config.anthropic_api_url,
            vault.read(arn).await?,
            HttpSettings::default(),
        )));
    }
    Ok(sources)
}

/// The providers' usage per key (theft detection) where their admin keys are configured.
pub async fn key_usage_sources(
    config: &SourcesConfig,
    vault: &dyn SecretVault,
) -> Result<Vec<Arc<dyn KeyUsageSource>>, SecretError> {
    let mut out: Vec<Arc<dyn KeyUsageSource>> = Vec::new();
    if config.openai_admin_key_arn.is_none() && config.anthropic_admin_key_arn.is_none() {
        return Ok(out);
    }
    let http = crate::https::client();
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
                vault.read(arn).await?,
                HttpSettings::default(),
            )));
        }
    }
    Ok(out)
}
