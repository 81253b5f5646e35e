//! The shutdown port: a cloud whose opted-in resources can be listed, read and set.

use async_trait::async_trait;
use spendguard_domain::resources::Resource;
use spendguard_domain::resources::ResourceState;
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShutdownError(pub String);

/// A cloud whose resources can be stopped and brought back (AWS, GCP).
#[async_trait]
pub trait ShutdownTarget: Send + Sync {
    /// The resources that opted in, with the scope each names: at least those under `scope`
    /// (a target may return more; only those under it are acted on).
    async fn opted_in(
        &self,
        policy: &PolicySet,
        scope: &Scope,
    ) -> Result<Vec<Resource>, ShutdownError>;
    /// What [`Self::opted_in`] lists, with what it could not: a target that looks in several
    /// places (AWS's regions) returns what it found where it could and an error for each place
    /// it could not search, so a stop stops what was found and still fails on the rest.
    async fn opted_in_partially(
        &self,
        policy: &PolicySet,
        scope: &Scope,
    ) -> (Vec<Resource>, Vec<ShutdownError>) {
        match self.opted_in(policy, scope).await {
            Ok(resources) => (resources, Vec::new()),
            Err(e) => (Vec::new(), vec![e]),
        }
    }
    /// Whether its resources are part of stopping a scope's keys (a provider's own spend
    /// limit): stopped by every `disable_keys`, not only by a `shutdown`.
    fn stops_with_keys(&self) -> bool {
        false
    }
    /// Whether the provider offers these resources to this organisation at all (Anthropic's
    /// spend limits are an early-access preview): when it does not, a refused read is "not
    /// enabled", which keeping a cap reports once instead of failing on.
    async fn enabled(&self) -> Result<bool, ShutdownError> {
        Ok(true)
    }
    async fn state(&self, resource: &Resource) -> Result<ResourceState, ShutdownError>;
    async fn set(&self, resource: &Resource, to: &ResourceState) -> Result<(), ShutdownError>;
    /// Why the resource is never stopped even though it opted in (spendguard itself: stopping
    /// it would stop the restore too), if it is.
    async fn protected(&self, _resource: &Resource) -> Option<String> {
        None
    }
}
