//! Delivery channels behind one `Channel` trait: Slack, PagerDuty, Teams, Discord, a signed
//! generic webhook, e-mail (SES v2) and the log. Payloads are built by pure functions in
//! `format`; the HTTP channels share a poster that retries with backoff and jitter, honours
//! `Retry-After`, and stays within a deadline.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::Value;

use crate::alert::AlertEvent;
use crate::budget::ChannelKind;
use crate::secret::Secret;
use crate::verify::standard_webhooks::WebhookSecret;

pub mod email;
pub mod format;
pub mod http_channels;

/// What a channel is asked to deliver.
#[derive(Debug, Clone)]
pub enum Message {
    /// One alert, with the kill-switch state of its scope at delivery time.
    Alert {
        event: Box<AlertEvent>,
        kill_switch: String,
    },
    /// Warnings collected over an interval, oldest first.
    Digest {
        channel: String,
        events: Vec<AlertEvent>,
    },
}

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

/// Retries of one delivery: all attempts together stay within `deadline`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    pub attempt_timeout: Duration,
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            first_backoff: Duration::from_millis(300),
            max_backoff: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(20),
        }
    }
}

/// A channel endpoint must be https; plain http only to a loopback stand-in.
pub fn check_endpoint(url: &str) -> Result<reqwest::Url, SendError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| SendError::permanent("the channel endpoint is not a URL"))?;
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost"));
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        _ => Err(SendError::permanent(
            "the channel endpoint must be https (TLS-less URLs are refused)",
        )),
    }
}

fn jitter(max: Duration) -> Duration {
    let r = u64::from(uuid::Uuid::new_v4().as_bytes()[0]);
    max.mul_f64(r as f64 / 255.0)
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// POSTs a body with retries. The endpoint is a secret: it appears in no error.
#[derive(Clone)]
pub struct Poster {
    pub http: reqwest::Client,
    pub policy: RetryPolicy,
}

impl Poster {
    pub async fn post(
        &self,
        endpoint: &Secret,
        body: &Value,
        headers: &[(&str, String)],
    ) -> Result<StatusCode, SendError> {
        self.post_bytes(endpoint, body.to_string().into_bytes(), headers)
            .await
    }

    pub async fn post_bytes(
        &self,
        endpoint: &Secret,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<StatusCode, SendError> {
        let url = check_endpoint(endpoint.expose())?;
        let started = Instant::now();
        let mut backoff = self.policy.first_backoff;
        let mut last = String::new();
        for attempt in 1..=self.policy.max_attempts {
            let left = self.policy.deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            let mut request = self
                .http
                .post(url.clone())
                .timeout(self.policy.attempt_timeout.min(left))
                .header("content-type", "application/json")
                .body(body.clone());
            for (k, v) in headers {
                request = request.header(*k, v);
            }
            let mut wait = backoff + jitter(backoff / 2);
            match request.send().await {
                Ok(r) if r.status().is_success() => return Ok(r.status()),
                Ok(r) => {
                    let status = r.status();
                    if let Some(after) = retry_after(&r) {
                        wait = after;
                    }
                    last = format!("HTTP {status}");
                    if !(status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()) {
                        return Err(SendError::permanent(format!("refused: {last}")));
                    }
                }
                Err(e) if e.is_timeout() => last = "timed out".into(),
                Err(e) if e.is_connect() => last = "connection failed".into(),
                Err(e) => last = e.without_url().to_string(),
            }
            let left = self.policy.deadline.saturating_sub(started.elapsed());
            if attempt == self.policy.max_attempts || wait.min(self.policy.max_backoff) >= left {
                break;
            }
            tokio::time::sleep(wait.min(self.policy.max_backoff)).await;
            backoff = (backoff * 2).min(self.policy.max_backoff);
        }
        Err(SendError {
            message: format!("gave up: {last}"),
            retryable: true,
        })
    }
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

/// Builds a channel from its kind and the value of its secret:
/// Slack, Teams, Discord: the webhook URL (or `{"url": ...}`);
/// PagerDuty: the routing key (or `{"routing_key": ..., "url": ...}`);
/// webhook: `{"url": ..., "secret": "whsec_..."}`; e-mail: `{"from": ..., "to": [...]}`.
pub fn build(
    kind: ChannelKind,
    secret: Option<Secret>,
    poster: &Poster,
    ses: &aws_sdk_sesv2::Client,
) -> Result<Box<dyn Channel>, String> {
    let need = |s: Option<Secret>| s.ok_or_else(|| "the channel's secret is missing".to_string());
    let json = |s: &Secret| serde_json::from_str::<Value>(s.expose()).ok();
    let field = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_string);
    Ok(match kind {
        ChannelKind::Log => Box::new(LogChannel),
        ChannelKind::Slack | ChannelKind::Teams | ChannelKind::Discord => {
            let s = need(secret)?;
            let url = json(&s)
                .and_then(|v| field(&v, "url"))
                .map(Secret::new)
                .unwrap_or(s);
            check_endpoint(url.expose()).map_err(|e| e.message)?;
            Box::new(http_channels::UrlChannel {
                kind,
                url,
                poster: poster.clone(),
            })
        }
        ChannelKind::Pagerduty => {
            let s = need(secret)?;
            let (key, url) = match json(&s) {
                Some(v) => (
                    field(&v, "routing_key").ok_or("the PagerDuty secret lacks `routing_key`")?,
                    field(&v, "url").unwrap_or_else(|| http_channels::PAGERDUTY_EVENTS_URL.into()),
                ),
                None => (
                    s.expose().to_string(),
                    http_channels::PAGERDUTY_EVENTS_URL.into(),
                ),
            };
            if key.len() != 32 {
                return Err("a PagerDuty routing key has 32 characters".into());
            }
            check_endpoint(&url).map_err(|e| e.message)?;
            Box::new(http_channels::PagerDutyChannel {
                routing_key: Secret::new(key),
                events_url: Secret::new(url),
                poster: poster.clone(),
            })
        }
        ChannelKind::Webhook => {
            let s = need(secret)?;
            let v = json(&s)
                .ok_or("a webhook secret is JSON: {\"url\": ..., \"secret\": \"whsec_...\"}")?;
            let url = field(&v, "url").ok_or("the webhook secret lacks `url`")?;
            check_endpoint(&url).map_err(|e| e.message)?;
            let signing = WebhookSecret::parse(
                &field(&v, "secret").ok_or("the webhook secret lacks `secret`")?,
            )?;
            Box::new(http_channels::WebhookChannel {
                url: Secret::new(url),
                signing,
                poster: poster.clone(),
            })
        }
        ChannelKind::Email => {
            let s = need(secret)?;
            let v = json(&s).ok_or("an e-mail secret is JSON: {\"from\": ..., \"to\": [...]}")?;
            let from = field(&v, "from").ok_or("the e-mail secret lacks `from`")?;
            let to: Vec<String> = v
                .get("to")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            if to.is_empty() || to.len() > 50 {
                return Err("an e-mail channel needs 1 to 50 addresses in `to`".into());
            }
            Box::new(email::EmailChannel {
                client: ses.clone(),
                from,
                to,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_endpoints() {
        assert!(check_endpoint("https://hooks.slack.com/services/T/B/X").is_ok());
        assert!(check_endpoint("http://127.0.0.1:8080/hook").is_ok());
        let refused = check_endpoint("http://hooks.slack.com/services/T/B/X").unwrap_err();
        assert!(refused.message.contains("TLS-less") && !refused.retryable);
        assert!(check_endpoint("ftp://x").is_err());
        assert!(
            !check_endpoint("not a url")
                .unwrap_err()
                .message
                .contains("not a url")
        );
    }
}
