//! Signed alerts, as the functions use them: the key is read from the vault on first use (a
//! cold start that publishes or receives nothing reads no extra secret), publishers sign with
//! it, and key-guard and fan-out admit only what verifies — a refused message is audited and
//! logged, and never acted on.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::OnceCell;
use tracing::error;

use crate::ports::clock::Clock;
use crate::ports::secrets::{SecretError, SecretVault};
use crate::ports::store::StateStore;
use spendguard_domain::alert_signature::AlertKey;
use spendguard_domain::records::AuditEntry;

/// The alert-signing key of a deployment (`SPENDGUARD_ALERT_SIGNING_KEY_ARN`).
pub struct AlertSigning {
    vault: Arc<dyn SecretVault>,
    reference: String,
    key: OnceCell<AlertKey>,
}

/// Whether a received message may be acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Verified,
    /// Refused (and audited): why.
    Refused(String),
}

impl AlertSigning {
    pub fn new(vault: Arc<dyn SecretVault>, reference: &str) -> Self {
        AlertSigning {
            vault,
            reference: reference.into(),
            key: OnceCell::new(),
        }
    }

    /// The deployment's signing, when it has a key (`SPENDGUARD_ALERT_SIGNING_KEY_ARN`).
    pub fn configured(vault: &Arc<dyn SecretVault>, reference: Option<&str>) -> Option<Arc<Self>> {
        reference.map(|r| Arc::new(AlertSigning::new(vault.clone(), r)))
    }

    /// The key, read once.
    pub async fn key(&self) -> Result<&AlertKey, SecretError> {
        self.key
            .get_or_try_init(|| async {
                let secret = self.vault.read(&self.reference).await?;
                AlertKey::parse(secret.expose()).map_err(|message| SecretError {
                    reference: self.reference.clone(),
                    message,
                })
            })
            .await
    }

    /// Admits `message` (SNS message `message_id`) when `signature` verifies; otherwise writes
    /// an audit entry `forged_alert_refused` and refuses it. An unreadable key is an error
    /// (the invocation fails and is retried), not a refusal.
    pub async fn admit(
        &self,
        store: &dyn StateStore,
        clock: &dyn Clock,
        receiver: &str,
        message_id: &str,
        message: &str,
        signature: Option<&str>,
    ) -> Result<Admission, SecretError> {
        let Err(why) = self.key().await?.verify(message, signature) else {
            return Ok(Admission::Verified);
        };
        let why = why.to_string();
        // the message is the sender's: only a bounded prefix reaches the log and the audit
        let excerpt: String = message.chars().take(300).collect();
        let message_id: String = message_id.chars().take(100).collect();
        error!(%message_id, reason = %why, "{receiver}: alert refused, not signed by spendguard");
        let entry = AuditEntry {
            id: uuid::Uuid::new_v4().to_string(),
            at: clock.now(),
            actor: receiver.into(),
            action: "forged_alert_refused".into(),
            scope: None,
            detail: json!({"message_id": message_id, "reason": why, "message": excerpt}),
        };
        if let Err(e) = store.append_audit(&entry).await {
            error!(error = %e, "the refusal's audit entry was not written");
        }
        Ok(Admission::Refused(why))
    }
}
