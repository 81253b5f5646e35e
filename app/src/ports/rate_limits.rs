//! The rate-limit port: a provider's per-model rate limits of a project, read and set.

use async_trait::async_trait;
use spendguard_domain::throttle::ModelRateLimit;

use crate::ports::keys::ProviderError;

/// A provider whose projects' rate limits spendguard can lower and put back (OpenAI).
#[async_trait]
pub trait ProviderRateLimits: Send + Sync {
    /// Every per-model rate limit of `project` (all pages).
    async fn rate_limits(&self, project: &str) -> Result<Vec<ModelRateLimit>, ProviderError>;
    /// Sets one model's limits to `limit.limits`.
    async fn set_rate_limit(
        &self,
        project: &str,
        limit: &ModelRateLimit,
    ) -> Result<(), ProviderError>;
}
