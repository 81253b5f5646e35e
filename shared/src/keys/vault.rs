//! Withholding a key's secret: AWSCURRENT moves to a marker version, so applications that read
//! the secret get no key; restore moves it back — unless an operator changed it meanwhile.

use aws_sdk_secretsmanager::Client;
use sha2::{Digest, Sha256};

use super::{ProviderError, ProviderKind};

const KIND: ProviderKind = ProviderKind::SecretOnly;

fn err(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unavailable {
        provider: KIND,
        message: e.to_string(),
    }
}

/// The value applications see while a key is withheld.
pub fn marker(incident: &str) -> String {
    format!("SPENDGUARD-WITHHELD incident={incident}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreOutcome {
    Restored,
    /// Already back (a repeated restore).
    AlreadyRestored,
    /// AWSCURRENT is neither our marker nor the withheld version: left as the operator set it.
    ChangedByOperator,
}

pub struct SecretsAdmin {
    pub client: Client,
}

impl SecretsAdmin {
    async fn current_version(&self, arn: &str) -> Result<(String, String), ProviderError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(arn)
            .version_stage("AWSCURRENT")
            .send()
            .await
            .map_err(|e| err(aws_sdk_secretsmanager::error::DisplayErrorContext(&e)))?;
        Ok((
            out.version_id().unwrap_or_default().to_string(),
            out.secret_string().unwrap_or_default().to_string(),
        ))
    }

    /// Withholds the secret; returns the version that held the key. Idempotent per incident.
    pub async fn withhold(&self, arn: &str, incident: &str) -> Result<String, ProviderError> {
        let (current, value) = self.current_version(arn).await?;
        if value == marker(incident) {
            // done before (a retry): the key is in the version marked AWSPREVIOUS
            let described = self
                .client
                .describe_secret()
                .secret_id(arn)
                .send()
                .await
                .map_err(|e| err(aws_sdk_secretsmanager::error::DisplayErrorContext(&e)))?;
            let previous = described
                .version_ids_to_stages()
                .and_then(|m| {
                    m.iter()
                        .find(|(_, stages)| stages.iter().any(|s| s == "AWSPREVIOUS"))
                        .map(|(v, _)| v.clone())
                })
                .ok_or_else(|| err("withheld, but no AWSPREVIOUS version holds the key"))?;
            return Ok(previous);
        }
        let mut h = Sha256::new();
        h.update(arn.as_bytes());
        h.update(incident.as_bytes());
        let token = hex::encode(&h.finalize()[..20]);
        self.client
            .put_secret_value()
            .secret_id(arn)
            .client_request_token(token)
            .secret_string(marker(incident))
            .version_stages("AWSCURRENT")
            .send()
            .await
            .map_err(|e| err(aws_sdk_secretsmanager::error::DisplayErrorContext(&e)))?;
        Ok(current)
    }

    /// Gives the key back by moving AWSCURRENT to `previous_version`.
    pub async fn restore(
        &self,
        arn: &str,
        previous_version: &str,
        incident: &str,
    ) -> Result<RestoreOutcome, ProviderError> {
        let (current, value) = self.current_version(arn).await?;
        if current == previous_version {
            return Ok(RestoreOutcome::AlreadyRestored);
        }
        if value != marker(incident) {
            return Ok(RestoreOutcome::ChangedByOperator);
        }
        self.client
            .update_secret_version_stage()
            .secret_id(arn)
            .version_stage("AWSCURRENT")
            .move_to_version_id(previous_version)
            .remove_from_version_id(current)
            .send()
            .await
            .map_err(|e| err(aws_sdk_secretsmanager::error::DisplayErrorContext(&e)))?;
        Ok(RestoreOutcome::Restored)
    }
}
