//! Secrets Manager as the secret vault: provider admin keys, channel endpoints, webhook secrets.

use async_trait::async_trait;
use spendguard_app::ports::secrets::SecretError;
use spendguard_app::ports::secrets::SecretVault;
use spendguard_domain::secret::Secret;

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
