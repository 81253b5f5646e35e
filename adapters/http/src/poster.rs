//! POSTs a channel's payload with retries, backoff and jitter, honouring Retry-After, within a
//! deadline. The endpoint is a secret: it appears in no error.

use reqwest::StatusCode;
use serde_json::Value;
use spendguard_app::ports::channels::SendError;
use spendguard_domain::secret::Secret;
use std::time::{Duration, Instant};

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
