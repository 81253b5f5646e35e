//! The rate-limit port: a provider's rate limits of a project (workspace), read and set.

use async_trait::async_trait;
use spendguard_domain::keys::ProviderKind;
use spendguard_domain::throttle::ModelRateLimit;

use crate::ports::keys::ProviderError;

/// A provider whose projects' (workspaces') rate limits spendguard can lower and put back
/// (OpenAI projects, Anthropic workspaces).
#[async_trait]
pub trait ProviderRateLimits: Send + Sync {
    fn provider(&self) -> ProviderKind;
    /// When a change takes effect, if the provider documents it as later than at once.
    fn takes_effect(&self) -> Option<&'static str> {
        None
    }
    /// Every rate limit entry of `container` (all pages), with the values in force.
    async fn rate_limits(&self, container: &str) -> Result<Vec<ModelRateLimit>, ProviderError>;
    /// Sets one entry's limits to `limit.limits` (its `inherited` ones back to the
    /// organisation's).
    async fn set_rate_limit(
        &self,
        container: &str,
        limit: &ModelRateLimit,
    ) -> Result<(), ProviderError>;
}
