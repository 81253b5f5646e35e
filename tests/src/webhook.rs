//! budget-webhook test world: the production wiring (`app::webhook_with`) against moto, a
//! JWKS stand-in, Python signers (independent implementations), and a local HTTP server that
//! serves the webhook so that moto's SNS can deliver to it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, Response, StatusCode};
use budget_webhook::app;
use budget_webhook::config::{Config, GcpPushConfig};
use budget_webhook::handler::Webhook;
use budget_webhook::http::{HttpRequest, HttpResponse};
use serde_json::{Value, json};
use spendguard_app::env::SourcesConfig;
use spendguard_aws::dynamo::DynamoStore;
use spendguard_aws::sns::SnsBus;
use spendguard_domain::settings::PolicySet;
use spendguard_http::verify::sns::{CertificateSource, FetchError};
use url::Url;

use crate::aws::{self, TopicProbe};
use crate::standin::{Reply, StandIn};
use spendguard_app::ports::store::PolicyStore;

/// Runs `tests/python/signers.py` with the venv's Python (set by scripts/test).
pub fn python(request: Value) -> Value {
    use std::io::Write;
    let python =
        std::env::var("SPENDGUARD_PYTHON").expect("SPENDGUARD_PYTHON is set by scripts/test");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/signers.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "signers.py failed for {request}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Signing certificates for tests: certificates made by the Python signer, and moto's own
/// (fetched from the emulator instead of `sns.<region>.amazonaws.com`). Test code only.
#[derive(Clone, Default)]
pub struct TestCertificates {
    pub fixed: Arc<Mutex<HashMap<String, String>>>,
    pub moto_endpoint: Option<String>,
}

#[async_trait]
impl CertificateSource for TestCertificates {
    /// As `HttpsCertificates` classifies answers: a 404 or 410 names no certificate (the
    /// sender's fault), anything else failing is unavailable (ours).
    async fn fetch(&self, url: &Url) -> Result<String, FetchError> {
        if let Some(pem) = self.fixed.lock().unwrap().get(url.as_str()) {
            return Ok(pem.clone());
        }
        let endpoint = self.moto_endpoint.as_ref().ok_or(FetchError::Unavailable(
            "no certificate for this URL".into(),
        ))?;
        // moto serves the PEM it signed with at the same path; it routes the request to SNS in
        // the certificate's region by the credential scope of an Authorization header
        let region = url
            .host_str()
            .unwrap_or_default()
            .split('.')
            .nth(1)
            .unwrap_or("us-east-1")
            .to_string();
        let local = format!("{endpoint}{}", url.path());
        let response = reqwest::Client::new()
            .get(&local)
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential=testing/20261122/{region}/sns/aws4_request"),
            )
            .send()
            .await
            .map_err(|e| FetchError::Unavailable(e.to_string()))?;
        let status = response.status();
        if matches!(status.as_u16(), 404 | 410) {
            return Err(FetchError::Refused(format!("moto answered {status}")));
        }
        if !status.is_success() {
            return Err(FetchError::Unavailable(format!("moto answered {status}")));
        }
        response
            .text()
            .await
            .map_err(|e| FetchError::Unavailable(e.to_string()))
    }
}

pub const USAGE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const STATUS_TOKEN: &str = "status-token-7c41f0a9d2-0123456789abcdef";
pub const AUDIENCE: &str = "https://spendguard.example/gcp/pubsub";
pub const PUSH_ACCOUNT: &str = "billing-push@spendguard-test.iam.gserviceaccount.com";
pub const KID: &str = "test-key-1";

pub struct WebhookWorld {
    pub sdk: aws_config::SdkConfig,
    pub store: DynamoStore,
    pub table: String,
    pub probe: TopicProbe,
    pub budgets_topic: String,
    pub webhook: Arc<Webhook>,
    pub certificates: TestCertificates,
    pub rsa: Value,
    pub config: Config,
    _jwks: StandIn,
}

impl WebhookWorld {
    pub async fn new(policy: PolicySet) -> WebhookWorld {
        let sdk = aws::sdk().await;
        let (store, table) = aws::new_store(&sdk).await;
        store.put_policy(&policy).await.unwrap();
        let probe = TopicProbe::new(&sdk).await;
        let sns = aws_sdk_sns::Client::new(&sdk);
        let budgets_topic = sns
            .create_topic()
            .name(aws::unique("aws-budgets"))
            .send()
            .await
            .unwrap()
            .topic_arn
            .unwrap();
        let usage_secret_arn = aws::secret(&sdk, "usage", USAGE_SECRET).await;
        let status_token_arn = aws::secret(&sdk, "status", STATUS_TOKEN).await;
        let rsa = python(json!({"op": "rsa-key", "kid": KID}));
        crate::logs::secret_used(rsa["private_pem"].as_str().unwrap_or_default());
        let jwks = rsa["jwks"].clone();
        let jwks_server = StandIn::start(move |_, _| Reply::json(200, jwks.clone())).await;
        let config = Config {
            table: table.clone(),
            alerts_topic_arn: probe.topic_arn.clone(),
            usage_secret_arn,
            status_token_arn,
            gcp: Some(GcpPushConfig {
                audience: AUDIENCE.into(),
                service_account: PUSH_ACCOUNT.into(),
                jwks_url: format!("{}/oauth2/v3/certs", jwks_server.url),
                subscription: None,
            }),
            sns_topic_arns: vec![budgets_topic.clone()],
            // moto signs its HTTP deliveries with version 1
            sns_signature_version: 1,
            sources: SourcesConfig {
                aws_account_id: Some("123456789012".into()),
                ..SourcesConfig::default()
            },
            alert_signing_key_arn: None,
            reservation_ttl: spendguard_domain::authorize::bounds::DEFAULT_RESERVATION_TTL,
        };
        let certificates = TestCertificates {
            moto_endpoint: Some(aws::endpoint()),
            ..TestCertificates::default()
        };
        let bus = SnsBus::new(aws_sdk_sns::Client::new(&sdk), &config.alerts_topic_arn);
        let webhook = app::webhook_with(
            &config,
            &sdk,
            spendguard_aws::backends::deployed(&sdk, &config.table),
            Arc::new(bus),
            Box::new(certificates.clone()),
        )
        .await
        .expect("webhook starts");
        WebhookWorld {
            sdk,
            store,
            table,
            probe,
            budgets_topic,
            webhook: Arc::new(webhook),
            certificates,
            rsa,
            config,
            _jwks: jwks_server,
        }
    }

    /// The same webhook with its store (DynamoDB) reached through `sdk`, e.g. a fault proxy;
    /// alerts still go straight to the world's topic.
    pub async fn webhook_through(&self, sdk: &aws_config::SdkConfig) -> Webhook {
        let bus = SnsBus::new(
            aws_sdk_sns::Client::new(&self.sdk),
            &self.config.alerts_topic_arn,
        );
        app::webhook_with(
            &self.config,
            sdk,
            spendguard_aws::backends::deployed(sdk, &self.config.table),
            Arc::new(bus),
            Box::new(self.certificates.clone()),
        )
        .await
        .expect("webhook starts")
    }

    /// The same webhook with every item its store writes recorded (partition keys).
    pub async fn webhook_recording_writes(&self) -> (Webhook, aws::WriteRecorder) {
        let recorder = aws::WriteRecorder::default();
        (self.webhook_intercepted(recorder.clone()).await, recorder)
    }

    /// The same webhook with its store's DynamoDB requests counted by operation.
    pub async fn webhook_counting_requests(&self) -> (Webhook, aws::RequestCounter) {
        let counter = aws::RequestCounter::default();
        (self.webhook_intercepted(counter.clone()).await, counter)
    }

    /// The same webhook, its store's DynamoDB client carrying `interceptor`.
    async fn webhook_intercepted(
        &self,
        interceptor: impl aws_smithy_runtime_api::client::interceptors::Intercept + 'static,
    ) -> Webhook {
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&self.sdk)
                .interceptor(interceptor)
                .build(),
        );
        let backends = spendguard_app::backends::Backends {
            store: Arc::new(DynamoStore::new(dynamodb, &self.config.table)),
            ..spendguard_aws::backends::deployed(&self.sdk, &self.config.table)
        };
        let bus = SnsBus::new(
            aws_sdk_sns::Client::new(&self.sdk),
            &self.config.alerts_topic_arn,
        );
        app::webhook_with(
            &self.config,
            &self.sdk,
            backends,
            Arc::new(bus),
            Box::new(self.certificates.clone()),
        )
        .await
        .expect("webhook starts")
    }

    pub async fn send(&self, request: HttpRequest) -> HttpResponse {
        self.webhook.http(request).await
    }

    /// Every (PK, SK) in the table: "nothing written" is checked against this.
    pub async fn items(&self) -> Vec<(String, String)> {
        let client = aws_sdk_dynamodb::Client::new(&self.sdk);
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = client
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            for item in page.items() {
                let s = |k: &str| match item.get(k) {
                    Some(AttributeValue::S(v)) => v.clone(),
                    _ => String::new(),
                };
                out.push((s("PK"), s("SK")));
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.sort();
        out
    }

    /// A Google-style OIDC token for the push account, with `claims` overriding the defaults.
    pub fn token(&self, overrides: Value, alg: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut claims = json!({
            "iss": "https://accounts.google.com",
            "aud": AUDIENCE,
            "email": PUSH_ACCOUNT,
            "email_verified": true,
            "sub": "1234567890",
            "iat": now,
            "exp": now + 3600,
        });
        for (k, v) in overrides.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let kid = claims
            .get("_kid")
            .and_then(Value::as_str)
            .unwrap_or(KID)
            .to_string();
        let token = python(json!({
            "op": "jwt", "alg": alg, "kid": kid, "claims": claims,
            "private_pem": self.rsa["private_pem"], "public_pem": self.rsa["public_pem"],
        }))["token"]
            .as_str()
            .unwrap()
            .to_string();
        // a bearer token is a credential: it must not be logged either
        crate::logs::secret_used(&token);
        token
    }

    /// Serves the webhook over HTTP on a loopback port (for SNS deliveries from moto).
    pub async fn serve(&self) -> (String, tokio::task::JoinHandle<()>) {
        let webhook = self.webhook.clone();
        let app = Router::new().fallback(move |request: Request<Body>| {
            let webhook = webhook.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = to_bytes(body, 8 * 1024 * 1024)
                    .await
                    .unwrap_or_default()
                    .to_vec();
                let req = HttpRequest {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: parts.uri.query().unwrap_or_default().to_string(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_ascii_lowercase(),
                                v.to_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect(),
                    body,
                };
                let response = webhook.http(req).await;
                Response::builder()
                    .status(StatusCode::from_u16(response.status).unwrap())
                    .body(Body::from(response.body.to_string()))
                    .unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        (
            url,
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }),
        )
    }
}

/// A request with the usage signing headers made by the `standardwebhooks` package.
pub fn signed_usage(body: &str, id: &str, timestamp: i64) -> HttpRequest {
    signed_usage_with(USAGE_SECRET, body, id, timestamp)
}

/// [`signed_usage`] with another secret.
pub fn signed_usage_with(secret: &str, body: &str, id: &str, timestamp: i64) -> HttpRequest {
    let signature = python(
        json!({"op": "webhook-sign", "secret": secret, "id": id, "timestamp": timestamp, "body": body}),
    );
    HttpRequest {
        method: "POST".into(),
        path: "/usage".into(),
        headers: HashMap::from([
            ("webhook-id".to_string(), id.to_string()),
            ("webhook-timestamp".to_string(), timestamp.to_string()),
            (
                "webhook-signature".to_string(),
                signature["signature"].as_str().unwrap().to_string(),
            ),
            ("content-type".to_string(), "application/json".to_string()),
        ]),
        body: body.as_bytes().to_vec(),
        ..HttpRequest::default()
    }
}

pub fn post(path: &str, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> HttpRequest {
    HttpRequest {
        method: "POST".into(),
        path: path.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.into(),
        ..HttpRequest::default()
    }
}
