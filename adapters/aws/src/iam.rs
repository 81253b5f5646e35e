//! AWS IAM access keys: `UpdateAccessKey` to `Inactive` / `Active` (reversible); and what the
//! key's user holds besides it: service-specific credentials (Amazon Bedrock API keys), set
//! Inactive / Active, and sessions, denied by an inline policy on `aws:TokenIssueTime`.

use async_trait::async_trait;
use aws_sdk_iam::types::StatusType;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use spendguard_domain::keys::{Credential, KeySpec, ProviderKind};

use spendguard_app::ports::keys::{KeyProvider, ProviderError, UserCredentials};

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

    fn user_credentials(&self) -> Option<&dyn UserCredentials> {
        Some(self)
    }
}

/// AWS's own pattern for revoking a principal's older sessions (the console's "Revoke active
/// sessions"): deny everything to tokens issued before the cut-off. `before` is rounded up to
/// the next second, the precision of the condition, so a session from the stop's own second is
/// denied too.
fn deny_sessions_document(before: DateTime<Utc>) -> String {
    let cut_off =
        (before + chrono::Duration::seconds(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "SpendguardRevokeOlderSessions",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": cut_off}}
        }]
    })
    .to_string()
}

#[async_trait]
impl UserCredentials for IamKeys {
    async fn active_service_credentials(&self, user: &str) -> Result<Vec<String>, ProviderError> {
        let out = self
            .iam
            .list_service_specific_credentials()
            .user_name(user)
            .send()
            .await
            .map_err(|e| unavailable(aws_sdk_iam::error::DisplayErrorContext(&e)))?;
        Ok(out
            .service_specific_credentials()
            .iter()
            .filter(|c| c.status() == &StatusType::Active)
            .map(|c| c.service_specific_credential_id().to_string())
            .collect())
    }

    async fn set_service_credential(
        &self,
        user: &str,
        id: &str,
        active: bool,
    ) -> Result<bool, ProviderError> {
        let status = if active {
            StatusType::Active
        } else {
            StatusType::Inactive
        };
        match self
            .iam
            .update_service_specific_credential()
            .user_name(user)
            .service_specific_credential_id(id)
            .status(status)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_no_such_entity_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(unavailable(aws_sdk_iam::error::DisplayErrorContext(&e))),
        }
    }

    async fn deny_sessions_before(
        &self,
        user: &str,
        policy: &str,
        before: DateTime<Utc>,
    ) -> Result<(), ProviderError> {
        self.iam
            .put_user_policy()
            .user_name(user)
            .policy_name(policy)
            .policy_document(deny_sessions_document(before))
            .send()
            .await
            .map_err(|e| unavailable(aws_sdk_iam::error::DisplayErrorContext(&e)))?;
        Ok(())
    }

    async fn lift_session_deny(&self, user: &str, policy: &str) -> Result<(), ProviderError> {
        match self
            .iam
            .delete_user_policy()
            .user_name(user)
            .policy_name(policy)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_no_such_entity_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable(aws_sdk_iam::error::DisplayErrorContext(&e))),
        }
    }
}
