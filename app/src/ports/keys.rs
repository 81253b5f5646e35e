//! The key provider port: a provider's key administration (disable, enable, test).

use async_trait::async_trait;
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
}
