//! Provider key administration over HTTP admin APIs (OpenAI, Anthropic).

pub mod anthropic;
pub mod openai;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::OnceCell;

use spendguard_app::env::SourcesConfig;
use spendguard_app::ports::keys::ProviderError;
use spendguard_app::ports::secrets::SecretVault;
use spendguard_app::ports::shutdown::{ShutdownError, ShutdownTarget};
use spendguard_domain::keys::ProviderKind;
use spendguard_domain::resources::{Resource, ResourceKind, ResourceState};
use spendguard_domain::scope::Scope;
use spendguard_domain::secret::Secret;
use spendguard_domain::settings::PolicySet;

/// Maps an HTTP answer of an admin API to a provider error (no body secrets: bodies are cut).
pub(crate) async fn http_error(
    provider: ProviderKind,
    response: reqwest::Response,
) -> ProviderError {
    let status = response.status();
    let body: String = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    if status.as_u16() == 429 || status.is_server_error() {
        ProviderError::Unavailable {
            provider,
            message: format!("HTTP {status}: {body}"),
        }
    } else {
        ProviderError::Refused {
            provider,
            message: format!("HTTP {status}: {body}"),
        }
    }
}

/// The answer when it is a success, else its provider error.
pub(crate) async fn success(
    provider: ProviderKind,
    response: reqwest::Response,
) -> Result<reqwest::Response, ProviderError> {
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(http_error(provider, response).await)
    }
}

pub(crate) fn transport(provider: ProviderKind, e: reqwest::Error) -> ProviderError {
    ProviderError::Unavailable {
        provider,
        message: e.without_url().to_string(),
    }
}

/// The spend limits `provider_cap` windows keep, by kind: one per provider whose admin key the
/// deployment has (the one its costs are read with), each reading the key on first use.
pub fn cap_targets(
    sources: &SourcesConfig,
    vault: &Arc<dyn SecretVault>,
) -> Vec<(ResourceKind, Arc<dyn ShutdownTarget>)> {
    let mut targets: Vec<(ResourceKind, Arc<dyn ShutdownTarget>)> = Vec::new();
    if let Some(arn) = &sources.openai_admin_key_arn {
        targets.push((
            ResourceKind::OpenaiSpendLimit,
            Arc::new(LazySpendLimits::openai(
                vault.clone(),
                arn,
                &sources.openai_api_url,
            )),
        ));
    }
    if let Some(arn) = &sources.anthropic_admin_key_arn {
        targets.push((
            ResourceKind::AnthropicSpendLimit,
            Arc::new(LazySpendLimits::anthropic(
                vault.clone(),
                arn,
                &sources.anthropic_api_url,
            )),
        ));
    }
    targets
}

/// A provider's spend limits with its admin key read on first use, so a cold start that keeps
/// no cap reads no extra secret (budget-check keeps the caps of `provider_cap` windows).
pub struct LazySpendLimits {
    vault: Arc<dyn SecretVault>,
    arn: String,
    base_url: String,
    build: fn(String, Secret) -> Arc<dyn ShutdownTarget>,
    limits: OnceCell<Arc<dyn ShutdownTarget>>,
}

impl LazySpendLimits {
    fn lazy(
        vault: Arc<dyn SecretVault>,
        arn: &str,
        base_url: &str,
        build: fn(String, Secret) -> Arc<dyn ShutdownTarget>,
    ) -> Self {
        LazySpendLimits {
            vault,
            arn: arn.into(),
            base_url: base_url.into(),
            build,
            limits: OnceCell::new(),
        }
    }

    /// OpenAI's project and organisation spend limits.
    fn openai(vault: Arc<dyn SecretVault>, arn: &str, base_url: &str) -> Self {
        Self::lazy(vault, arn, base_url, |base_url, admin_key| {
            Arc::new(openai::OpenAiSpendLimits {
                http: crate::https::client(),
                base_url,
                admin_key,
            })
        })
    }

    /// Anthropic's workspace and organisation spend limits.
    fn anthropic(vault: Arc<dyn SecretVault>, arn: &str, base_url: &str) -> Self {
        Self::lazy(vault, arn, base_url, |base_url, admin_key| {
            Arc::new(anthropic::AnthropicSpendLimits {
                http: crate::https::client(),
                base_url,
                admin_key,
            })
        })
    }

    async fn limits(&self) -> Result<&Arc<dyn ShutdownTarget>, ShutdownError> {
        self.limits
            .get_or_try_init(|| async {
                let admin_key = self
                    .vault
                    .read(&self.arn)
                    .await
                    .map_err(|e| ShutdownError(e.to_string()))?;
                Ok((self.build)(self.base_url.clone(), admin_key))
            })
            .await
    }
}

#[async_trait]
impl ShutdownTarget for LazySpendLimits {
    async fn opted_in(
        &self,
        policy: &PolicySet,
        scope: &Scope,
    ) -> Result<Vec<Resource>, ShutdownError> {
        self.limits().await?.opted_in(policy, scope).await
    }

    async fn enabled(&self) -> Result<bool, ShutdownError> {
        self.limits().await?.enabled().await
    }

    async fn state(&self, resource: &Resource) -> Result<ResourceState, ShutdownError> {
        self.limits().await?.state(resource).await
    }

    async fn set(&self, resource: &Resource, to: &ResourceState) -> Result<(), ShutdownError> {
        self.limits().await?.set(resource, to).await
    }
}
