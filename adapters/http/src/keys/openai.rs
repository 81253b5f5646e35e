//! OpenAI admin API. Project keys have no disabled state: deleting one is permanent, so it is
//! only done when the key allows it (`allow_delete`). The reversible stop at OpenAI is the
//! hard spend limit of the key's project or of the organisation ([`OpenAiSpendLimits`], ADR
//! 020); withholding the secret (see `withhold`) stays as a layer on top.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use spendguard_domain::keys::{Credential, KeySpec, ProviderKind};
use spendguard_domain::resources::{
    Resource, ResourceKind, ResourceState, openai_limit_project, provider_limits,
};
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;

use spendguard_app::ports::keys::{KeyProvider, ProviderError};
use spendguard_app::ports::shutdown::{ShutdownError, ShutdownTarget};

use crate::keys::{http_error, transport};
use spendguard_domain::secret::Secret;

const KIND: ProviderKind = ProviderKind::Openai;

pub struct OpenAiAdmin {
    pub http: reqwest::Client,
    /// `https://api.openai.com` in production.
    pub base_url: String,
    pub admin_key: Secret,
}

/// A GET on OpenAI's admin API, with the admin key.
async fn admin_get(
    http: &reqwest::Client,
    url: String,
    admin_key: &Secret,
) -> Result<reqwest::Response, ProviderError> {
    http.get(url)
        .bearer_auth(admin_key.expose())
        .send()
        .await
        .map_err(|e| transport(KIND, e))
}

/// Whether OpenAI knows the project: a 404 on a key or a limit means "gone" or "none" only
/// when the project exists; otherwise the registry names a project OpenAI does not have.
async fn project_exists(
    http: &reqwest::Client,
    base_url: &str,
    admin_key: &Secret,
    project: &str,
) -> Result<bool, ProviderError> {
    let url = format!(
        "{}/v1/organization/projects/{project}",
        base_url.trim_end_matches('/')
    );
    let response = admin_get(http, url, admin_key).await?;
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
        let response = admin_get(&self.http, self.key_url(key)?, &self.admin_key).await?;
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

/// OpenAI's hard spend limits (`/v1/organization/spend_limit`,
/// `/v1/organization/projects/{id}/spend_limit`) as resources a stop sets and a restore puts
/// back: which ones a scope covers is `provider_limits` (the domain's rule).
pub struct OpenAiSpendLimits {
    pub http: reqwest::Client,
    /// `https://api.openai.com` in production.
    pub base_url: String,
    pub admin_key: Secret,
}

/// The part of OpenAI's spend limit object spendguard reads (`threshold_amount` in cents; a
/// missing or null one is read as no limit).
#[derive(Deserialize)]
struct SpendLimitObject {
    #[serde(default)]
    threshold_amount: Option<u64>,
    currency: String,
}

impl OpenAiSpendLimits {
    fn url(&self, resource: &Resource) -> Result<String, ShutdownError> {
        let base = self.base_url.trim_end_matches('/');
        match openai_limit_project(resource) {
            None => Ok(format!("{base}/v1/organization/spend_limit")),
            // an id that is not one of OpenAI's (`proj_…`) never reaches a URL
            Some(p)
                if !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                Ok(format!("{base}/v1/organization/projects/{p}/spend_limit"))
            }
            Some(p) => Err(ShutdownError(format!(
                "OpenAI project id `{p}` is not one OpenAI issues (letters, digits, `_`, `-`)"
            ))),
        }
    }

    async fn failed(response: reqwest::Response) -> ShutdownError {
        ShutdownError(http_error(KIND, response).await.to_string())
    }
}

fn unreachable_openai(e: reqwest::Error) -> ShutdownError {
    ShutdownError(transport(KIND, e).to_string())
}

#[async_trait]
impl ShutdownTarget for OpenAiSpendLimits {
    async fn opted_in(
        &self,
        policy: &PolicySet,
        _scope: &Scope,
    ) -> Result<Vec<Resource>, ShutdownError> {
        Ok(provider_limits(policy)
            .into_iter()
            .filter(|r| r.kind == ResourceKind::OpenaiSpendLimit)
            .collect())
    }

    fn stops_with_keys(&self) -> bool {
        true
    }

    async fn state(&self, resource: &Resource) -> Result<ResourceState, ShutdownError> {
        let response = admin_get(&self.http, self.url(resource)?, &self.admin_key)
            .await
            .map_err(|e| ShutdownError(e.to_string()))?;
        match response.status().as_u16() {
            200 => {
                let limit: SpendLimitObject = response.json().await.map_err(|e| {
                    ShutdownError(format!(
                        "OpenAI answered a spend limit spendguard cannot read: {}",
                        e.without_url()
                    ))
                })?;
                if !limit.currency.eq_ignore_ascii_case("USD") {
                    return Err(ShutdownError(format!(
                        "OpenAI's spend limit is in {}, not USD: left alone",
                        limit.currency
                    )));
                }
                Ok(ResourceState::SpendLimit {
                    cents: limit.threshold_amount,
                })
            }
            404 => match openai_limit_project(resource) {
                // no limit set, as long as the project is OpenAI's
                Some(p)
                    if !project_exists(&self.http, &self.base_url, &self.admin_key, p)
                        .await
                        .map_err(|e| ShutdownError(e.to_string()))? =>
                {
                    Err(ShutdownError(format!(
                        "OpenAI has no project `{p}` (HTTP 404): check the project_id of its budgets and keys"
                    )))
                }
                _ => Ok(ResourceState::SpendLimit { cents: None }),
            },
            _ => Err(Self::failed(response).await),
        }
    }

    async fn set(&self, resource: &Resource, to: &ResourceState) -> Result<(), ShutdownError> {
        let url = self.url(resource)?;
        let request = match to {
            ResourceState::SpendLimit { cents: Some(cents) } => self
                .http
                .post(url)
                .json(&json!({"threshold_amount": cents, "currency": "USD", "interval": "month"})),
            ResourceState::SpendLimit { cents: None } => self.http.delete(url),
            other => {
                return Err(ShutdownError(format!(
                    "an OpenAI spend limit cannot be set to {other}"
                )));
            }
        };
        let response = request
            .bearer_auth(self.admin_key.expose())
            .send()
            .await
            .map_err(unreachable_openai)?;
        match (to, response.status().as_u16()) {
            (_, 200..=299) => Ok(()),
            // deleting a limit that is gone already is what was asked
            (ResourceState::SpendLimit { cents: None }, 404) => Ok(()),
            _ => Err(Self::failed(response).await),
        }
    }
}
