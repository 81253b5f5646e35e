//! The HTTP channels: Slack, PagerDuty, Teams, Discord and the signed generic webhook.

use async_trait::async_trait;

use spendguard_app::ports::channels::{Channel, SendError};

use spendguard_domain::message::Message;

use crate::poster::Poster;

use spendguard_domain::alert::AlertKind;
use spendguard_domain::format;
use spendguard_domain::secret::Secret;
use spendguard_domain::settings::ChannelKind;
use spendguard_domain::standard_webhooks::WebhookSecret;

/// The Events API v2 endpoint.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// Slack, Teams and Discord: a payload POSTed to a secret URL.
pub struct UrlChannel {
    pub kind: ChannelKind,
    pub url: Secret,
    pub poster: Poster,
}

#[async_trait]
impl Channel for UrlChannel {
    fn kind(&self) -> ChannelKind {
        self.kind
    }

    async fn send(&self, message: &Message) -> Result<(), SendError> {
        let body = match self.kind {
            ChannelKind::Slack => format::slack(message),
            ChannelKind::Teams => format::teams(message),
            ChannelKind::Discord => format::discord(message),
            other => {
                return Err(SendError::permanent(format!(
                    "{other:?} is not a URL channel"
                )));
            }
        };
        self.poster.post(&self.url, &body, &[]).await.map(|_| ())
    }
}

pub struct PagerDutyChannel {
    pub routing_key: Secret,
    pub events_url: Secret,
    pub poster: Poster,
}

#[async_trait]
impl Channel for PagerDutyChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Pagerduty
    }

    async fn send(&self, message: &Message) -> Result<(), SendError> {
        let Message::Alert { event, .. } = message else {
            return Err(SendError::permanent(
                "PagerDuty takes single alerts, not digests",
            ));
        };
        if event.kind == AlertKind::Report {
            return Err(SendError::permanent(
                "a daily report is not an incident: PagerDuty does not take it",
            ));
        }
        let body = format::pagerduty(event, self.routing_key.expose());
        self.poster
            .post(&self.events_url, &body, &[])
            .await
            .map(|_| ())
    }
}

/// A receiver of our choosing: the alert JSON, signed as Standard Webhooks.
pub struct WebhookChannel {
    pub url: Secret,
    pub signing: WebhookSecret,
    pub poster: Poster,
}

#[async_trait]
impl Channel for WebhookChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Webhook
    }

    async fn send(&self, message: &Message) -> Result<(), SendError> {
        let id = match message {
            Message::Alert { event, .. } => event.alert_id.clone(),
            Message::Digest { channel, events } => {
                format!(
                    "digest-{channel}-{}",
                    events
                        .first()
                        .map(|e| e.alert_id.as_str())
                        .unwrap_or("empty")
                )
            }
        };
        let body = format::webhook(message).to_string().into_bytes();
        let timestamp = chrono::Utc::now().timestamp();
        let signature = self.signing.sign(&id, timestamp, &body);
        let headers = [
            ("webhook-id", id),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ];
        self.poster
            .post_bytes(&self.url, body, &headers)
            .await
            .map(|_| ())
    }
}
