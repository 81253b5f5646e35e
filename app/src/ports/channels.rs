//! The delivery channel port: Slack, PagerDuty, Teams, Discord, a signed generic webhook and
//! e-mail are adapters (spendguard-http, spendguard-aws); the log channel is here, as it needs
//! nothing but the process's log. Payloads are built by pure functions (domain::format).

use async_trait::async_trait;
use spendguard_domain::message::Message;
use spendguard_domain::secret::Secret;
use spendguard_domain::settings::ChannelKind;

/// Why a delivery failed. Never contains an endpoint or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub message: String,
    /// Worth trying again (5xx, 429, timeouts, connection errors).
    pub retryable: bool,
}

impl SendError {
    pub fn permanent(message: impl Into<String>) -> Self {
        SendError {
            message: message.into(),
            retryable: false,
        }
    }
}

#[async_trait]
pub trait Channel: Send + Sync {
    fn kind(&self) -> ChannelKind;
    async fn send(&self, message: &Message) -> Result<(), SendError>;
}

/// Writes the alert as one structured log line (always on, needs no secret).
pub struct LogChannel;

#[async_trait]
impl Channel for LogChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Log
    }

    async fn send(&self, message: &Message) -> Result<(), SendError> {
        match message {
            Message::Alert {
                event: e,
                kill_switch,
            } => tracing::info!(
                target: "spendguard::alert",
                alert_id = %e.alert_id, kind = ?e.kind, severity = %e.severity, budget = %e.budget_id,
                scope = %e.scope, window = %e.window, period = %e.period_key, tier = %e.tier,
                spend = %e.spend, limit = %e.limit, percent = %e.percent, kill_switch = %kill_switch,
                "{}", e.summary
            ),
            Message::Digest { channel, events } => tracing::info!(
                target: "spendguard::alert", channel = %channel, alerts = events.len(), "digest"
            ),
        }
        Ok(())
    }
}

/// Builds a channel from its kind and the value of its secret (the function that runs the
/// fan-out knows which adapters it has).
pub trait ChannelBuilder: Send + Sync {
    fn build(&self, kind: ChannelKind, secret: Option<Secret>) -> Result<Box<dyn Channel>, String>;
    /// The longest one delivery takes, retries included (a claim held longer than this by
    /// another invocation is reported unconfirmed).
    fn delivery_deadline(&self) -> std::time::Duration;
}
