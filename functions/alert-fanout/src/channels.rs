//! Builds each delivery channel from its kind and the value of its secret: the fan-out's
//! composition of the HTTP channels (spendguard-http) and e-mail (SES, spendguard-aws).

use serde_json::Value;
use spendguard_app::ports::channels::{Channel, ChannelBuilder, LogChannel};
use spendguard_aws::email;
use spendguard_domain::secret::Secret;
use spendguard_domain::settings::ChannelKind;
use spendguard_domain::standard_webhooks::WebhookSecret;
use spendguard_http::chat as http_channels;
use spendguard_http::poster::{Poster, check_endpoint};

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

/// The channels this function can build: the HTTP ones over one poster, e-mail over SES.
pub struct Channels {
    pub poster: Poster,
    pub ses: aws_sdk_sesv2::Client,
}

impl ChannelBuilder for Channels {
    fn build(&self, kind: ChannelKind, secret: Option<Secret>) -> Result<Box<dyn Channel>, String> {
        build(kind, secret, &self.poster, &self.ses)
    }

    fn delivery_deadline(&self) -> std::time::Duration {
        self.poster.policy.deadline
    }
}
