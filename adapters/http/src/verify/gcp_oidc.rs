//! Google OIDC tokens on Pub/Sub push requests: `Authorization: Bearer <JWT>`, RS256, verified
//! against Google's JWKS (fetched from a configurable URL, cached by `kid`), then `iss`, `aud`,
//! `exp`, `email` (the push service account) and `email_verified`.

use std::collections::HashMap;
use std::time::{Duration as StdDuration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use tokio::sync::Mutex;

/// Google's JWKS for OIDC tokens (make it configurable: see FACTS.md).
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
const ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];
/// Keys are refreshed at least this often.
const KEYS_TTL: StdDuration = StdDuration::from_secs(3600);
/// An unknown `kid` triggers a refetch at most this often (an attacker cannot make us hammer Google).
const REFETCH_AT_MOST_EVERY: StdDuration = StdDuration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcPolicy {
    /// The expected `aud`: by default the push endpoint URL, or what the subscription sets.
    pub audience: String,
    /// The push subscription's service account.
    pub service_account_email: String,
    pub jwks_url: String,
}

/// Why a token was refused (for logs; the sender only learns 401 or 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("no `Authorization: Bearer` token")]
    MissingToken,
    #[error("token header unreadable: {0}")]
    BadHeader(String),
    #[error("token algorithm {0} is not RS256")]
    WrongAlgorithm(String),
    #[error("token has no `kid`")]
    NoKeyId,
    #[error("no Google key with kid `{0}`")]
    UnknownKey(String),
    #[error("cannot fetch Google's keys: {0}")]
    KeysUnavailable(String),
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("token email `{0}` is not the push service account")]
    WrongEmail(String),
    #[error("token email is not verified")]
    EmailNotVerified,
}

impl OidcError {
    /// Our fault (keys unreachable): the sender should retry; otherwise the token is bad.
    pub fn is_ours(&self) -> bool {
        matches!(self, OidcError::KeysUnavailable(_))
    }

    /// Authenticated as someone else (403) rather than not authenticated (401).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, OidcError::WrongEmail(_) | OidcError::EmailNotVerified)
    }
}

#[derive(Debug, Deserialize)]
pub struct OidcClaims {
    pub iss: String,
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: bool,
    pub exp: i64,
    #[serde(default)]
    pub iat: Option<i64>,
    #[serde(default)]
    pub sub: Option<String>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kid: Option<String>,
    kty: String,
    n: Option<String>,
    e: Option<String>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
    /// When the last fetch failed: no other is tried for [`FAILED_FETCH_BACKOFF`], so an
    /// unreachable Google does not cost every push a five-second wait.
    failed: Option<Instant>,
}

/// How long after a failed fetch of Google's keys no other is tried.
const FAILED_FETCH_BACKOFF: StdDuration = StdDuration::from_secs(30);

pub struct GoogleOidcVerifier {
    policy: OidcPolicy,
    http: reqwest::Client,
    cache: Mutex<KeyCache>,
}

impl GoogleOidcVerifier {
    pub fn new(policy: OidcPolicy, http: reqwest::Client) -> Self {
        GoogleOidcVerifier {
            policy,
            http,
            cache: Mutex::new(KeyCache::default()),
        }
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, DecodingKey>, OidcError> {
        let unavailable = |e: String| OidcError::KeysUnavailable(e);
        let response = self
            .http
            .get(&self.policy.jwks_url)
            .timeout(StdDuration::from_secs(5))
            .send()
            .await
            .map_err(|e| unavailable(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP {}", response.status())));
        }
        let jwks: Jwks = response
            .json()
            .await
            .map_err(|e| unavailable(e.without_url().to_string()))?;
        Ok(jwks
            .keys
            .into_iter()
            .filter(|k| k.kty == "RSA")
            .filter_map(|k| {
                let key =
                    DecodingKey::from_rsa_components(k.n.as_deref()?, k.e.as_deref()?).ok()?;
                Some((k.kid?, key))
            })
            .collect())
    }

    /// The key for `kid`, fetching Google's keys when the cache is stale or lacks it.
    async fn key(&self, kid: &str) -> Result<DecodingKey, OidcError> {
        let mut cache = self.cache.lock().await;
        let stale = cache.fetched.is_none_or(|t| t.elapsed() > KEYS_TTL);
        let may_refetch = cache
            .fetched
            .is_none_or(|t| t.elapsed() > REFETCH_AT_MOST_EVERY);
        let backing_off = cache
            .failed
            .is_some_and(|t| t.elapsed() < FAILED_FETCH_BACKOFF);
        if backing_off && cache.keys.is_empty() {
            return Err(OidcError::KeysUnavailable(
                "Google's keys could not be fetched a moment ago".into(),
            ));
        }
        if !backing_off && (stale || (!cache.keys.contains_key(kid) && may_refetch)) {
            match self.fetch_keys().await {
                Ok(keys) => {
                    cache.keys = keys;
                    cache.fetched = Some(Instant::now());
                    cache.failed = None;
                }
                Err(e) => {
                    cache.failed = Some(Instant::now());
                    // keep serving cached keys if Google is briefly unreachable
                    if cache.keys.is_empty() {
                        return Err(e);
                    }
                }
            }
        }
        cache
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| OidcError::UnknownKey(kid.chars().take(64).collect()))
    }

    /// Verifies the `Authorization` header value of a push request.
    pub async fn verify(&self, authorization: Option<&str>) -> Result<OidcClaims, OidcError> {
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(OidcError::MissingToken)?;
        let header = decode_header(token).map_err(|e| OidcError::BadHeader(e.to_string()))?;
        // only RS256: refuses `none`, and HS256 made with the public key as the secret
        if header.alg != Algorithm::RS256 {
            return Err(OidcError::WrongAlgorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(OidcError::NoKeyId)?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[&self.policy.audience]);
        validation.set_issuer(&ISSUERS);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 30;
        let claims = decode::<OidcClaims>(token, &key, &validation)
            .map_err(|e| OidcError::Invalid(e.to_string()))?
            .claims;
        let email = claims.email.clone().unwrap_or_default();
        if email != self.policy.service_account_email {
            return Err(OidcError::WrongEmail(email));
        }
        if !claims.email_verified {
            return Err(OidcError::EmailNotVerified);
        }
        Ok(claims)
    }
}
