//! AWS APIs called directly, signed with SigV4 and the SDK's own credentials, in the region of
//! the `SdkConfig` they are given: EC2 and EC2 Auto Scaling (Query protocol, XML answers) and
//! Application Auto Scaling (JSON 1.1). Each needs a handful of calls, and their SDK crates are
//! large (ADR 017 for EC2, ADR 023 for the other two), so key-guard links none of them.

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_smithy_runtime_api::client::identity::Identity;

use spendguard_app::ports::shutdown::ShutdownError;

/// The EC2 Query API.
pub struct Ec2Query {
    pub sdk: SdkConfig,
    pub http: reqwest::Client,
}

impl Ec2Query {
    /// Calls one EC2 action; the answer's XML on success, its code and message otherwise.
    pub async fn call(
        &self,
        action: &str,
        params: &[(&str, &str)],
    ) -> Result<String, ShutdownError> {
        query(&self.sdk, &self.http, "ec2", "2016-11-15", action, params).await
    }
}

/// The EC2 Auto Scaling Query API.
pub struct AutoScalingQuery {
    pub sdk: SdkConfig,
    pub http: reqwest::Client,
}

impl AutoScalingQuery {
    /// Calls one Auto Scaling action; the answer's XML on success.
    pub async fn call(
        &self,
        action: &str,
        params: &[(&str, &str)],
    ) -> Result<String, ShutdownError> {
        query(
            &self.sdk,
            &self.http,
            "autoscaling",
            "2011-01-01",
            action,
            params,
        )
        .await
    }
}

/// The Application Auto Scaling API (JSON 1.1).
pub struct ApplicationAutoScaling {
    pub sdk: SdkConfig,
    pub http: reqwest::Client,
}

impl ApplicationAutoScaling {
    /// Calls one action with its JSON body; the answer's JSON on success.
    pub async fn call(
        &self,
        action: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ShutdownError> {
        let fail = |m: String| ShutdownError(format!("application-autoscaling:{action}: {m}"));
        let target = format!("AnyScaleFrontendService.{action}");
        let (status, text) = send(
            &self.sdk,
            &self.http,
            "application-autoscaling",
            "application/x-amz-json-1.1",
            Some(&target),
            body.to_string(),
        )
        .await
        .map_err(fail)?;
        let answer: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            fail(format!(
                "HTTP {status}: an answer that is not JSON ({e}): {text:.200}"
            ))
        })?;
        if status.is_success() {
            return Ok(answer);
        }
        let code = answer["__type"].as_str().unwrap_or("unknown");
        let message = answer["message"]
            .as_str()
            .or(answer["Message"].as_str())
            .unwrap_or("");
        // `__type` may carry a namespace: `com.amazonaws...#ValidationException`
        Err(fail(format!(
            "HTTP {status}: {}: {message}",
            code.rsplit('#').next().unwrap_or(code)
        )))
    }
}

async fn query(
    sdk: &SdkConfig,
    http: &reqwest::Client,
    service: &str,
    version: &str,
    action: &str,
    params: &[(&str, &str)],
) -> Result<String, ShutdownError> {
    let fail = |m: String| ShutdownError(format!("{service}:{action}: {m}"));
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("Action", action)
        .append_pair("Version", version)
        .extend_pairs(params)
        .finish();
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";
    let (status, text) = send(sdk, http, service, content_type, None, body)
        .await
        .map_err(fail)?;
    if status.is_success() {
        return Ok(text);
    }
    let code = xml_text(&text, "Error", "Code").unwrap_or("unknown");
    let message = xml_text(&text, "Error", "Message").unwrap_or("");
    Err(fail(format!("HTTP {status}: {code}: {message}")))
}

/// How many times a call is made before its failure is the stop's: a throttled or failed call
/// would otherwise leave a resource half-stopped until the next delivery.
const ATTEMPTS: u32 = 3;

/// Whether an answer is worth another attempt: AWS's throttling and its own faults.
fn retryable(status: reqwest::StatusCode, text: &str) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || (status.is_client_error()
            && [
                "Throttling",
                "RequestLimitExceeded",
                "ConcurrentUpdateException",
            ]
            .iter()
            .any(|code| text.contains(code)))
}

/// [`send_once`], again after a short pause (0.2 s, then 0.8 s) when the transport failed or
/// the answer is [`retryable`]. Every call made here sets a state, so repeating it is safe.
async fn send(
    sdk: &SdkConfig,
    http: &reqwest::Client,
    service: &str,
    content_type: &str,
    target: Option<&str>,
    body: String,
) -> Result<(reqwest::StatusCode, String), String> {
    let mut pause = Duration::from_millis(200);
    for _ in 1..ATTEMPTS {
        match send_once(sdk, http, service, content_type, target, body.clone()).await {
            Ok((status, text)) if !retryable(status, &text) => return Ok((status, text)),
            _ => {
                tokio::time::sleep(pause).await;
                pause *= 4;
            }
        }
    }
    send_once(sdk, http, service, content_type, target, body).await
}

/// Signs and sends one POST to `service` in the SDK's region; the answer's status and text.
async fn send_once(
    sdk: &SdkConfig,
    http: &reqwest::Client,
    service: &str,
    content_type: &str,
    target: Option<&str>,
    body: String,
) -> Result<(reqwest::StatusCode, String), String> {
    let region = sdk
        .region()
        .map(|r| r.to_string())
        .ok_or("no AWS region is configured")?;
    let url = match sdk.endpoint_url() {
        Some(url) => format!("{}/", url.trim_end_matches('/')),
        None if region.starts_with("cn-") => {
            format!("https://{service}.{region}.amazonaws.com.cn/")
        }
        None => format!("https://{service}.{region}.amazonaws.com/"),
    };
    let credentials = sdk
        .credentials_provider()
        .ok_or("no AWS credentials are configured")?
        .provide_credentials()
        .await
        .map_err(|e| format!("credentials: {e}"))?;
    let identity: Identity = credentials.into();
    let signing = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&region)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing: {e}"))?
        .into();
    let mut headers = vec![("content-type", content_type)];
    if let Some(t) = target {
        headers.push(("x-amz-target", t));
    }
    let signable = SignableRequest::new(
        "POST",
        url.as_str(),
        headers.iter().copied(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .map_err(|e| format!("signing: {e}"))?;
    let (instructions, _) = sign(signable, &signing)
        .map_err(|e| format!("signing: {e}"))?
        .into_parts();
    let mut request = http.post(&url).body(body);
    for (name, value) in headers.into_iter().chain(instructions.headers()) {
        request = request.header(name, value);
    }
    let response = request
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    Ok((status, text))
}

/// The text of the first `<field>` inside the first `<parent>`: enough for the answers read
/// this way (an instance's state, an error's code and message), which carry no nesting of the
/// same names before them.
pub(super) fn xml_text<'a>(xml: &'a str, parent: &str, field: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{parent}>"))?;
    let rest = &xml[start..];
    let open = format!("<{field}>");
    let from = rest.find(&open)? + open.len();
    let to = rest[from..].find(&format!("</{field}>"))? + from;
    Some(rest[from..to].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_faults_are_tried_again_and_refusals_are_not() {
        let throttled = "<Response><Errors><Error><Code>RequestLimitExceeded</Code></Error></Errors></Response>";
        let refused = "<ErrorResponse><Error><Code>AccessDenied</Code></Error></ErrorResponse>";
        let concurrent = r#"{"__type":"ConcurrentUpdateException","message":"busy"}"#;
        let status = |n| reqwest::StatusCode::from_u16(n).unwrap();
        assert!(retryable(status(503), ""));
        assert!(retryable(status(429), ""));
        assert!(retryable(status(400), throttled));
        assert!(retryable(status(400), concurrent));
        assert!(!retryable(status(403), refused));
        assert!(!retryable(
            status(400),
            "<Error><Code>ValidationError</Code></Error>"
        ));
        assert!(!retryable(
            status(200),
            "<DescribeAutoScalingGroupsResponse/>"
        ));
        // a success whose text happens to name a throttling code is a success
        assert!(!retryable(
            status(200),
            "<Tag><Value>Throttling</Value></Tag>"
        ));
    }
}
