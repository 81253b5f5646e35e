//! OpenAI admin API: project keys have no disabled state. Deleting one is permanent, so it is
//! only done when the key allows it (`allow_delete`); the reversible stop is withholding the
//! secret (see `vault`).

use async_trait::async_trait;

use spendguard_domain::keys::{Credential, KeySpec, ProviderKind};

use spendguard_app::ports::keys::{KeyProvider, ProviderError};

use crate::keys::{http_error, transport};
use spendguard_domain::secret::Secret;

const KIND: ProviderKind = ProviderKind::Openai;

pub struct OpenAiAdmin {
    pub http: reqwest::Client,
    /// `https://api.openai.com` in production.
    pub base_url: String,
    pub admin_key: Secret,
}

/// Whether OpenAI knows the project: a 404 on a key or a limit means "gone" or "none" only
/// when the project exists; otherwise the registry names a project OpenAI does not have.
async fn project_exists(
    http: &reqwest::Client,
    base_url: &str,
    admin_key: &Secret,
    project: &str,
) -> Result<bool, ProviderError> {
    let response = http
        .get(format!(
            "{}/v1/organization/projects/{project}",
            base_url.trim_end_matches('/')
        ))
        .bearer_auth(admin_key.expose())
        .send()
        .await
        .map_err(|e| transport(KIND, e))?;
    match response.status().as_u16() {
        200..=299 => Ok(true),
        404 => Ok(false),
        _ => Err(http_error(KIND, response).await),
    }
}

impl OpenAiAdmin {
    fn key_url(&self, key: &KeySpec) -> Result<String, ProviderError> {
        match (&key.project_id, &key.key_id) {
            (Some(p), Some(k)) => Ok(format!(
                "{}/v1/organization/projects/{p}/api_keys/{k}",
                self.base_url.trim_end_matches('/')
            )),
            _ => Err(ProviderError::NotSupported {
                provider: KIND,
                message: format!("key {} needs project_id and key_id", key.id),
            }),
        }
    }
}

#[async_trait]
impl KeyProvider for OpenAiAdmin {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    async fn is_active(&self, key: &KeySpec) -> Result<bool, ProviderError> {
        let response = self
            .http
            .get(self.key_url(key)?)
            .bearer_auth(self.admin_key.expose())
            .send()
            .await
            .map_err(|e| transport(KIND, e))?;
        match response.status().as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            _ => Err(http_error(KIND, response).await),
        }
    }

    /// Deletes the key: only for keys with `allow_delete`.
    async fn disable(&self, key: &KeySpec) -> Result<(), ProviderError> {
        if !key.allow_delete {
            return Err(ProviderError::NotSupported {
                provider: KIND,
                message: "OpenAI keys cannot be disabled, only deleted (permanent): set allow_delete to permit it".into(),
            });
        }
        let response = self
            .http
            .delete(self.key_url(key)?)
            .bearer_auth(self.admin_key.expose())
            .send()
            .await
            .map_err(|e| transport(KIND, e))?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            // deleted already (a retry), unless the project itself is not OpenAI's
            404 => {
                let project = key.project_id.as_deref().unwrap_or_default();
                if project_exists(&self.http, &self.base_url, &self.admin_key, project).await? {
                    Ok(())
                } else {
                    Err(ProviderError::Refused {
                        provider: KIND,
                        message: format!(
                            "key {}: OpenAI has no project `{project}` (HTTP 404): check its project_id",
                            key.id
                        ),
                    })
                }
            }
            _ => Err(http_error(KIND, response).await),
        }
    }

    async fn enable(&self, _key: &KeySpec) -> Result<(), ProviderError> {
        Err(ProviderError::NotSupported {
            provider: KIND,
            message: "a deleted OpenAI key cannot be restored: issue a new key".into(),
        })
    }

    async fn test(&self, credential: &Credential) -> Result<(), ProviderError> {
        let response = self
            .http
            .get(format!("{}/v1/models", self.base_url.trim_end_matches('/')))
            .bearer_auth(credential.secret.expose())
            .send()
            .await
            .map_err(|e| transport(KIND, e))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(http_error(KIND, response).await)
        }
    }
}
