//! Standard Webhooks signatures (https://www.standardwebhooks.com): `webhook-id`,
//! `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256("id.timestamp.body")>`,
//! several space-separated signatures allowed (secret rotation), constant-time comparison,
//! timestamps at most 5 minutes away.

use std::fmt;

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};

/// How far a signed timestamp may be from now, either way.
pub const TOLERANCE: Duration = Duration::minutes(5);
const PREFIX: &str = "whsec_";
const MAX_ID_LEN: usize = 256;

/// A signing secret (`whsec_<base64>`). Never printed.
#[derive(Clone)]
pub struct WebhookSecret(hmac::Key);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>`; a secret without the prefix is taken as base64 too.
    pub fn parse(text: &str) -> Result<Self, String> {
        let b64 = text.trim().strip_prefix(PREFIX).unwrap_or(text.trim());
        let bytes = STANDARD
            .decode(b64)
            .map_err(|_| "a webhook secret is `whsec_` followed by base64".to_string())?;
        if bytes.len() < 24 {
            return Err(format!(
                "a webhook secret must hold at least 24 bytes (has {})",
                bytes.len()
            ));
        }
        Ok(WebhookSecret(hmac::Key::new(hmac::HMAC_SHA256, &bytes)))
    }

    /// Several secrets separated by whitespace (the current one and those being rotated out).
    pub fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        let secrets: Vec<Self> = text
            .split_whitespace()
            .map(Self::parse)
            .collect::<Result<_, _>>()?;
        if secrets.is_empty() {
            return Err("no webhook secret given".into());
        }
        Ok(secrets)
    }

    fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        let mut content = format!("{id}.{timestamp}.").into_bytes();
        content.extend_from_slice(body);
        content
    }

    /// The `webhook-signature` value for a message (used by senders, e.g. the webhook channel).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = hmac::sign(&self.0, &Self::signed_content(id, timestamp, body));
        format!("v1,{}", STANDARD.encode(tag.as_ref()))
    }
}

/// Why a request was refused (for logs; senders only learn "401").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookAuthError {
    #[error("header `{0}` is missing")]
    MissingHeader(&'static str),
    #[error("webhook-id is empty, too long or not printable")]
    BadId,
    #[error("webhook-timestamp `{0}` is not a unix time in seconds")]
    BadTimestamp(String),
    #[error("webhook-timestamp is {0} seconds away from now (at most 300 allowed)")]
    OutsideTolerance(i64),
    #[error("no signature matches (checked {0} v1 signatures)")]
    NoMatch(usize),
}

/// Verifies a signed request against any of `secrets`. Returns the verified `webhook-id`.
pub fn verify<'a>(
    secrets: &[WebhookSecret],
    id: Option<&'a str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<&'a str, WebhookAuthError> {
    let id = id.ok_or(WebhookAuthError::MissingHeader("webhook-id"))?;
    let timestamp = timestamp.ok_or(WebhookAuthError::MissingHeader("webhook-timestamp"))?;
    let signature = signature.ok_or(WebhookAuthError::MissingHeader("webhook-signature"))?;
    if id.is_empty()
        || id.len() > MAX_ID_LEN
        || id.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(WebhookAuthError::BadId);
    }
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| WebhookAuthError::BadTimestamp(timestamp.chars().take(20).collect()))?;
    let skew = now.timestamp() - ts;
    if skew.abs() > TOLERANCE.num_seconds() {
        return Err(WebhookAuthError::OutsideTolerance(skew));
    }
    let content = WebhookSecret::signed_content(id, ts, body);
    let mut checked = 0;
    for candidate in signature.split_whitespace() {
        let Some(b64) = candidate.strip_prefix("v1,") else {
            continue;
        };
        let Ok(tag) = STANDARD.decode(b64) else {
            continue;
        };
        checked += 1;
        // hmac::verify compares in constant time
        if secrets
            .iter()
            .any(|s| hmac::verify(&s.0, &content, &tag).is_ok())
        {
            return Ok(id);
        }
    }
    Err(WebhookAuthError::NoMatch(checked))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_764_000_000, 0).unwrap()
    }

    #[test]
    fn a_signature_made_with_the_secret_verifies() {
        let s = WebhookSecret::parse(SECRET).unwrap();
        let sig = s.sign("msg_1", 1_764_000_000, b"{}");
        assert_eq!(
            verify(
                &[s],
                Some("msg_1"),
                Some("1764000000"),
                Some(&sig),
                b"{}",
                now()
            ),
            Ok("msg_1")
        );
    }

    #[test]
    fn tampering_and_clock_skew_are_refused() {
        let s = WebhookSecret::parse(SECRET).unwrap();
        let sig = s.sign("msg_1", 1_764_000_000, b"{}");
        let v = |id, ts, sig: &str, body: &[u8]| {
            verify(
                std::slice::from_ref(&s),
                Some(id),
                Some(ts),
                Some(sig),
                body,
                now(),
            )
        };
        assert_eq!(
            v("msg_1", "1764000000", &sig, b"{ }"),
            Err(WebhookAuthError::NoMatch(1))
        );
        assert_eq!(
            v("msg_2", "1764000000", &sig, b"{}"),
            Err(WebhookAuthError::NoMatch(1))
        );
        assert_eq!(
            v("msg_1", "1763999000", &sig, b"{}"),
            Err(WebhookAuthError::OutsideTolerance(1000))
        );
        assert_eq!(
            v("msg_1", "1764000301", &sig, b"{}"),
            Err(WebhookAuthError::OutsideTolerance(-301))
        );
        assert!(matches!(
            v("msg_1", "soon", &sig, b"{}"),
            Err(WebhookAuthError::BadTimestamp(_))
        ));
        assert_eq!(
            v("msg_1", "1764000000", "v2,abc", b"{}"),
            Err(WebhookAuthError::NoMatch(0))
        );
    }

    #[test]
    fn rotation_accepts_any_listed_signature_or_secret() {
        let old = WebhookSecret::parse(SECRET).unwrap();
        let new = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let header = format!(
            "{} {}",
            new.sign("m", 1_764_000_000, b"x"),
            "v1,Zm9yZ2VkIHNpZ25hdHVyZQ=="
        );
        assert!(
            verify(
                std::slice::from_ref(&old),
                Some("m"),
                Some("1764000000"),
                Some(&header),
                b"x",
                now()
            )
            .is_err()
        );
        let both =
            WebhookSecret::parse_list(&format!("{SECRET} whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"))
                .unwrap();
        assert!(
            verify(
                &both,
                Some("m"),
                Some("1764000000"),
                Some(&header),
                b"x",
                now()
            )
            .is_ok()
        );
    }

    #[test]
    fn secrets_are_validated_and_never_printed() {
        assert!(WebhookSecret::parse("whsec_!!!").is_err());
        assert!(WebhookSecret::parse("whsec_c2hvcnQ=").is_err());
        assert_eq!(
            format!("{:?}", WebhookSecret::parse(SECRET).unwrap()),
            "WebhookSecret(***)"
        );
    }
}
