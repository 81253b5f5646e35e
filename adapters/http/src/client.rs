//! GET with retries for the providers' admin APIs: 429 and 5xx are retried, `Retry-After` honoured.

use std::time::Duration as StdDuration;

use reqwest::StatusCode;

use spendguard_app::ports::sources::SourceError;

fn retry_after(response: &reqwest::Response) -> Option<StdDuration> {
    let value = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    value.trim().parse::<u64>().ok().map(StdDuration::from_secs)
}

/// Sends the request built by `build` until it succeeds, and returns the body text.
pub(crate) async fn get_text(
    source_kind: &'static str,
    settings: &HttpSettings,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<String, SourceError> {
    let unavailable = |message: String| SourceError::Unavailable {
        source_kind,
        message,
    };
    let mut last_problem = String::new();
    for attempt in 0..settings.max_attempts.max(1) {
        let mut wait = StdDuration::from_millis(250 * 2u64.pow(attempt));
        match build().timeout(settings.timeout).send().await {
            Ok(response) if response.status().is_success() => {
                return response
                    .text()
                    .await
                    .map_err(|e| unavailable(format!("reading the response: {e}")));
            }
            Ok(response) => {
                let status = response.status();
                if let Some(after) = retry_after(&response) {
                    wait = after;
                }
                let body: String = response
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(300)
                    .collect();
                last_problem = format!("HTTP {status}: {body}");
                let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
                if !retryable {
                    return Err(unavailable(last_problem));
                }
            }
            Err(e) => {
                // the URL is ours (configured), but strip it anyway: it could carry a query
                last_problem = e.without_url().to_string();
            }
        }
        if attempt + 1 < settings.max_attempts {
            tokio::time::sleep(wait.min(settings.max_backoff)).await;
        }
    }
    Err(unavailable(format!(
        "gave up after {} attempts: {last_problem}",
        settings.max_attempts
    )))
}

/// Settings shared by the HTTP sources (admin APIs).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Attempts per request (429 and 5xx are retried, honouring `Retry-After`).
    pub max_attempts: u32,
    /// Longest wait between attempts, whatever `Retry-After` says.
    pub max_backoff: StdDuration,
    /// Timeout of one request.
    pub timeout: StdDuration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            max_attempts: 4,
            max_backoff: StdDuration::from_secs(8),
            timeout: StdDuration::from_secs(10),
        }
    }
}
