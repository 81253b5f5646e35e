//! GCP behind [`ShutdownTarget`]: projects named in the budgets file (`[[shutdown.gcp]]`) have
//! their billing account unlinked (`billingAccountName: ""`, as Google's own cap-billing sample
//! does) and/or their service accounts' user-managed keys disabled. Access is a Google
//! service-account key kept in Secrets Manager: a signed JWT is exchanged for an access token
//! (cached until shortly before it expires). Every base URL is configurable, so tests use local
//! stand-ins.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use spendguard_domain::resources::{Resource, ResourceKind, ResourceState};

use spendguard_app::ports::shutdown::{ShutdownError, ShutdownTarget};

use spendguard_domain::scope::Scope;
use spendguard_domain::secret::Secret;
use spendguard_domain::settings::PolicySet;

/// Enough for both APIs (Cloud Billing accepts cloud-platform too).
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const BILLING_API: &str = "https://cloudbilling.googleapis.com";
pub const IAM_API: &str = "https://iam.googleapis.com";

/// The fields of a service-account key file that are used.
#[derive(Clone, Deserialize)]
pub struct ServiceAccountKey {
    pub client_email: String,
    pub private_key: Secret,
    #[serde(default)]
    pub token_uri: Option<String>,
}

impl ServiceAccountKey {
    /// Parses a key file (JSON, as Google issues it); the message never shows the key.
    pub fn parse(json: &Secret) -> Result<Self, ShutdownError> {
        serde_json::from_str(json.expose()).map_err(|e| {
            ShutdownError(format!(
                "the Google credential is not a service-account key file (line {}, column {})",
                e.line(),
                e.column()
            ))
        })
    }
}

pub struct GcpShutdown {
    pub http: reqwest::Client,
    /// `None`: no credential configured; naming a GCP project is then an error, not a no-op.
    pub credential: Option<ServiceAccountKey>,
    /// The OAuth token endpoint (default: the key file's `token_uri`).
    pub token_url: Option<String>,
    pub billing_url: String,
    pub iam_url: String,
    token: Mutex<Option<(Secret, Instant)>>,
}

impl GcpShutdown {
    pub fn new(
        http: reqwest::Client,
        credential: Option<ServiceAccountKey>,
        token_url: Option<String>,
        billing_url: String,
        iam_url: String,
    ) -> Self {
        GcpShutdown {
            http,
            credential,
            token_url,
            billing_url: billing_url.trim_end_matches('/').to_string(),
            iam_url: iam_url.trim_end_matches('/').to_string(),
            token: Mutex::new(None),
        }
    }

    fn credential(&self) -> Result<&ServiceAccountKey, ShutdownError> {
        self.credential.as_ref().ok_or_else(|| {
            ShutdownError(
                "GCP projects are named in [shutdown] but key-guard has no Google credential \
                 (SPENDGUARD_GCP_CREDENTIAL_ARN)"
                    .into(),
            )
        })
    }

    /// An access token: the cached one, or a new one for a freshly signed assertion.
    async fn token(&self) -> Result<Secret, ShutdownError> {
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let key = self.credential()?;
        let url = self
            .token_url
            .clone()
            .or_else(|| key.token_uri.clone())
            .unwrap_or_else(|| "https://oauth2.googleapis.com/token".into());
        let now = chrono::Utc::now().timestamp();
        let claims = json!({"iss": key.client_email, "scope": SCOPE, "aud": url, "iat": now, "exp": now + 3600});
        let assertion = sign_rs256(&key.private_key, &claims)?;
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        let response = self
            .http
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| ShutdownError(format!("Google token endpoint: {e}")))?;
        let body = answer(response, "Google token endpoint").await?;
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| ShutdownError("Google token endpoint: no access_token".into()))?;
        let lifetime = body["expires_in"].as_u64().unwrap_or(3600);
        let token = Secret::new(token);
        // a minute early, so a token never expires in the middle of a shutdown
        let until = Instant::now() + Duration::from_secs(lifetime.saturating_sub(60));
        *cached = Some((token.clone(), until));
        Ok(token)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
        what: &str,
    ) -> Result<Value, ShutdownError> {
        let token = self.token().await?;
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(token.expose())
            .timeout(Duration::from_secs(20));
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ShutdownError(format!("{what}: {e}")))?;
        answer(response, what).await
    }

    async fn keys_of(&self, project: &str, account: &str) -> Result<Vec<String>, ShutdownError> {
        let url = format!(
            "{}/v1/projects/{project}/serviceAccounts/{account}/keys?keyTypes=USER_MANAGED",
            self.iam_url
        );
        let body = self
            .call(
                reqwest::Method::GET,
                url,
                None,
                "iam serviceAccounts.keys.list",
            )
            .await?;
        Ok(body["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["name"].as_str().map(str::to_string))
            .collect())
    }
}

/// A JWT signed RS256 with the key file's private key (PKCS#8 PEM, as Google issues it).
fn sign_rs256(private_pem: &Secret, claims: &Value) -> Result<String, ShutdownError> {
    use aws_lc_rs::{rand::SystemRandom, signature};
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let not_a_key =
        || ShutdownError("the Google credential's private_key is not a PKCS#8 RSA key".into());
    let body: String = private_pem
        .expose()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = STANDARD.decode(body.trim()).map_err(|_| not_a_key())?;
    let pair = signature::RsaKeyPair::from_pkcs8(&der).map_err(|_| not_a_key())?;
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{header}.{payload}");
    let mut sig = vec![0; pair.public_modulus_len()];
    pair.sign(
        &signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| ShutdownError("signing the token request failed".into()))?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// The JSON of a successful answer; Google's error status and message otherwise.
async fn answer(response: reqwest::Response, what: &str) -> Result<Value, ShutdownError> {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let error = &body["error"];
    let detail = match (error["status"].as_str(), error["message"].as_str()) {
        (Some(s), Some(m)) => format!("{s}: {m}"),
        // the token endpoint answers {"error": "...", "error_description": "..."}
        _ => format!(
            "{} {}",
            error.as_str().unwrap_or_default(),
            body["error_description"].as_str().unwrap_or_default()
        ),
    };
    Err(ShutdownError(format!(
        "{what}: HTTP {}: {}",
        status.as_u16(),
        detail.trim()
    )))
}

#[async_trait]
impl ShutdownTarget for GcpShutdown {
    async fn opted_in(
        &self,
        policy: &PolicySet,
        scope: &Scope,
    ) -> Result<Vec<Resource>, ShutdownError> {
        let projects: Vec<_> = policy
            .settings
            .shutdown
            .gcp
            .iter()
            .filter(|p| scope.contains(&p.scope))
            .collect();
        if projects.is_empty() {
            return Ok(Vec::new());
        }
        self.credential()?;
        let mut found = Vec::new();
        for p in projects {
            if p.unlink_billing {
                found.push(Resource {
                    kind: ResourceKind::GcpBilling,
                    id: format!("projects/{}/billingInfo", p.project),
                    scope: p.scope.clone(),
                });
            }
            for account in &p.service_accounts {
                for key in self.keys_of(&p.project, account).await? {
                    found.push(Resource {
                        kind: ResourceKind::GcpServiceAccountKey,
                        id: key,
                        scope: p.scope.clone(),
                    });
                }
            }
        }
        Ok(found)
    }

    async fn state(&self, resource: &Resource) -> Result<ResourceState, ShutdownError> {
        match resource.kind {
            ResourceKind::GcpBilling => {
                let url = format!("{}/v1/{}", self.billing_url, resource.id);
                let body = self
                    .call(
                        reqwest::Method::GET,
                        url,
                        None,
                        "cloudbilling projects.getBillingInfo",
                    )
                    .await?;
                let account = body["billingAccountName"]
                    .as_str()
                    .filter(|a| !a.is_empty())
                    .map(str::to_string);
                Ok(ResourceState::Billing { account })
            }
            ResourceKind::GcpServiceAccountKey => {
                let url = format!("{}/v1/{}", self.iam_url, resource.id);
                let body = self
                    .call(
                        reqwest::Method::GET,
                        url,
                        None,
                        "iam serviceAccounts.keys.get",
                    )
                    .await?;
                Ok(ResourceState::KeyDisabled {
                    disabled: body["disabled"].as_bool().unwrap_or(false),
                })
            }
            other => Err(ShutdownError(format!("{other:?} is not a GCP resource"))),
        }
    }

    async fn set(&self, resource: &Resource, to: &ResourceState) -> Result<(), ShutdownError> {
        match (resource.kind, to) {
            (ResourceKind::GcpBilling, ResourceState::Billing { account }) => {
                let url = format!("{}/v1/{}", self.billing_url, resource.id);
                let body = json!({"billingAccountName": account.clone().unwrap_or_default()});
                self.call(
                    reqwest::Method::PUT,
                    url,
                    Some(body),
                    "cloudbilling projects.updateBillingInfo",
                )
                .await?;
            }
            (ResourceKind::GcpServiceAccountKey, ResourceState::KeyDisabled { disabled }) => {
                let verb = if *disabled { "disable" } else { "enable" };
                let url = format!("{}/v1/{}:{verb}", self.iam_url, resource.id);
                self.call(
                    reqwest::Method::POST,
                    url,
                    Some(json!({})),
                    &format!("iam serviceAccounts.keys.{verb}"),
                )
                .await?;
            }
            (kind, state) => {
                return Err(ShutdownError(format!(
                    "a {kind:?} cannot be set to {state}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_that_is_not_one_is_refused_without_showing_it() {
        let err = ServiceAccountKey::parse(&Secret::new("{\"private_key\": \"-----BEGIN")).err();
        let text = err.unwrap().to_string();
        assert!(text.contains("not a service-account key file"), "{text}");
        assert!(!text.contains("BEGIN"), "{text}");
        let ok = ServiceAccountKey::parse(&Secret::new(
            r#"{"type": "service_account", "client_email": "sg@p.iam.gserviceaccount.com", "private_key": "k", "token_uri": "https://oauth2.googleapis.com/token"}"#,
        ))
        .unwrap();
        assert_eq!(ok.client_email, "sg@p.iam.gserviceaccount.com");
    }
}
