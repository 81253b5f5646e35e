//! Anthropic admin API: a key's `status` is `active` or `inactive` (reversible; `archived` is
//! final and never used here).

use async_trait::async_trait;
use serde_json::{Value, json};

use spendguard_domain::keys::{Credential, KeySpec, ProviderKind};

use spendguard_app::ports::keys::{KeyProvider, ProviderError};
use spendguard_app::ports::rate_limits::ProviderRateLimits;
use spendguard_app::ports::shutdown::{ShutdownError, ShutdownTarget};
use spendguard_domain::resources::{
    Resource, ResourceKind, ResourceState, anthropic_limit_workspace, provider_limits,
};
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;
use spendguard_domain::throttle::{ANTHROPIC_THROTTLED_GROUPS, ModelRateLimit};

use crate::keys::{success, transport};
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
        success(KIND, response).await.map(|_| ())
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
        let response = success(KIND, response).await?;
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
        success(KIND, response).await.map(|_| ())
    }
}

/// Anthropic's monthly spend limits of a workspace or of the organisation (`GET|POST
/// /v1/organizations/spend_limits`, `DELETE …/{id}`; amounts are decimal strings of cents).
/// An early-access preview: driven only when the deployment opts in, and then a refusal (not
/// enabled, revoked key) fails the stop like any other.
pub struct AnthropicSpendLimits {
    pub http: reqwest::Client,
    /// `https://api.anthropic.com` in production.
    pub base_url: String,
    pub admin_key: Secret,
}

/// A list request's query parameters.
type Query = Vec<(&'static str, String)>;

/// Pages of limits read at most (20 a page by default; we ask for 100).
const LIMIT_PAGES: usize = 20;

impl AnthropicSpendLimits {
    fn url(&self) -> String {
        format!(
            "{}/v1/organizations/spend_limits",
            self.base_url.trim_end_matches('/')
        )
    }

    /// The scope object of a resource, and its query filter.
    fn scope(resource: &Resource) -> Result<(Value, Query), ShutdownError> {
        match anthropic_limit_workspace(resource) {
            None => Ok((
                json!({"type": "organization"}),
                vec![("scope_type", "organization".into())],
            )),
            Some(w)
                if !w.is_empty()
                    && w.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                Ok((
                    json!({"type": "workspace", "workspace_id": w}),
                    vec![
                        ("scope_type", "workspace".into()),
                        ("workspace_id", w.into()),
                    ],
                ))
            }
            Some(w) => Err(ShutdownError(format!(
                "Anthropic workspace id `{w}` is not one Anthropic issues (letters, digits, `_`, `-`)"
            ))),
        }
    }

    /// The monthly limit object on the resource's scope, if one is set.
    async fn find(&self, resource: &Resource) -> Result<Option<Value>, ShutdownError> {
        let (scope, filter) = Self::scope(resource)?;
        let mut page: Option<String> = None;
        for _ in 0..LIMIT_PAGES {
            let mut query = filter.clone();
            query.push(("limit", "100".into()));
            query.extend(page.take().map(|p| ("page", p)));
            let response = self
                .http
                .get(self.url())
                .query(&query)
                .header("x-api-key", self.admin_key.expose())
                .header("anthropic-version", VERSION)
                .send()
                .await
                .map_err(|e| ShutdownError(transport(KIND, e).to_string()))?;
            let response = success(KIND, response)
                .await
                .map_err(|e| ShutdownError(e.to_string()))?;
            let body: Value = response.json().await.map_err(|e| {
                ShutdownError(format!(
                    "Anthropic answered spend limits spendguard cannot read: {}",
                    e.without_url()
                ))
            })?;
            let found = body["data"].as_array().into_iter().flatten().find(|l| {
                l["period"] == "monthly"
                    && l["scope"]["type"] == scope["type"]
                    && (scope.get("workspace_id").is_none()
                        || l["scope"]["workspace_id"] == scope["workspace_id"])
            });
            if let Some(l) = found {
                return Ok(Some(l.clone()));
            }
            match body["next_page"].as_str() {
                Some(next) if body["has_more"] != false => page = Some(next.to_string()),
                _ => return Ok(None),
            }
        }
        Err(ShutdownError(format!(
            "more than {LIMIT_PAGES} pages of Anthropic spend limits"
        )))
    }
}

#[async_trait]
impl ShutdownTarget for AnthropicSpendLimits {
    async fn opted_in(
        &self,
        policy: &PolicySet,
        _scope: &Scope,
    ) -> Result<Vec<Resource>, ShutdownError> {
        Ok(provider_limits(policy)
            .into_iter()
            .filter(|r| r.kind == ResourceKind::AnthropicSpendLimit)
            .collect())
    }

    fn stops_with_keys(&self) -> bool {
        true
    }

    /// An organisation without the early access is answered 403 or 404 on the collection.
    async fn enabled(&self) -> Result<bool, ShutdownError> {
        let response = self
            .http
            .get(self.url())
            .query(&[("limit", "1")])
            .header("x-api-key", self.admin_key.expose())
            .header("anthropic-version", VERSION)
            .send()
            .await
            .map_err(|e| ShutdownError(transport(KIND, e).to_string()))?;
        match response.status().as_u16() {
            403 | 404 => Ok(false),
            _ => success(KIND, response)
                .await
                .map(|_| true)
                .map_err(|e| ShutdownError(e.to_string())),
        }
    }

    async fn state(&self, resource: &Resource) -> Result<ResourceState, ShutdownError> {
        let Some(limit) = self.find(resource).await? else {
            return Ok(ResourceState::SpendLimit { cents: None });
        };
        if !limit["currency"]
            .as_str()
            .is_some_and(|c| c.eq_ignore_ascii_case("USD"))
        {
            return Err(ShutdownError(format!(
                "Anthropic's spend limit of {} is in {}, not USD: left alone",
                resource.id, limit["currency"]
            )));
        }
        let cents = match &limit["amount"] {
            // an explicit no-limit override
            Value::Null => None,
            Value::String(a) if !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) => {
                Some(a.parse::<u64>().map_err(|_| {
                    ShutdownError(format!(
                        "Anthropic's spend limit amount {a} is out of range"
                    ))
                })?)
            }
            other => {
                return Err(ShutdownError(format!(
                    "Anthropic answered a spend limit amount spendguard cannot read: {other}"
                )));
            }
        };
        Ok(ResourceState::SpendLimit { cents })
    }

    async fn set(&self, resource: &Resource, to: &ResourceState) -> Result<(), ShutdownError> {
        let request = match to {
            ResourceState::SpendLimit { cents: Some(cents) } => {
                let (scope, _) = Self::scope(resource)?;
                self.http.post(self.url()).json(
                    &json!({"amount": cents.to_string(), "scope": scope, "period": "monthly"}),
                )
            }
            ResourceState::SpendLimit { cents: None } => {
                // none before the stop: the limit the stop set is deleted
                let Some(limit) = self.find(resource).await? else {
                    return Ok(());
                };
                let id = limit["id"].as_str().unwrap_or_default();
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(ShutdownError(format!(
                        "Anthropic answered a spend limit id spendguard cannot use: {}",
                        limit["id"]
                    )));
                }
                self.http.delete(format!("{}/{id}", self.url()))
            }
            other => {
                return Err(ShutdownError(format!(
                    "an Anthropic spend limit cannot be set to {other}"
                )));
            }
        };
        let response = request
            .header("x-api-key", self.admin_key.expose())
            .header("anthropic-version", VERSION)
            .send()
            .await
            .map_err(|e| ShutdownError(transport(KIND, e).to_string()))?;
        success(KIND, response)
            .await
            .map(|_| ())
            .map_err(|e| ShutdownError(e.to_string()))
    }
}

/// An Anthropic workspace's rate limits (`GET /v1/organizations/workspaces/{id}/rate_limits`
/// with `include_inherited=true`, `POST …/rate_limits/{rate_limit_id}`): a `reduce_limits`
/// stores the lowered values as the workspace's overrides; its recovery puts back the
/// workspace's own values and clears the overrides it did not have. Anthropic applies changes
/// within about an hour: a standing brake, not an emergency one (the spend limit is that).
pub struct AnthropicRateLimits {
    pub http: reqwest::Client,
    /// `https://api.anthropic.com` in production.
    pub base_url: String,
    pub admin_key: Secret,
}

/// Pages of rate limits read at most (without `limit`, Anthropic answers them all in one).
const RATE_LIMIT_PAGES: usize = 20;
/// Limiter types one update may name (Anthropic's `maxItems`).
const LIMITS_PER_UPDATE: usize = 16;

/// An id Anthropic issues (workspace, rate limit): safe in a path.
fn anthropic_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn unreadable(message: String) -> ProviderError {
    ProviderError::Unavailable {
        provider: KIND,
        message: format!("Anthropic answered {message}"),
    }
}

/// One entry of the list, if its group is one a throttle lowers.
fn workspace_rate_limit(entry: &Value) -> Result<Option<ModelRateLimit>, ProviderError> {
    let group = entry["group"]["type"].as_str().unwrap_or_default();
    if !ANTHROPIC_THROTTLED_GROUPS.contains(&group) {
        return Ok(None);
    }
    let id = entry["rate_limit_id"]
        .as_str()
        .filter(|id| anthropic_id(id))
        .ok_or_else(|| {
            unreadable(format!(
                "a rate limit id spendguard cannot use: {}",
                entry["rate_limit_id"]
            ))
        })?;
    let models: Vec<&str> = entry["models"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut limit = ModelRateLimit {
        id: id.to_string(),
        model: if models.is_empty() {
            group.to_string()
        } else {
            format!("{group} ({})", models.join(", "))
        },
        limits: Default::default(),
        inherited: Default::default(),
    };
    for value in entry["limits"].as_array().into_iter().flatten() {
        let kind = value["type"]
            .as_str()
            .ok_or_else(|| unreadable(format!("a rate limit without a type: {value}")))?;
        let amount = match &value["value"] {
            // no limit of this type, neither the workspace's nor the organisation's
            Value::Null => continue,
            v => v.as_u64().ok_or_else(|| {
                unreadable(format!(
                    "a `{kind}` limit that is not a non-negative integer: {v}"
                ))
            })?,
        };
        limit.limits.insert(kind.to_string(), amount);
        match value["source"]["type"].as_str() {
            Some("organization") => {
                limit.inherited.insert(kind.to_string());
            }
            Some("workspace") => {}
            _ => {
                return Err(unreadable(format!(
                    "a `{kind}` limit without its source: {}",
                    value["source"]
                )));
            }
        }
    }
    Ok(Some(limit))
}

impl AnthropicRateLimits {
    fn url(&self, workspace: &str) -> Result<String, ProviderError> {
        if !anthropic_id(workspace) {
            return Err(ProviderError::Refused {
                provider: KIND,
                message: format!(
                    "Anthropic workspace id `{workspace}` is not one Anthropic issues (letters, digits, `_`, `-`)"
                ),
            });
        }
        Ok(format!(
            "{}/v1/organizations/workspaces/{workspace}/rate_limits",
            self.base_url.trim_end_matches('/')
        ))
    }
}

#[async_trait]
impl ProviderRateLimits for AnthropicRateLimits {
    fn provider(&self) -> ProviderKind {
        KIND
    }

    fn takes_effect(&self) -> Option<&'static str> {
        Some("within about an hour (Anthropic applies workspace rate limits within about an hour)")
    }

    async fn rate_limits(&self, workspace: &str) -> Result<Vec<ModelRateLimit>, ProviderError> {
        let url = self.url(workspace)?;
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        for _ in 0..RATE_LIMIT_PAGES {
            let mut query = vec![("include_inherited", "true".to_string())];
            query.extend(page.take().map(|p| ("page", p)));
            let response = self
                .http
                .get(&url)
                .query(&query)
                .header("x-api-key", self.admin_key.expose())
                .header("anthropic-version", VERSION)
                .send()
                .await
                .map_err(|e| transport(KIND, e))?;
            let body: Value = success(KIND, response).await?.json().await.map_err(|e| {
                unreadable(format!(
                    "rate limits spendguard cannot read: {}",
                    e.without_url()
                ))
            })?;
            let Some(data) = body["data"].as_array() else {
                return Err(unreadable(format!("rate limits without `data`: {body}")));
            };
            for entry in data {
                out.extend(workspace_rate_limit(entry)?);
            }
            match body["next_page"].as_str() {
                Some(next) => page = Some(next.to_string()),
                None => return Ok(out),
            }
        }
        Err(unreadable(format!(
            "more than {RATE_LIMIT_PAGES} pages of rate limits for workspace {workspace}"
        )))
    }

    async fn set_rate_limit(
        &self,
        workspace: &str,
        limit: &ModelRateLimit,
    ) -> Result<(), ProviderError> {
        if !anthropic_id(&limit.id) {
            return Err(ProviderError::Refused {
                provider: KIND,
                message: format!("rate limit id `{}` is not one Anthropic issues", limit.id),
            });
        }
        let url = format!("{}/{}", self.url(workspace)?, limit.id);
        // the organisation's values are put back by clearing the workspace's override
        let values: Vec<Value> = limit
            .limits
            .iter()
            .map(|(kind, value)| {
                if limit.inherited.contains(kind) {
                    json!({"type": kind, "value": null})
                } else {
                    json!({"type": kind, "value": value})
                }
            })
            .collect();
        for chunk in values.chunks(LIMITS_PER_UPDATE) {
            let response = self
                .http
                .post(&url)
                .header("x-api-key", self.admin_key.expose())
                .header("anthropic-version", VERSION)
                .json(&json!({ "limits": chunk }))
                .send()
                .await
                .map_err(|e| transport(KIND, e))?;
            success(KIND, response).await?;
        }
        Ok(())
    }
}
