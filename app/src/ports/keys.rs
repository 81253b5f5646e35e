//! The key provider port: a provider's key administration (disable, enable, test).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use spendguard_domain::keys::Credential;
use spendguard_domain::keys::KeySpec;
use spendguard_domain::keys::ProviderKind;

/// Why a provider call failed. Never contains a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("{provider}: unavailable: {message}")]
    Unavailable {
        provider: ProviderKind,
        message: String,
    },
    #[error("{provider}: refused: {message}")]
    Refused {
        provider: ProviderKind,
        message: String,
    },
    #[error("{provider}: {message}")]
    NotSupported {
        provider: ProviderKind,
        message: String,
    },
}

/// A provider's key administration.
#[async_trait]
pub trait KeyProvider: Send + Sync {
    fn kind(&self) -> ProviderKind;
    /// Whether the key is usable at the provider now.
    async fn is_active(&self, key: &KeySpec) -> Result<bool, ProviderError>;
    async fn disable(&self, key: &KeySpec) -> Result<(), ProviderError>;
    async fn enable(&self, key: &KeySpec) -> Result<(), ProviderError>;
    /// Proves a candidate credential works with a cheap authenticated call.
    async fn test(&self, credential: &Credential) -> Result<(), ProviderError>;
    /// The key owner's other credentials, where stopping the key alone leaves them working
    /// (an IAM user's sessions and Bedrock API keys).
    fn user_credentials(&self) -> Option<&dyn UserCredentials> {
        None
    }
}

/// What an IAM user can still spend with once its access key is off: sessions made from the
/// key before, and service-specific credentials (Amazon Bedrock API keys).
#[async_trait]
pub trait UserCredentials: Send + Sync {
    /// The ids of the user's active service-specific credentials.
    async fn active_service_credentials(&self, user: &str) -> Result<Vec<String>, ProviderError>;
    /// Sets one Active or Inactive; `Ok(false)` when the user has no such credential (any
    /// more).
    async fn set_service_credential(
        &self,
        user: &str,
        id: &str,
        active: bool,
    ) -> Result<bool, ProviderError>;
    /// Denies, with the user's inline policy `policy`, every request signed with a token
    /// issued before `before`.
    async fn deny_sessions_before(
        &self,
        user: &str,
        policy: &str,
        before: DateTime<Utc>,
    ) -> Result<(), ProviderError>;
    /// Removes that policy; one already gone is success.
    async fn lift_session_deny(&self, user: &str, policy: &str) -> Result<(), ProviderError>;
}
