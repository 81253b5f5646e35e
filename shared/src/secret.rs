//! A secret value that cannot be logged by accident, and where secrets come from.

use std::fmt;

use async_trait::async_trait;

/// Holds a secret (admin key, webhook URL). `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Read from a document (a key file) straight into a `Secret`.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <String as serde::Deserialize>::deserialize(d).map(Secret::new)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

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

/// Secrets Manager, by ARN (`AWSCURRENT`).
pub struct SecretsManagerVault {
    client: aws_sdk_secretsmanager::Client,
}

impl SecretsManagerVault {
    pub fn new(client: aws_sdk_secretsmanager::Client) -> Self {
        SecretsManagerVault { client }
    }
}

#[async_trait]
impl SecretVault for SecretsManagerVault {
    async fn read(&self, reference: &str) -> Result<Secret, SecretError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(reference)
            .version_stage("AWSCURRENT")
            .send()
            .await
            .map_err(|e| SecretError {
                reference: reference.to_string(),
                message: aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
            })?;
        out.secret_string()
            .map(|s| Secret::new(s.trim()))
            .ok_or_else(|| SecretError {
                reference: reference.to_string(),
                message: "has no string value".into(),
            })
    }
}

/// Local files: `file:<path>` or a plain path; the whole file (trimmed) is the secret.
pub struct FileVault;

#[async_trait]
impl SecretVault for FileVault {
    async fn read(&self, reference: &str) -> Result<Secret, SecretError> {
        let path = reference.strip_prefix("file:").unwrap_or(reference);
        std::fs::read_to_string(path)
            .map(|s| Secret::new(s.trim()))
            .map_err(|e| SecretError {
                reference: reference.to_string(),
                message: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_format() {
        let s = Secret::new("sk-admin-very-secret");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
        assert_eq!(s.expose(), "sk-admin-very-secret");
    }
}
