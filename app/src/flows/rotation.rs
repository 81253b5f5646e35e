//! Secrets Manager rotation (flow 5): `createSecret`, `setSecret`, `testSecret`,
//! `finishSecret`, each idempotent per `ClientRequestToken`. AWSCURRENT is never moved before
//! `testSecret` passed for that version; AWSPENDING is always removed at the end; the previous
//! provider key is disabled only after the new one is current.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Duration;
use serde::Deserialize;
use tracing::info;

use spendguard_domain::keys::{Credential, KeySpec, ProviderKind, RotationStrategy};

use crate::lease::Claimed;
use crate::ports::clock::Clock;
use crate::ports::keys::KeyProvider;
use crate::ports::secret_versions::RotationSecrets;
use crate::ports::store::{StateStore, StoreError};
use spendguard_domain::ids::KeyId;
use spendguard_domain::records::{AuditEntry, Claim, Lease};
use spendguard_domain::secret::Secret;
use spendguard_domain::standard_webhooks::{self, WebhookSecret};

/// The version stage an operator (or CI) puts a new provider key under before rotating.
pub const STAGED: &str = "SPENDGUARD_STAGED";
const CURRENT: &str = "AWSCURRENT";
const PENDING: &str = "AWSPENDING";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Set,
    Test,
    Finish,
}

impl Step {
    /// `createSecret` or `create_secret` (both spellings appear in AWS documents).
    pub fn parse(name: &str) -> Option<Step> {
        Some(match name {
            "createSecret" | "create_secret" => Step::Create,
            "setSecret" | "set_secret" => Step::Set,
            "testSecret" | "test_secret" => Step::Test,
            "finishSecret" | "finish_secret" => Step::Finish,
            _ => return None,
        })
    }
}

/// The event Secrets Manager sends. `RotationToken` is sensitive: it is passed on, never logged.
#[derive(Deserialize)]
pub struct RotationEvent {
    #[serde(rename = "Step")]
    pub step: String,
    #[serde(rename = "SecretId")]
    pub secret_id: String,
    #[serde(rename = "ClientRequestToken")]
    pub token: String,
    #[serde(rename = "RotationToken", default)]
    rotation_token: Option<String>,
}

impl std::fmt::Debug for RotationEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotationEvent")
            .field("step", &self.step)
            .field("secret_id", &self.secret_id)
            .field("token", &self.token)
            .field(
                "rotation_token",
                &self.rotation_token.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationError {
    #[error("unknown rotation step `{0}`")]
    UnknownStep(String),
    #[error("rotation is not enabled for secret {0}")]
    NotEnabled(String),
    #[error("secret {secret}: version {token} has no stage for rotation")]
    UnknownVersion { secret: String, token: String },
    #[error("secret {secret}: version {token} is not AWSPENDING")]
    NotPending { secret: String, token: String },
    #[error("secret {0} is not a rotated key in the registry (add `rotation` to its [[key]])")]
    NotRegistered(String),
    #[error(
        "secret {0}: stage the new key first: put-secret-value --version-stages SPENDGUARD_STAGED"
    )]
    NothingStaged(String),
    #[error("secret {0}: testSecret has not passed for this version; it will not become current")]
    NotTested(String),
    #[error("secret {secret}: the new value does not work: {message}")]
    TestFailed { secret: String, message: String },
    #[error("Secrets Manager: {0}")]
    SecretsManager(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RotationError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RotationError::SecretsManager(_) | RotationError::Store(_)
        )
    }
}

fn sm(e: impl std::fmt::Display) -> RotationError {
    RotationError::SecretsManager(e.to_string())
}

pub struct Rotator {
    pub secrets: Arc<dyn RotationSecrets>,
    pub store: Arc<dyn StateStore>,
    pub providers: Vec<Arc<dyn KeyProvider>>,
    pub clock: Arc<dyn Clock>,
}

struct Versions {
    arn: String,
    name: String,
    stages: Vec<(String, Vec<String>)>,
}

impl Versions {
    fn with_stage(&self, stage: &str) -> Option<&str> {
        self.stages
            .iter()
            .find(|(_, s)| s.iter().any(|x| x == stage))
            .map(|(v, _)| v.as_str())
    }

    fn stages_of(&self, version: &str) -> Option<&Vec<String>> {
        self.stages
            .iter()
            .find(|(v, _)| v == version)
            .map(|(_, s)| s)
    }
}

impl Rotator {
    async fn versions(&self, secret: &str) -> Result<Versions, RotationError> {
        let d = self.secrets.describe(secret).await.map_err(sm)?;
        if !d.rotation_enabled {
            return Err(RotationError::NotEnabled(secret.into()));
        }
        Ok(Versions {
            arn: d.arn,
            name: d.name,
            stages: d.stages,
        })
    }

    async fn value(
        &self,
        secret: &str,
        version: Option<&str>,
        stage: &str,
    ) -> Result<Option<Secret>, RotationError> {
        self.secrets.value(secret, version, stage).await.map_err(sm)
    }

    async fn key_for(&self, v: &Versions) -> Result<(KeySpec, RotationStrategy), RotationError> {
        self.store
            .keys()
            .await?
            .into_iter()
            .find_map(|k| {
                let arn = k.spec.secret_arn.as_deref()?;
                let strategy = k.spec.rotation?;
                (arn == v.arn || arn == v.name).then(|| (k.spec.clone(), strategy))
            })
            .ok_or_else(|| RotationError::NotRegistered(v.name.clone()))
    }

    async fn audit(&self, key: &KeySpec, step: &str, token: &str) {
        let entry = AuditEntry {
            id: uuid::Uuid::new_v4().to_string(),
            at: self.clock.now(),
            actor: "secrets-manager".into(),
            action: format!("rotation_{step}"),
            scope: Some(key.scope.clone()),
            detail: serde_json::json!({"key": key.id, "version": token}),
        };
        if let Err(e) = self.store.append_audit(&entry).await {
            tracing::warn!(error = %e, step, "rotation step not audited");
        }
    }

    /// The claim that records `testSecret` passing for a version (finishSecret requires it).
    fn tested(&self, key: &KeySpec, token: &str) -> Claim {
        let now = self.clock.now();
        Claim::key(
            &KeyId::new(&key.id),
            &format!("tested#{token}"),
            Lease::new(token, Duration::minutes(1), now + Duration::days(30)),
        )
    }

    /// Runs one step. Returns what it did, for the log.
    pub async fn run(&self, event: &RotationEvent) -> Result<&'static str, RotationError> {
        let step = Step::parse(&event.step)
            .ok_or_else(|| RotationError::UnknownStep(event.step.clone()))?;
        let secret = event.secret_id.as_str();
        let token = event.token.as_str();
        let v = self.versions(secret).await?;
        let stages = v
            .stages_of(token)
            .ok_or_else(|| RotationError::UnknownVersion {
                secret: secret.into(),
                token: token.into(),
            })?;
        if stages.iter().any(|s| s == CURRENT) {
            // finished before (a retried finishSecret): only make sure nothing is left pending
            if step == Step::Finish && stages.iter().any(|s| s == PENDING) {
                self.remove_pending(secret, token).await?;
            }
            return Ok("already current");
        }
        if !stages.iter().any(|s| s == PENDING) {
            return Err(RotationError::NotPending {
                secret: secret.into(),
                token: token.into(),
            });
        }
        let (key, strategy) = self.key_for(&v).await?;
        info!(key = %key.id, step = ?step, version = %token, "rotation step");
        let done = match step {
            Step::Create => {
                self.create(&v, strategy, token, event.rotation_token.as_deref())
                    .await?
            }
            Step::Set => "nothing to install: consumers read the secret from Secrets Manager",
            Step::Test => self.test(&v, &key, strategy, token).await?,
            Step::Finish => self.finish(&v, &key, strategy, token).await?,
        };
        self.audit(&key, &event.step, token).await;
        Ok(done)
    }

    async fn create(
        &self,
        v: &Versions,
        strategy: RotationStrategy,
        token: &str,
        rotation_token: Option<&str>,
    ) -> Result<&'static str, RotationError> {
        let current = self.value(&v.arn, None, CURRENT).await?;
        let pending = self.value(&v.arn, Some(token), PENDING).await?;
        // a pending value that differs from the current one was made by an earlier attempt
        if pending.is_some() && pending != current {
            return Ok("already created");
        }
        let value = match strategy {
            RotationStrategy::Generated => {
                let random = self.secrets.random_password(48).await.map_err(sm)?;
                let fresh = format!("whsec_{}", STANDARD.encode(random.as_bytes()));
                // keep the previous secret verifying while senders switch over
                match current
                    .as_ref()
                    .and_then(|c| c.expose().split_whitespace().next().map(str::to_string))
                {
                    Some(previous) => format!("{fresh} {previous}"),
                    None => fresh,
                }
            }
            RotationStrategy::Staged => {
                let staged = self
                    .value(&v.arn, None, STAGED)
                    .await?
                    .ok_or_else(|| RotationError::NothingStaged(v.name.clone()))?;
                if Some(&staged) == current.as_ref() {
                    return Err(RotationError::NothingStaged(v.name.clone()));
                }
                staged.expose().to_string()
            }
        };
        self.secrets
            .put_pending(&v.arn, token, &value, rotation_token)
            .await
            .map_err(sm)?;
        Ok("created the pending version")
    }

    async fn test(
        &self,
        v: &Versions,
        key: &KeySpec,
        strategy: RotationStrategy,
        token: &str,
    ) -> Result<&'static str, RotationError> {
        let pending = self
            .value(&v.arn, Some(token), PENDING)
            .await?
            .ok_or_else(|| RotationError::TestFailed {
                secret: v.name.clone(),
                message: "the pending version has no value".into(),
            })?;
        let failed = |message: String| RotationError::TestFailed {
            secret: v.name.clone(),
            message,
        };
        match strategy {
            RotationStrategy::Generated => {
                // a signed round trip with the new secret, verified as consumers verify
                let secrets = WebhookSecret::parse_list(pending.expose()).map_err(failed)?;
                let now = self.clock.now();
                let signature = secrets[0].sign("rotation-test", now.timestamp(), b"{}");
                standard_webhooks::verify(
                    &secrets,
                    Some("rotation-test"),
                    Some(&now.timestamp().to_string()),
                    Some(&signature),
                    b"{}",
                    now,
                )
                .map_err(|e| failed(e.to_string()))?;
            }
            RotationStrategy::Staged => {
                let provider = self
                    .providers
                    .iter()
                    .find(|p| p.kind() == key.provider && key.provider != ProviderKind::SecretOnly)
                    .ok_or_else(|| {
                        failed(format!(
                            "no {} access configured to test the key",
                            key.provider
                        ))
                    })?;
                provider
                    .test(&Credential::parse(&pending))
                    .await
                    .map_err(|e| failed(e.to_string()))?;
            }
        }
        let claim = self.tested(key, token);
        match Claimed::take(self.store.as_ref(), claim, self.clock.now()).await? {
            Claimed::Won(held) => held.finish().await?,
            Claimed::Done | Claimed::Busy => {}
        }
        Ok("the pending value works")
    }

    async fn remove_pending(&self, secret: &str, token: &str) -> Result<(), RotationError> {
        self.secrets
            .move_stage(secret, PENDING, None, Some(token))
            .await
            .map_err(sm)
    }

    async fn finish(
        &self,
        v: &Versions,
        key: &KeySpec,
        strategy: RotationStrategy,
        token: &str,
    ) -> Result<&'static str, RotationError> {
        // never make an untested version current
        let claim = self.tested(key, token);
        match Claimed::take(self.store.as_ref(), claim, self.clock.now()).await? {
            Claimed::Done => {}
            Claimed::Won(held) => {
                held.release().await?;
                return Err(RotationError::NotTested(v.name.clone()));
            }
            Claimed::Busy => return Err(RotationError::NotTested(v.name.clone())),
        }
        let previous = v.with_stage(CURRENT).map(str::to_string);
        let previous_value = match &previous {
            Some(p) => self.value(&v.arn, Some(p), CURRENT).await?,
            None => None,
        };
        self.secrets
            .move_stage(&v.arn, CURRENT, Some(token), previous.as_deref())
            .await
            .map_err(sm)?;
        self.remove_pending(&v.arn, token).await?;
        if let Some(staged) = v.with_stage(STAGED) {
            self.secrets
                .move_stage(&v.arn, STAGED, None, Some(staged))
                .await
                .map_err(sm)?;
        }
        if strategy == RotationStrategy::Staged
            && let Some(old) = previous_value
        {
            self.retire(key, &old).await;
        }
        Ok("the new version is current")
    }

    /// Disables the previous provider key once the new one is current (OpenAI: only when
    /// deletion is allowed). A failure here leaves the old key enabled and is reported, not fatal.
    async fn retire(&self, key: &KeySpec, old: &Secret) {
        let Some(old_id) = Credential::parse(old).key_id else {
            return;
        };
        if key.provider == ProviderKind::Openai && !key.allow_delete {
            return;
        }
        let Some(provider) = self.providers.iter().find(|p| p.kind() == key.provider) else {
            return;
        };
        let retired = KeySpec {
            key_id: Some(old_id.clone()),
            ..key.clone()
        };
        match provider.disable(&retired).await {
            Ok(()) => info!(key = %key.id, old = %old_id, "previous key disabled at the provider"),
            Err(e) => {
                tracing::warn!(key = %key.id, old = %old_id, error = %e, "previous key NOT disabled: disable it by hand")
            }
        }
    }
}
