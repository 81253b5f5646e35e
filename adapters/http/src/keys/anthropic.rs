//! Anthropic admin API: a key's `status` is `active` or `inactive` (reversible; `archived` is
//! final and never used here).

use async_trait::async_trait;
use serde_json::{Value, json};

use spendguard_domain::keys::{Credential, KeySpec, ProviderKind};

use spendguard_app::ports::keys::{KeyProvider, ProviderError};
use spendguard_app::ports::shutdown::{ShutdownError, ShutdownTarget};
use spendguard_domain::resources::{
    Resource, ResourceKind, ResourceState, anthropic_limit_workspace, provider_limits,
};
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;

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
