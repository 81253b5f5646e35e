//! Provider key administration over HTTP admin APIs (OpenAI, Anthropic).

pub mod anthropic;
pub mod openai;

use spendguard_app::ports::keys::ProviderError;
use spendguard_domain::keys::ProviderKind;

/// Maps an HTTP answer of an admin API to a provider error (no body secrets: bodies are cut).
pub(crate) async fn http_error(
    provider: ProviderKind,
    response: reqwest::Response,
) -> ProviderError {
    let status = response.status();
    let body: String = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    if status.as_u16() == 429 || status.is_server_error() {
        ProviderError::Unavailable {
            provider,
            message: format!("HTTP {status}: {body}"),
        }
    } else {
        ProviderError::Refused {
            provider,
            message: format!("HTTP {status}: {body}"),
        }
    }
}

/// The answer when it is a success, else its provider error.
pub(crate) async fn success(
    provider: ProviderKind,
    response: reqwest::Response,
) -> Result<reqwest::Response, ProviderError> {
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(http_error(provider, response).await)
    }
}

pub(crate) fn transport(provider: ProviderKind, e: reqwest::Error) -> ProviderError {
    ProviderError::Unavailable {
        provider,
        message: e.without_url().to_string(),
    }
}
