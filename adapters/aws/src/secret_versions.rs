//! Secrets Manager as the secret versions port: the versions a withheld key moves between,
//! the start of a rotation, and the calls of the rotation steps.

use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use spendguard_app::ports::keys::ProviderError;
use spendguard_app::ports::secret_versions::{
    RotationSecrets, SecretDescription, SecretStoreError, SecretVersions,
};
use spendguard_domain::keys::ProviderKind;
use spendguard_domain::secret::Secret;

fn err(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unavailable {
        provider: ProviderKind::SecretOnly,
        message: e.to_string(),
    }
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

fn store_err<E: std::error::Error + 'static, R: std::fmt::Debug>(
    e: aws_sdk_secretsmanager::error::SdkError<E, R>,
) -> SecretStoreError {
    SecretStoreError(DisplayErrorContext(&e).to_string())
}

#[async_trait]
impl RotationSecrets for SecretsManager {
    async fn describe(&self, secret: &str) -> Result<SecretDescription, SecretStoreError> {
        let d = self
            .client
            .describe_secret()
            .secret_id(secret)
            .send()
            .await
            .map_err(store_err)?;
        Ok(SecretDescription {
            arn: d.arn().unwrap_or_default().into(),
            name: d.name().unwrap_or_default().into(),
            rotation_enabled: d.rotation_enabled() == Some(true),
            stages: d
                .version_ids_to_stages()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        })
    }

    async fn value(
        &self,
        secret: &str,
        version: Option<&str>,
        stage: &str,
    ) -> Result<Option<Secret>, SecretStoreError> {
        let result = self
            .client
            .get_secret_value()
            .secret_id(secret)
            .set_version_id(version.map(str::to_string))
            .version_stage(stage)
            .send()
            .await;
        match result {
            Ok(out) => Ok(out.secret_string().map(Secret::new)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(store_err(e)),
        }
    }

    async fn random_password(&self, length: u32) -> Result<String, SecretStoreError> {
        let random = self
            .client
            .get_random_password()
            .password_length(i64::from(length))
            .exclude_punctuation(true)
            .send()
            .await
            .map_err(store_err)?;
        Ok(random.random_password().unwrap_or_default().to_string())
    }

    async fn put_pending(
        &self,
        secret: &str,
        token: &str,
        value: &str,
        rotation_token: Option<&str>,
    ) -> Result<(), SecretStoreError> {
        self.client
            .put_secret_value()
            .secret_id(secret)
            .client_request_token(token)
            .secret_string(value)
            .version_stages("AWSPENDING")
            .set_rotation_token(rotation_token.map(str::to_string))
            .send()
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn move_stage(
        &self,
        secret: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), SecretStoreError> {
        self.client
            .update_secret_version_stage()
            .secret_id(secret)
            .version_stage(stage)
            .set_move_to_version_id(to.map(str::to_string))
            .set_remove_from_version_id(from.map(str::to_string))
            .send()
            .await
            .map_err(store_err)?;
        Ok(())
    }
}
