//! A fault-injecting proxy between the AWS SDK and moto: every request is forwarded unless a
//! rule matches its operation (`x-amz-target`'s action for JSON protocols, `Action=` for query
//! protocols), in which case the proxy answers with throttling, a 500, or a delay instead.
//! What was injected is counted, so tests can show the faults really happened.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, Response, StatusCode};

use crate::aws::{self, DYNAMODB_WRITES, operation_name};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fault {
    #[default]
    /// `ProvisionedThroughputExceededException` (JSON protocols) or `Throttling` (query).
    Throttle,
    /// An internal error, status 500.
    ServerError,
    /// The request is carried out but its answer comes this late (longer than the SDK's
    /// attempt timeout: a lost response, and the SDK tries again).
    Delay(Duration),
    /// The request is carried out, then the connection breaks in the middle of the answer.
    Drop,
    /// The request is carried out, then the caller gets an error it does not retry: the
    /// handler stops right after this write, as if it had crashed there.
    CrashAfter,
}

/// Inject `fault` on every `every`-th call of `operation` (1: all), at most `limit` times;
/// with `body_contains`, only on calls whose request body contains it.
#[derive(Debug, Clone, Default)]
pub struct Rule {
    pub operation: &'static str,
    pub body_contains: Option<&'static str>,
    pub every: usize,
    pub limit: usize,
    pub fault: Fault,
}

impl Rule {
    /// The handler stops right after its `n`-th DynamoDB write (counted from 1).
    pub fn crash_after_write(n: usize) -> Rule {
        Rule {
            operation: ANY_WRITE,
            body_contains: None,
            every: n,
            limit: 1,
            fault: Fault::CrashAfter,
        }
    }
}

/// A rule's `operation` that matches every DynamoDB write.
pub const ANY_WRITE: &str = "any DynamoDB write";

/// Rules that throttle every DynamoDB request (reads and writes): the table is unavailable.
pub fn dynamodb_down() -> Vec<Rule> {
    [
        "GetItem",
        "Query",
        "BatchGetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
        "TransactWriteItems",
        "TransactGetItems",
    ]
    .into_iter()
    .map(|operation| Rule {
        operation,
        body_contains: None,
        every: 1,
        limit: usize::MAX,
        fault: Fault::Throttle,
    })
    .collect()
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    /// Requests each rule matched so far (its `every` counts these).
    matched: Vec<usize>,
    seen: BTreeMap<String, usize>,
    injected: BTreeMap<(String, String), usize>,
}

pub struct FaultProxy {
    pub url: String,
    state: Arc<Mutex<State>>,
    server: tokio::task::JoinHandle<()>,
}

fn injected_response(fault: Fault, json_protocol: bool) -> Response<Body> {
    let (status, body, content_type) = match (fault, json_protocol) {
        (Fault::Throttle, true) => (
            400,
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"injected by the fault proxy"}"#.to_string(),
            "application/x-amz-json-1.0",
        ),
        (Fault::Throttle, false) => (
            400,
            "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>injected by the fault proxy</Message></Error><RequestId>fault-proxy</RequestId></ErrorResponse>".to_string(),
            "text/xml",
        ),
        (_, true) => (
            500,
            r#"{"__type":"InternalServerError","message":"injected by the fault proxy"}"#.to_string(),
            "application/x-amz-json-1.0",
        ),
        (_, false) => (
            500,
            "<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code><Message>injected by the fault proxy</Message></Error><RequestId>fault-proxy</RequestId></ErrorResponse>".to_string(),
            "text/xml",
        ),
    };
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", content_type)
        .body(Body::from(body))
        .unwrap()
}

impl FaultProxy {
    pub async fn start(rules: Vec<Rule>) -> FaultProxy {
        let upstream = aws::endpoint();
        let state = Arc::new(Mutex::new(State {
            rules,
            ..State::default()
        }));
        let shared = state.clone();
        let http = reqwest::Client::new();
        let app = Router::new().fallback(move |request: Request<Body>| {
            let state = shared.clone();
            let http = http.clone();
            let upstream = upstream.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = to_bytes(body, 16 * 1024 * 1024).await.unwrap_or_default();
                let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok());
                let op = operation_name(target, &body);
                let json_protocol = parts.headers.contains_key("x-amz-target");
                let fault = {
                    let mut s = state.lock().unwrap();
                    let State {
                        rules,
                        matched,
                        seen,
                        ..
                    } = &mut *s;
                    *seen.entry(op.clone()).or_default() += 1;
                    matched.resize(rules.len(), 0);
                    let mut chosen = None;
                    let text = String::from_utf8_lossy(&body);
                    let matching = |r: &Rule| {
                        (r.operation == op
                            || (r.operation == ANY_WRITE && DYNAMODB_WRITES.contains(&op.as_str())))
                            && r.body_contains.is_none_or(|b| text.contains(b))
                    };
                    for (rule, n) in rules.iter_mut().zip(matched.iter_mut()) {
                        if !matching(rule) {
                            continue;
                        }
                        *n += 1;
                        // every rule counts the request; the first one due injects
                        if chosen.is_none() && rule.limit > 0 && n.is_multiple_of(rule.every) {
                            rule.limit -= 1;
                            chosen = Some(rule.fault);
                        }
                    }
                    if let Some(f) = chosen {
                        *s.injected
                            .entry((op.clone(), format!("{f:?}")))
                            .or_default() += 1;
                    }
                    chosen
                };
                if let Some(f @ (Fault::Throttle | Fault::ServerError)) = fault {
                    return injected_response(f, json_protocol);
                }
                let uri = format!(
                    "{upstream}{}",
                    parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/")
                );
                let mut forward = http.request(parts.method.clone(), uri).body(body.to_vec());
                for (name, value) in &parts.headers {
                    if name != "host" && name != "content-length" {
                        forward = forward.header(name, value);
                    }
                }
                match forward.send().await {
                    Ok(answer) => {
                        let mut response = Response::builder().status(answer.status().as_u16());
                        for (name, value) in answer.headers() {
                            if name != "content-length" && name != "transfer-encoding" {
                                response = response.header(name, value);
                            }
                        }
                        let bytes = answer.bytes().await.unwrap_or_default();
                        // the request was carried out; only its answer is late, or broken off
                        match fault {
                            Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
                            Some(Fault::CrashAfter) => {
                                return Response::builder()
                                    .status(400)
                                    .header("content-type", "application/x-amz-json-1.0")
                                    .body(Body::from(
                                        r#"{"__type":"com.amazon.coral.validate#ValidationException","message":"crash injected by the fault proxy after this write"}"#,
                                    ))
                                    .unwrap();
                            }
                            Some(Fault::Drop) => {
                                let half = bytes.slice(..bytes.len() / 2);
                                let broken = futures::stream::iter([
                                    Ok(half),
                                    Err(std::io::Error::new(
                                        std::io::ErrorKind::ConnectionReset,
                                        "dropped by the fault proxy",
                                    )),
                                ]);
                                return response
                                    .header("content-length", bytes.len().to_string())
                                    .body(Body::from_stream(broken))
                                    .unwrap();
                            }
                            _ => {}
                        }
                        response.body(Body::from(bytes)).unwrap_or_else(|e| {
                            let mut broken = Response::new(Body::from(format!(
                                "fault proxy: unusable upstream answer: {e}"
                            )));
                            *broken.status_mut() = StatusCode::BAD_GATEWAY;
                            broken
                        })
                    }
                    Err(e) => Response::builder()
                        .status(502)
                        .body(Body::from(format!("fault proxy: upstream: {e}")))
                        .unwrap(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fault proxy");
        });
        FaultProxy { url, state, server }
    }

    /// The SDK configuration of the functions, with every client sent through the proxy.
    pub async fn sdk(&self) -> aws_config::SdkConfig {
        // built afresh: a loaded configuration resolves AWS_ENDPOINT_URL per service, which
        // would win over an endpoint set on it
        let base = aws::sdk().await;
        let mut builder = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.url);
        builder.set_region(base.region().cloned());
        builder.set_credentials_provider(base.credentials_provider());
        builder.set_retry_config(base.retry_config().cloned());
        builder.set_timeout_config(base.timeout_config().cloned());
        builder.set_sleep_impl(base.sleep_impl());
        builder.set_time_source(base.time_source());
        builder.build()
    }

    /// Replaces the rules (and their counts): a test changes the faults as it goes.
    pub fn set_rules(&self, rules: Vec<Rule>) {
        let mut s = self.state.lock().unwrap();
        s.rules = rules;
        s.matched.clear();
    }

    /// (operation, fault) -> how many times it was injected.
    pub fn injected(&self) -> BTreeMap<(String, String), usize> {
        self.state.lock().unwrap().injected.clone()
    }

    /// DynamoDB writes seen so far (injected or not).
    pub fn writes_seen(&self) -> usize {
        let s = self.state.lock().unwrap();
        DYNAMODB_WRITES.iter().filter_map(|w| s.seen.get(*w)).sum()
    }

    pub fn total_injected(&self) -> usize {
        self.injected().values().sum()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}
