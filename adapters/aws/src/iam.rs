//! AWS IAM access keys: `UpdateAccessKey` to `Inactive` / `Active` (reversible).

use async_trait::async_trait;
use aws_sdk_iam::types::StatusType;

use spendguard_domain::keys::{Credential, KeySpec, ProviderKind};

use spendguard_app::ports::keys::{KeyProvider, ProviderError};

const KIND: ProviderKind = ProviderKind::AwsIam;

pub struct IamKeys {
    pub iam: aws_sdk_iam::Client,
    /// To test a candidate key: STS `GetCallerIdentity` signed with it.
    pub sdk: aws_config::SdkConfig,
}

fn names(key: &KeySpec) -> Result<(&str, &str), ProviderError> {
    match (&key.user, &key.key_id) {
        (Some(u), Some(k)) => Ok((u, k)),
        _ => Err(ProviderError::NotSupported {
            provider: KIND,
            message: format!("key {} needs user and key_id", key.id),
        }),
    }
}

fn unavailable(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Unavailable {
        provider: KIND,
        message: e.to_string(),
    }
}

impl IamKeys {
    async fn set(&self, key: &KeySpec, status: StatusType) -> Result<(), ProviderError> {
        let (user, id) = names(key)?;
        self.iam
            .update_access_key()
            .user_name(user)
            .access_key_id(id)
            .status(status)
            .send()
            .await
            .map_err(|e| unavailable(aws_sdk_iam::error::DisplayErrorContext(&e)))?;
        Ok(())
    }
}

#[async_trait]
impl KeyProvider for IamKeys {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    async fn is_active(&self, key: &KeySpec) -> Result<bool, ProviderError> {
        let (user, id) = names(key)?;
        let out = self
            .iam
            .list_access_keys()
            .user_name(user)
            .send()
            .await
            .map_err(|e| unavailable(aws_sdk_iam::error::DisplayErrorContext(&e)))?;
        Ok(out
            .access_key_metadata()
            .iter()
            .any(|k| k.access_key_id() == Some(id) && k.status() == Some(&StatusType::Active)))
    }

    async fn disable(&self, key: &KeySpec) -> Result<(), ProviderError> {
        self.set(key, StatusType::Inactive).await
    }

    async fn enable(&self, key: &KeySpec) -> Result<(), ProviderError> {
        self.set(key, StatusType::Active).await
    }

    async fn test(&self, credential: &Credential) -> Result<(), ProviderError> {
        let (Some(id), Some(secret)) = (&credential.key_id, &credential.aws_secret) else {
            return Err(ProviderError::Refused {
                provider: KIND,
                message: "an IAM key secret is {\"access_key_id\", \"secret_access_key\"}".into(),
            });
        };
        let credentials = aws_credential_types::Credentials::new(
            id,
            secret.expose(),
            None,
            None,
            "spendguard-rotation-test",
        );
        let config = aws_sdk_sts::config::Builder::from(&self.sdk)
            .credentials_provider(credentials)
            .build();
        aws_sdk_sts::Client::from_conf(config)
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| ProviderError::Refused {
                provider: KIND,
                message: aws_sdk_sts::error::DisplayErrorContext(&e).to_string(),
            })?;
        Ok(())
    }
}
