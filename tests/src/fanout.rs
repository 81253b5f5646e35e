//! alert-fanout test world: the production wiring (`app::fanout`) against moto (DynamoDB,
//! Secrets Manager, SES) with local stand-ins for Slack, PagerDuty, Teams, Discord and a
//! webhook receiver.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use alert_fanout::app;
use alert_fanout::config::Config;
use alert_fanout::handler::Handler as Fanout;
use serde_json::{Value, json};
use spendguard_app::ports::clock::FixedClock;
use spendguard_aws::dynamo::DynamoStore;
use spendguard_domain::settings::{ChannelKind, ChannelSpec, PolicySet, Settings};
use spendguard_http::poster::RetryPolicy;

use crate::aws;
use crate::standin::{Received, Reply, StandIn};
use spendguard_app::ports::store::PolicyStore;

pub const PAGERDUTY_KEY: &str = "R0UT1NGK3Y0000000000000000000000";
pub const WEBHOOK_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
pub const EMAIL_FROM: &str = "alerts@spendguard.example";

/// How a stand-in behaves; tests switch it while running.
pub mod mode {
    pub const OK: u8 = 0;
    pub const FAIL_500: u8 = 1;
    pub const THROTTLE_ONCE: u8 = 2;
    pub const HANG: u8 = 3;
}

pub struct Receiver {
    pub standin: StandIn,
    pub mode: Arc<AtomicU8>,
}

impl Receiver {
    pub async fn start(success_status: u16) -> Receiver {
        let mode = Arc::new(AtomicU8::new(mode::OK));
        let m = mode.clone();
        let standin = StandIn::start(move |_, n| match m.load(Ordering::SeqCst) {
            mode::FAIL_500 => Reply::json(500, json!({"error": "internal"})),
            mode::THROTTLE_ONCE if n == 0 => Reply {
                status: 429,
                headers: vec![("retry-after", "1".into())],
                body: "slow down".into(),
                ..Default::default()
            },
            mode::HANG => Reply {
                delay: Some(Duration::from_secs(4)),
                ..Reply::json(200, json!({}))
            },
            _ => Reply {
                status: success_status,
                headers: vec![],
                body: if success_status == 200 {
                    "ok".into()
                } else {
                    String::new()
                },
                ..Default::default()
            },
        })
        .await;
        Receiver { standin, mode }
    }

    pub fn set(&self, m: u8) {
        self.mode.store(m, Ordering::SeqCst);
    }

    /// Requests answered with a 2xx count as delivered; the others are attempts.
    pub fn received(&self) -> Vec<Received> {
        self.standin.received()
    }
}

pub struct FanoutWorld {
    pub sdk: aws_config::SdkConfig,
    pub store: DynamoStore,
    pub table: String,
    pub fanout: Fanout,
    pub receivers: BTreeMap<&'static str, Receiver>,
    /// Every secret value the channels use (the log test searches for each).
    pub secret_values: Vec<String>,
    /// The e-mail channel's recipients (unique per world: moto's SES is shared by all tests).
    pub email_to: Vec<String>,
    pub config: Config,
}

impl FanoutWorld {
    /// Channels: ops-slack, oncall-pager, team-teams, dev-discord, audit-hook, finance-email,
    /// plus `extra` (name, kind, secret value) and a digest on `digest-slack`.
    pub async fn new(
        retry: RetryPolicy,
        extra: &[(&str, ChannelKind, String)],
        policy: PolicySet,
    ) -> FanoutWorld {
        let sdk = aws::sdk().await;
        let (store, table) = aws::new_store(&sdk).await;
        let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
        let ses = aws_sdk_sesv2::Client::new(&sdk);
        ses.create_email_identity()
            .email_identity(EMAIL_FROM)
            .send()
            .await
            .unwrap();
        let mut receivers = BTreeMap::new();
        for (name, status) in [
            ("ops-slack", 200),
            ("oncall-pager", 202),
            ("team-teams", 202),
            ("dev-discord", 204),
            ("audit-hook", 200),
            ("digest-slack", 200),
            ("cto-slack", 200),
        ] {
            receivers.insert(name, Receiver::start(status).await);
        }
        let email_to = vec![
            "finance@example.com".to_string(),
            format!("{}@example.com", aws::unique("oncall")),
        ];
        let url = |name: &str| {
            format!(
                "{}/{name}/hook-T0KEN-{}",
                receivers[name].standin.url,
                aws::unique("s")
            )
        };
        let mut values: Vec<(String, ChannelKind, String)> = vec![
            ("ops-slack".into(), ChannelKind::Slack, url("ops-slack")),
            ("oncall-pager".into(), ChannelKind::Pagerduty, json!({"routing_key": PAGERDUTY_KEY, "url": format!("{}/v2/enqueue", receivers["oncall-pager"].standin.url)}).to_string()),
            ("team-teams".into(), ChannelKind::Teams, url("team-teams")),
            ("dev-discord".into(), ChannelKind::Discord, url("dev-discord")),
            ("audit-hook".into(), ChannelKind::Webhook, json!({"url": url("audit-hook"), "secret": WEBHOOK_SECRET}).to_string()),
            ("finance-email".into(), ChannelKind::Email, json!({"from": EMAIL_FROM, "to": email_to}).to_string()),
            ("digest-slack".into(), ChannelKind::Slack, url("digest-slack")),
            ("cto-slack".into(), ChannelKind::Slack, url("cto-slack")),
        ];
        values.extend(extra.iter().map(|(n, k, v)| (n.to_string(), *k, v.clone())));
        let mut settings = Settings {
            ..policy.settings.clone()
        };
        let mut secret_values = Vec::new();
        for (name, kind, value) in values {
            crate::logs::secret_used(&value);
            let arn = secrets
                .create_secret()
                .name(aws::unique(&name))
                .secret_string(&value)
                .send()
                .await
                .unwrap()
                .arn
                .unwrap();
            settings.channels.insert(
                name.clone(),
                ChannelSpec {
                    kind,
                    secret: Some(arn),
                    digest_minutes: (name == "digest-slack").then_some(60),
                },
            );
            secret_values.push(value);
        }
        secret_values.extend([PAGERDUTY_KEY.to_string(), WEBHOOK_SECRET.to_string()]);
        crate::logs::secret_used(PAGERDUTY_KEY);
        crate::logs::secret_used(WEBHOOK_SECRET);
        store
            .put_policy(&PolicySet {
                settings,
                budgets: policy.budgets,
                keys: policy.keys,
            })
            .await
            .unwrap();
        let config = Config {
            table: table.clone(),
            retry,
            alert_signing_key_arn: None,
            operator: None,
        };
        let fanout = app::fanout(&config, &sdk);
        FanoutWorld {
            sdk,
            store,
            table,
            fanout,
            receivers,
            secret_values,
            email_to,
            config,
        }
    }

    /// Another invocation's fan-out: AWS reached through `sdk` (e.g. a fault proxy), at `now`.
    pub fn fanout_through(
        &self,
        sdk: &aws_config::SdkConfig,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Fanout {
        let mut backends = spendguard_aws::backends::deployed(sdk, &self.table);
        backends.clock = Arc::new(FixedClock::new(now));
        app::fanout_with(&self.config, sdk, backends)
    }

    /// E-mails SES (moto) accepted for this world's recipients, from moto's own record.
    pub async fn sent_emails(&self) -> Vec<Value> {
        // moto dumps every backend for this; a dump racing another test's write answers an
        // error page instead of JSON, so a few tries are made before failing
        let url = format!("{}/moto-api/data.json", aws::endpoint());
        let mut last = String::new();
        let mut data = None;
        for _ in 0..5 {
            let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
            match serde_json::from_str::<Value>(&body) {
                Ok(v) => {
                    data = Some(v);
                    break;
                }
                Err(_) => {
                    last = body;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
        let data = data.unwrap_or_else(|| panic!("moto's data.json is not JSON: {last:.300}"));
        let mine = serde_json::to_value(&self.email_to).unwrap();
        data["ses"]["Message"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["destinations"]["ToAddresses"] == mine)
            .cloned()
            .collect()
    }
}

/// The SNS -> Lambda event for an SNS envelope as delivered to SQS.
pub fn lambda_sns_event(envelope: &Value) -> Value {
    json!({"Records": [{
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": format!("{}:sub", envelope["TopicArn"].as_str().unwrap_or_default()),
        "Sns": {
            "Type": envelope["Type"], "MessageId": envelope["MessageId"], "TopicArn": envelope["TopicArn"],
            "Subject": envelope.get("Subject").cloned().unwrap_or(Value::Null),
            "Message": envelope["Message"], "Timestamp": envelope["Timestamp"],
            "SignatureVersion": envelope["SignatureVersion"], "Signature": envelope["Signature"],
            "SigningCertUrl": envelope["SigningCertURL"], "UnsubscribeUrl": envelope["UnsubscribeURL"],
            "MessageAttributes": envelope.get("MessageAttributes").cloned().unwrap_or(json!({}))
        }
    }]})
}

/// Retries short enough for tests, long enough to see each behaviour.
pub fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(2),
        attempt_timeout: Duration::from_secs(1),
        deadline: Duration::from_secs(3),
    }
}

/// PagerDuty's Events API v2 as it answers: 400 (`invalid event`) for what it refuses — a
/// routing key that is not 32 characters, an unknown `event_action`, a `dedup_key` over 255
/// characters, a trigger without `payload.summary` (at most 1,024 characters), `source` or a
/// known `severity`, a resolve without `dedup_key` — and 202 otherwise; it keeps the incidents
/// by `dedup_key` (a trigger opens or updates one, a resolve closes an open one and is
/// accepted, doing nothing, for one it does not know).
pub struct PagerDuty {
    pub standin: StandIn,
    incidents: Arc<std::sync::Mutex<BTreeMap<String, &'static str>>>,
}

fn pagerduty_refusal(body: &Value) -> Option<&'static str> {
    let text = |v: &Value| v.as_str().map(str::to_string);
    if text(&body["routing_key"]).is_none_or(|k| k.len() != 32) {
        return Some("'routing_key' is invalid");
    }
    if text(&body["dedup_key"]).is_some_and(|k| k.len() > 255) {
        return Some("'dedup_key' is longer than 255 characters");
    }
    match body["event_action"].as_str() {
        Some("trigger") => {
            let p = &body["payload"];
            if text(&p["summary"]).is_none_or(|s| s.is_empty() || s.chars().count() > 1024) {
                return Some("'payload.summary' is missing or too long");
            }
            if text(&p["source"]).is_none_or(|s| s.is_empty()) {
                return Some("'payload.source' is missing");
            }
            if !matches!(
                p["severity"].as_str(),
                Some("critical" | "error" | "warning" | "info")
            ) {
                return Some("'payload.severity' is invalid");
            }
            None
        }
        Some("acknowledge" | "resolve") if body["dedup_key"].is_string() => None,
        Some("acknowledge" | "resolve") => Some("'dedup_key' is required"),
        _ => Some("'event_action' is invalid"),
    }
}

impl PagerDuty {
    pub async fn start() -> PagerDuty {
        let incidents: Arc<std::sync::Mutex<BTreeMap<String, &'static str>>> = Arc::default();
        let held = incidents.clone();
        let standin = StandIn::start(move |r, _| {
            // Events v2 takes a JSON POST to /v2/enqueue only (the routing key is in the body)
            if r.method != "POST" || r.path != "/v2/enqueue" {
                return Reply::json(404, json!({"status": "not found", "message": "Not Found"}));
            }
            let json_body = r.headers.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("content-type") && v.starts_with("application/json")
            });
            if !json_body {
                return Reply::json(400, json!({"status": "invalid event", "message": "Event object is invalid", "errors": ["Content-Type must be application/json"]}));
            }
            let Ok(body) = serde_json::from_str::<Value>(&r.body) else {
                return Reply::json(400, json!({"status": "invalid event", "message": "Event object is invalid", "errors": ["not JSON"]}));
            };
            if let Some(why) = pagerduty_refusal(&body) {
                return Reply::json(400, json!({"status": "invalid event", "message": "Event object is invalid", "errors": [why]}));
            }
            let key = body["dedup_key"].as_str().unwrap_or("generated").to_string();
            let mut incidents = held.lock().unwrap();
            match body["event_action"].as_str() {
                Some("trigger") => {
                    incidents.insert(key.clone(), "triggered");
                }
                Some("resolve") => {
                    if let Some(state) = incidents.get_mut(&key) {
                        *state = "resolved";
                    }
                }
                _ => {}
            }
            Reply::json(202, json!({"status": "success", "message": "Event processed", "dedup_key": key}))
        })
        .await;
        PagerDuty { standin, incidents }
    }

    /// The channel secret that points at this stand-in.
    pub fn secret(&self) -> String {
        json!({"routing_key": PAGERDUTY_KEY, "url": format!("{}/v2/enqueue", self.standin.url)})
            .to_string()
    }

    /// Each incident's state (`triggered`, `resolved`) by its `dedup_key`.
    pub fn incidents(&self) -> BTreeMap<String, &'static str> {
        self.incidents.lock().unwrap().clone()
    }

    /// The events it accepted.
    pub fn accepted(&self) -> Vec<Value> {
        self.standin
            .received()
            .iter()
            .filter(|r| r.accepted())
            .map(|r| serde_json::from_str(&r.body).unwrap())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pagerduty_stand_in_refuses_what_pagerduty_refuses() {
        let trigger = json!({"routing_key": PAGERDUTY_KEY, "event_action": "trigger", "dedup_key": "k",
            "payload": {"summary": "s", "source": "x", "severity": "error"}});
        assert_eq!(pagerduty_refusal(&trigger), None);
        let with = |path: &[&str], value: Value| {
            let mut v = trigger.clone();
            let mut at = &mut v;
            for p in &path[..path.len() - 1] {
                at = &mut at[*p];
            }
            at[path[path.len() - 1]] = value;
            pagerduty_refusal(&v)
        };
        assert!(with(&["routing_key"], json!("short")).is_some());
        assert!(with(&["event_action"], json!("open")).is_some());
        assert!(with(&["payload", "severity"], json!("page")).is_some());
        assert!(with(&["payload", "summary"], json!("x".repeat(1025))).is_some());
        assert!(with(&["payload", "source"], Value::Null).is_some());
        assert!(with(&["dedup_key"], json!("k".repeat(256))).is_some());
        let resolve = json!({"routing_key": PAGERDUTY_KEY, "event_action": "resolve"});
        assert!(pagerduty_refusal(&resolve).is_some());
    }

    #[tokio::test]
    async fn the_pagerduty_stand_in_takes_a_json_post_to_v2_enqueue_only() {
        let pagerduty = PagerDuty::start().await;
        let event = json!({"routing_key": PAGERDUTY_KEY, "event_action": "trigger", "dedup_key": "k",
            "payload": {"summary": "s", "source": "x", "severity": "error"}});
        let http = reqwest::Client::new();
        let url = |path: &str| format!("{}{path}", pagerduty.standin.url);
        let status = |r: reqwest::Response| r.status().as_u16();
        let wrong_path = http
            .post(url("/v2/enqueue/x"))
            .json(&event)
            .send()
            .await
            .unwrap();
        assert_eq!(status(wrong_path), 404);
        let wrong_method = http
            .put(url("/v2/enqueue"))
            .json(&event)
            .send()
            .await
            .unwrap();
        assert_eq!(status(wrong_method), 404);
        let not_json = http
            .post(url("/v2/enqueue"))
            .header("content-type", "text/plain")
            .body(event.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(status(not_json), 400);
        let ok = http
            .post(url("/v2/enqueue"))
            .json(&event)
            .send()
            .await
            .unwrap();
        assert_eq!(status(ok), 202);
        assert_eq!(pagerduty.incidents().get("k"), Some(&"triggered"));
    }
}
