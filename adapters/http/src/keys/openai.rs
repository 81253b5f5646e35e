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
use spendguard_app::ports::rate_limits::ProviderRateLimits;
use spendguard_app::ports::shutdown::{ShutdownError, ShutdownTarget};
use spendguard_domain::throttle::{ModelRateLimit, OPENAI_RATE_LIMIT_FIELDS};

use crate::keys::{http_error, success, transport};
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
        success(KIND, response).await.map(|_| ())
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
            Some(p) => Ok(format!("{}/spend_limit", project_url(base, p)?)),
        }
    }

    async fn failed(response: reqwest::Response) -> ShutdownError {
        ShutdownError(http_error(KIND, response).await.to_string())
    }
}

/// Whether `id` is shaped like the ids OpenAI issues (`proj_…`, `rl-…`): only those reach a
/// URL path.
fn openai_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// A project's admin URL.
fn project_url(base: &str, project: &str) -> Result<String, ShutdownError> {
    if openai_id(project) {
        Ok(format!("{base}/v1/organization/projects/{project}"))
    } else {
        Err(ShutdownError(format!(
            "OpenAI project id `{project}` is not one OpenAI issues (letters, digits, `_`, `-`, `.`)"
        )))
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

/// OpenAI's per-model rate limits of a project (`GET/POST
/// /v1/organization/projects/{id}/rate_limits[/{rate_limit_id}]`), lowered by a
/// `reduce_limits` and put back by its recovery.
pub struct OpenAiRateLimits {
    pub http: reqwest::Client,
    /// `https://api.openai.com` in production.
    pub base_url: String,
    pub admin_key: Secret,
}

/// One page of `GET …/rate_limits`.
#[derive(Deserialize)]
struct RateLimitPage {
    data: Vec<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    last_id: Option<String>,
}

/// OpenAI caps `limit` at 100 per page.
const RATE_LIMIT_PAGE: usize = 100;
/// Pages read at most: 10,000 models, far more than OpenAI has.
const RATE_LIMIT_PAGES: usize = 100;

fn rate_limit(
    object: &serde_json::Map<String, serde_json::Value>,
) -> Result<ModelRateLimit, String> {
    let text = |field: &str| {
        object
            .get(field)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or(format!("a rate limit without `{field}`"))
    };
    let mut limits = std::collections::BTreeMap::new();
    for field in OPENAI_RATE_LIMIT_FIELDS {
        match object.get(field) {
            None | Some(serde_json::Value::Null) => {}
            Some(v) => {
                let value = v
                    .as_u64()
                    .ok_or(format!("`{field}` is not a non-negative integer: {v}"))?;
                limits.insert(field.to_string(), value);
            }
        }
    }
    Ok(ModelRateLimit {
        id: text("id")?,
        model: text("model")?,
        limits,
        inherited: Default::default(),
    })
}

fn provider_error(e: ShutdownError) -> ProviderError {
    ProviderError::Unavailable {
        provider: KIND,
        message: e.0,
    }
}

#[async_trait]
impl ProviderRateLimits for OpenAiRateLimits {
    fn provider(&self) -> ProviderKind {
        KIND
    }

    async fn rate_limits(&self, project: &str) -> Result<Vec<ModelRateLimit>, ProviderError> {
        let url = format!(
            "{}/rate_limits",
            project_url(self.base_url.trim_end_matches('/'), project).map_err(provider_error)?
        );
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..RATE_LIMIT_PAGES {
            let mut query = vec![("limit", RATE_LIMIT_PAGE.to_string())];
            query.extend(after.take().map(|a| ("after", a)));
            let response = self
                .http
                .get(&url)
                .query(&query)
                .bearer_auth(self.admin_key.expose())
                .send()
                .await
                .map_err(|e| transport(KIND, e))?;
            let response = success(KIND, response).await?;
            let page: RateLimitPage =
                response
                    .json()
                    .await
                    .map_err(|e| ProviderError::Unavailable {
                        provider: KIND,
                        message: format!(
                            "OpenAI answered rate limits spendguard cannot read: {}",
                            e.without_url()
                        ),
                    })?;
            for object in &page.data {
                out.push(
                    rate_limit(object).map_err(|message| ProviderError::Unavailable {
                        provider: KIND,
                        message: format!("OpenAI answered {message}"),
                    })?,
                );
            }
            match (page.has_more, page.last_id) {
                (true, Some(last)) => after = Some(last),
                _ => return Ok(out),
            }
        }
        Err(ProviderError::Unavailable {
            provider: KIND,
            message: format!(
                "more than {} rate limits in project {project}",
                RATE_LIMIT_PAGE * RATE_LIMIT_PAGES
            ),
        })
    }

    async fn set_rate_limit(
        &self,
        project: &str,
        limit: &ModelRateLimit,
    ) -> Result<(), ProviderError> {
        if !openai_id(&limit.id) {
            return Err(ProviderError::Refused {
                provider: KIND,
                message: format!("rate limit id `{}` is not one OpenAI issues", limit.id),
            });
        }
        let url = format!(
            "{}/rate_limits/{}",
            project_url(self.base_url.trim_end_matches('/'), project).map_err(provider_error)?,
            limit.id
        );
        let response = self
            .http
            .post(url)
            .bearer_auth(self.admin_key.expose())
            .json(&limit.limits)
            .send()
            .await
            .map_err(|e| transport(KIND, e))?;
        success(KIND, response).await.map(|_| ())
    }
}
