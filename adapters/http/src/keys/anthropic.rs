//! Anthropic admin API: a key's `status` is `active` or `inactive` (reversible; `archived` is
//! final and never used here).

use async_trait::async_trait;
use serde_json::{Value, json};

use spendguard_domain::keys::{Credential, KeySpec, ProviderKind};

use spendguard_app::ports::keys::{KeyProvider, ProviderError};

use crate::keys::{http_error, transport};
use spendguard_domain::secret::Secret;

const KIND: ProviderKind = ProviderKind::Anthropic;
const VERSION: &str = "2023-06-01";

pub struct AnthropicAdmin {
    pub http: reqwest::Client,
    /// `https://api.anthropic.com` in production.
    pub base_url: String,
    pub admin_key: Secret,
}

impl AnthropicAdmin {
    fn key_url(&self, key: &KeySpec) -> Result<String, ProviderError> {
        let id = key
            .key_id
            .as_deref()
            .ok_or_else(|| ProviderError::NotSupported {
                provider: KIND,
                message: format!("key {} has no key_id", key.id),
            })?;
        Ok(format!(
            "{}/v1/organizations/api_keys/{id}",
            self.base_url.trim_end_matches('/')
        ))
    }

    async fn set_status(&self, key: &KeySpec, status: &str) -> Result<(), ProviderError> {
        let response = self
            .http
            .post(self.key_url(key)?)
            .header("x-api-key", self.admin_key.expose())
            .header("anthropic-version", VERSION)
            .json(&json!({ "status": status }))
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

#[async_trait]
impl KeyProvider for AnthropicAdmin {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    async fn is_active(&self, key: &KeySpec) -> Result<bool, ProviderError> {
        let response = self
            .http
            .get(self.key_url(key)?)
            .header("x-api-key", self.admin_key.expose())
            .header("anthropic-version", VERSION)
            .send()
            .await
            .map_err(|e| transport(KIND, e))?;
        if !response.status().is_success() {
            return Err(http_error(KIND, response).await);
        }
        let body: Value = response.json().await.map_err(|e| transport(KIND, e))?;
        Ok(body.get("status").and_then(Value::as_str) == Some("active"))
    }

    async fn disable(&self, key: &KeySpec) -> Result<(), ProviderError> {
        self.set_status(key, "inactive").await
    }

    async fn enable(&self, key: &KeySpec) -> Result<(), ProviderError> {
        self.set_status(key, "active").await
    }

    async fn test(&self, credential: &Credential) -> Result<(), ProviderError> {
        let response = self
            .http
            .get(format!("{}/v1/models", self.base_url.trim_end_matches('/')))
            .header("x-api-key", credential.secret.expose())
            .header("anthropic-version", VERSION)
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
