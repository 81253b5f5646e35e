//! The secret vault port: reads a secret by its reference (an ARN, or file:<path> locally).

use async_trait::async_trait;
use spendguard_domain::secret::Secret;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret {reference}: {message}")]
pub struct SecretError {
    /// The ARN or path (never the value).
    pub reference: String,
    pub message: String,
}

/// Where secrets are read from: Secrets Manager when deployed, files when local.
#[async_trait]
pub trait SecretVault: Send + Sync {
    async fn read(&self, reference: &str) -> Result<Secret, SecretError>;
}
