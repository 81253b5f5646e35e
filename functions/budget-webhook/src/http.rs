//! The HTTP request and response the routes work with, and their Function URL encoding.

use std::collections::HashMap;

use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// The first value of a query parameter, decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// Maps a Function URL event. A body that is not valid base64 when flagged so is kept as
    /// given: the route then refuses it as malformed.
    pub fn from_function_url(event: LambdaFunctionUrlRequest) -> HttpRequest {
        let body = match event.body {
            Some(b) if event.is_base64_encoded => STANDARD
                .decode(b.as_bytes())
                .unwrap_or_else(|_| b.into_bytes()),
            Some(b) => b.into_bytes(),
            None => Vec::new(),
        };
        HttpRequest {
            method: event
                .request_context
                .http
                .method
                .unwrap_or_default()
                .to_ascii_uppercase(),
            path: event.raw_path.unwrap_or_default(),
            query: event.raw_query_string.unwrap_or_default(),
            headers: event
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
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Value,
}

impl HttpResponse {
    pub fn ok(body: Value) -> Self {
        HttpResponse { status: 200, body }
    }

    /// `{"error": ..., "field": ...}` with the given status.
    pub fn error(status: u16, message: impl Into<String>, field: Option<&str>) -> Self {
        let mut body = json!({ "error": message.into() });
        if let Some(f) = field {
            body["field"] = json!(f);
        }
        HttpResponse { status, body }
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The Function URL response format.
    pub fn to_function_url(&self) -> Value {
        json!({
            "statusCode": self.status,
            "headers": { "content-type": "application/json", "cache-control": "no-store" },
            "body": self.body.to_string(),
            "isBase64Encoded": false
        })
    }
}
