//! Withholding a key's secret: AWSCURRENT moves to a marker version, so applications that read
//! the secret get no key; restore moves it back — unless an operator changed it meanwhile.
//! The rules are written once here over the [`SecretVersions`] port; Secrets Manager is its
//! adapter ([`SecretsManager`]).

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;

use super::{ProviderError, ProviderKind};

const KIND: ProviderKind = ProviderKind::SecretOnly;
const MARKER_PREFIX: &str = "SPENDGUARD-WITHHELD";

fn err(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unavailable {
        provider: KIND,
        message: e.to_string(),
    }
}

/// The value applications see while a key is withheld.
pub fn marker(incident: &str) -> String {
    format!("{MARKER_PREFIX} incident={incident}")
}

/// Whether `value` is a marker spendguard wrote (for any incident): never a key.
pub fn is_marker(value: &str) -> bool {
    value.starts_with(MARKER_PREFIX)
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreOutcome {
    Restored,
    /// Already back (a repeated restore).
    AlreadyRestored,
    /// AWSCURRENT is neither a spendguard marker nor the withheld version: left as the
    /// operator set it.
    ChangedByOperator,
}

/// Withholds the secret for `incident`; returns the version that holds the key. When a
/// marker is current already (a retry, or a stop that a crash interrupted), the key's version
/// is `recorded` if spendguard noted it, else AWSPREVIOUS — never the marker itself.
pub async fn withhold(
    secrets: &dyn SecretVersions,
    arn: &str,
    incident: &str,
    recorded: Option<&str>,
) -> Result<String, ProviderError> {
    let (current, value) = secrets.current(arn).await?;
    if is_marker(&value) {
        if let Some(version) = recorded {
            return Ok(version.to_string());
        }
        return secrets
            .previous(arn)
            .await?
            .ok_or_else(|| err("withheld, but no AWSPREVIOUS version holds the key"));
    }
    // a token of its own for every withholding: Secrets Manager answers a token it has seen
    // with that version, without making it current again (a key restored, then withheld again,
    // would stay readable). A retry after a lost answer finds the marker current (above).
    let token = uuid::Uuid::new_v4().simple().to_string();
    secrets.put_current(arn, &token, &marker(incident)).await?;
    Ok(current)
}

/// Gives the key back by moving AWSCURRENT to `previous_version` — when a spendguard marker
/// is current; anything else an operator set is left alone.
pub async fn restore(
    secrets: &dyn SecretVersions,
    arn: &str,
    previous_version: &str,
) -> Result<RestoreOutcome, ProviderError> {
    let (current, value) = secrets.current(arn).await?;
    if current == previous_version {
        return Ok(RestoreOutcome::AlreadyRestored);
    }
    if !is_marker(&value) {
        return Ok(RestoreOutcome::ChangedByOperator);
    }
    secrets
        .move_current(arn, previous_version, &current)
        .await?;
    Ok(RestoreOutcome::Restored)
}

/// The Secrets Manager adapter.
pub struct SecretsManager {
    pub client: Client,
}

fn sdk_err<E: std::error::Error + 'static, R: std::fmt::Debug>(
    e: aws_sdk_secretsmanager::error::SdkError<E, R>,
) -> ProviderError {
    err(aws_sdk_secretsmanager::error::DisplayErrorContext(&e))
}

#[async_trait]
impl SecretVersions for SecretsManager {
    async fn current(&self, arn: &str) -> Result<(String, String), ProviderError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(arn)
            .version_stage("AWSCURRENT")
            .send()
            .await
            .map_err(sdk_err)?;
        Ok((
            out.version_id().unwrap_or_default().to_string(),
            out.secret_string().unwrap_or_default().to_string(),
        ))
    }

    async fn previous(&self, arn: &str) -> Result<Option<String>, ProviderError> {
        let described = self
            .client
            .describe_secret()
            .secret_id(arn)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(described.version_ids_to_stages().and_then(|m| {
            m.iter()
                .find(|(_, stages)| stages.iter().any(|s| s == "AWSPREVIOUS"))
                .map(|(v, _)| v.clone())
        }))
    }

    async fn put_current(&self, arn: &str, token: &str, value: &str) -> Result<(), ProviderError> {
        self.client
            .put_secret_value()
            .secret_id(arn)
            .client_request_token(token)
            .secret_string(value)
            .version_stages("AWSCURRENT")
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    async fn move_current(&self, arn: &str, to: &str, from: &str) -> Result<(), ProviderError> {
        self.client
            .update_secret_version_stage()
            .secret_id(arn)
            .version_stage("AWSCURRENT")
            .move_to_version_id(to)
            .remove_from_version_id(from)
            .send()
            .await
            .map_err(sdk_err)?;
        Ok(())
    }

    async fn start_rotation(&self, arn: &str) -> Result<(), ProviderError> {
        self.client
            .rotate_secret()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| {
                err(format!(
                    "RotateSecret: {}",
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                ))
            })?;
        Ok(())
    }
}
