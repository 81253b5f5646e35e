//! The secret versions port: what key-guard needs of a versioned secret store (Secrets
//! Manager) to withhold a key's secret and give it back ([`SecretVersions`]), and to run the
//! rotation steps ([`RotationSecrets`]).

use async_trait::async_trait;
use spendguard_domain::secret::Secret;

use crate::ports::keys::ProviderError;

/// The versions of a secret, as withholding needs them.
#[async_trait]
pub trait SecretVersions: Send + Sync {
    /// The version AWSCURRENT is on, and its value.
    async fn current(&self, arn: &str) -> Result<(String, String), ProviderError>;
    /// The version AWSPREVIOUS is on (where the key is while a marker is current).
    async fn previous(&self, arn: &str) -> Result<Option<String>, ProviderError>;
    /// Makes `value` a new AWSCURRENT version; the same `token` twice makes one version.
    async fn put_current(&self, arn: &str, token: &str, value: &str) -> Result<(), ProviderError>;
    /// Moves AWSCURRENT from version `from` to version `to`.
    async fn move_current(&self, arn: &str, to: &str, from: &str) -> Result<(), ProviderError>;
    /// Starts the secret's rotation (Secrets Manager then runs key-guard's rotation steps).
    async fn start_rotation(&self, arn: &str) -> Result<(), ProviderError>;
}

/// A secret as rotation sees it: its ARN and name, whether rotation is on, and the stages of
/// each version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretDescription {
    pub arn: String,
    pub name: String,
    pub rotation_enabled: bool,
    /// (version id, its stages)
    pub stages: Vec<(String, Vec<String>)>,
}

/// Why a call of the secret store failed (never the secret's value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SecretStoreError(pub String);

/// The calls of Secrets Manager's rotation protocol, each idempotent per token.
#[async_trait]
pub trait RotationSecrets: Send + Sync {
    async fn describe(&self, secret: &str) -> Result<SecretDescription, SecretStoreError>;
    /// The value of a version (by id, or the one `stage` is on); `None` if there is none.
    async fn value(
        &self,
        secret: &str,
        version: Option<&str>,
        stage: &str,
    ) -> Result<Option<Secret>, SecretStoreError>;
    /// A random password of `length` characters without punctuation.
    async fn random_password(&self, length: u32) -> Result<String, SecretStoreError>;
    /// Writes `value` as version `token` under AWSPENDING.
    async fn put_pending(
        &self,
        secret: &str,
        token: &str,
        value: &str,
        rotation_token: Option<&str>,
    ) -> Result<(), SecretStoreError>;
    /// Moves `stage` to version `to` (if any), removing it from version `from` (if any).
    async fn move_stage(
        &self,
        secret: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), SecretStoreError>;
}
