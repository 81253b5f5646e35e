//! SNS messages delivered over HTTP(S): signature versions 1 (SHA1withRSA) and 2
//! (SHA256withRSA), the signing-certificate URL policy, certificates cached per URL (and a URL
//! that names no certificate remembered for a while), messages at most an hour old, and a
//! topic allow-list.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_lc_rs::signature::{
    RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use tokio::sync::Mutex;
use url::Url;

/// An SNS message as POSTed to an HTTP(S) subscriber (JSON sent as `text/plain`).
#[derive(Debug, Clone, Deserialize)]
pub struct SnsMessage {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "MessageId")]
    pub message_id: String,
    #[serde(rename = "Token", default)]
    pub token: Option<String>,
    #[serde(rename = "TopicArn")]
    pub topic_arn: String,
    #[serde(rename = "Subject", default)]
    pub subject: Option<String>,
    #[serde(rename = "Message")]
    pub message: String,
    #[serde(rename = "SubscribeURL", default)]
    pub subscribe_url: Option<String>,
    #[serde(rename = "Timestamp")]
    pub timestamp: String,
    #[serde(rename = "SignatureVersion")]
    pub signature_version: String,
    #[serde(rename = "Signature")]
    pub signature: String,
    /// `SigningCertUrl` in a record Lambda delivers from an SNS trigger.
    #[serde(rename = "SigningCertURL", alias = "SigningCertUrl")]
    pub signing_cert_url: String,
}

/// Why a message was refused (for logs; the sender learns 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnsError {
    #[error("topic {0} is not allowed")]
    TopicNotAllowed(String),
    #[error("TopicArn `{0}` is not an SNS topic ARN")]
    BadTopicArn(String),
    #[error("signing certificate URL refused: {0}")]
    CertificateUrl(String),
    #[error("signing certificate unusable: {0}")]
    Certificate(String),
    #[error("cannot fetch the signing certificate: {0}")]
    CertificateUnavailable(String),
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("message lacks `{0}`")]
    MissingField(&'static str),
    #[error("unsupported SignatureVersion `{0}`")]
    SignatureVersion(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error(
        "Timestamp `{0}` is older than a delivery can be, or in the future: a replay, or a message too late to act on"
    )]
    Stale(String),
}

/// How old a message may be (SNS retries an HTTP delivery for about an hour by default; a
/// captured message replayed later is refused).
pub const MAX_AGE: Duration = Duration::hours(1);
/// How far ahead of our clock a message's time may be.
const MAX_SKEW: Duration = Duration::minutes(5);
/// How long a certificate URL that names no certificate is refused without another request.
const MISS_MEMORY: Duration = Duration::minutes(10);
/// The largest certificate read (SNS's are about 2 KB).
pub const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;

/// Why a certificate could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The URL names no certificate (404, 410, a redirect, too large, not text): the sender's
    /// fault.
    Refused(String),
    /// Unreachable or failing now: ours, the sender retries.
    Unavailable(String),
}

impl SnsError {
    /// Our fault (certificate unreachable): SNS should retry.
    pub fn is_ours(&self) -> bool {
        matches!(self, SnsError::CertificateUnavailable(_))
    }
}

/// Where signing certificates come from. Production fetches the validated HTTPS URL; tests
/// inject a source that reads the emulator's certificate (code, not configuration).
#[async_trait]
pub trait CertificateSource: Send + Sync {
    /// The PEM text at `url`, which has already passed the URL policy.
    async fn fetch(&self, url: &Url) -> Result<String, FetchError>;
}

/// Fetches certificates over HTTPS: no redirects (the URL policy applies to the URL fetched,
/// not to where it points), at most [`MAX_CERTIFICATE_BYTES`], five seconds.
pub struct HttpsCertificates(reqwest::Client);

impl HttpsCertificates {
    /// Built once at start-up; an error (no TLS stack) fails the start rather than falling
    /// back to a client that would follow redirects.
    pub fn new() -> Result<Self, String> {
        crate::https::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .map(HttpsCertificates)
            .map_err(|e| format!("the SNS certificate client cannot be built: {e}"))
    }
}

#[async_trait]
impl CertificateSource for HttpsCertificates {
    async fn fetch(&self, url: &Url) -> Result<String, FetchError> {
        let unavailable = |e: reqwest::Error| FetchError::Unavailable(e.without_url().to_string());
        let mut response = self.0.get(url.clone()).send().await.map_err(unavailable)?;
        let status = response.status();
        // only "there is no such certificate" is the sender's fault: a 403, 408 or 429 may be
        // a passing refusal of ours, and must not block the real certificate for minutes
        if matches!(status.as_u16(), 404 | 410) || status.is_redirection() {
            return Err(FetchError::Refused(format!("HTTP {status}")));
        }
        if !status.is_success() {
            return Err(FetchError::Unavailable(format!("HTTP {status}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
            if body.len() + chunk.len() > MAX_CERTIFICATE_BYTES {
                return Err(FetchError::Refused(format!(
                    "larger than {MAX_CERTIFICATE_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|_| FetchError::Refused("not text".into()))
    }
}

/// The region and partition of a topic ARN (`arn:aws:sns:eu-west-1:123456789012:alerts`).
fn topic_region(topic_arn: &str) -> Result<(&str, &str), SnsError> {
    let parts: Vec<&str> = topic_arn.split(':').collect();
    match parts.as_slice() {
        [
            "arn",
            partition @ ("aws" | "aws-cn" | "aws-us-gov"),
            "sns",
            region,
            account,
            name,
        ] if !region.is_empty()
            && region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && account.len() == 12
            && account.chars().all(|c| c.is_ascii_digit())
            && !name.is_empty() =>
        {
            Ok((partition, region))
        }
        _ => Err(SnsError::BadTopicArn(topic_arn.chars().take(200).collect())),
    }
}

/// The certificate URL policy: `https`, host exactly `sns.<region of the topic>.amazonaws.com`
/// (`.com.cn` in China), default port, path `/SimpleNotificationService-<hex>.pem`, and no
/// userinfo, query or fragment. Anything else — `s3.amazonaws.com`, a bucket named like `sns`,
/// another region — is refused before any request is made.
pub fn check_certificate_url(cert_url: &str, topic_arn: &str) -> Result<Url, SnsError> {
    let refuse = |why: &str| {
        SnsError::CertificateUrl(format!(
            "{why} ({})",
            cert_url.chars().take(200).collect::<String>()
        ))
    };
    let (partition, region) = topic_region(topic_arn)?;
    let url = Url::parse(cert_url).map_err(|_| refuse("not a URL"))?;
    if url.scheme() != "https" {
        return Err(refuse("not https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("has userinfo"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(refuse("has a query or fragment"));
    }
    if url.port().is_some() {
        return Err(refuse("has a port"));
    }
    let suffix = if partition == "aws-cn" {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    let expected = format!("sns.{region}.{suffix}");
    if url.host_str() != Some(expected.as_str()) {
        return Err(refuse(&format!("host is not {expected}")));
    }
    let file = url
        .path()
        .strip_prefix("/SimpleNotificationService-")
        .and_then(|rest| rest.strip_suffix(".pem"))
        .ok_or_else(|| refuse("path is not /SimpleNotificationService-<id>.pem"))?;
    if file.is_empty() || !file.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(refuse("certificate id is not hexadecimal"));
    }
    Ok(url)
}

/// The text SNS signs, in its documented field order.
pub fn string_to_sign(m: &SnsMessage) -> Result<String, SnsError> {
    let mut out = String::new();
    let mut field = |name: &str, value: &str| {
        out.push_str(name);
        out.push('\n');
        out.push_str(value);
        out.push('\n');
    };
    match m.kind.as_str() {
        "Notification" => {
            field("Message", &m.message);
            field("MessageId", &m.message_id);
            if let Some(subject) = &m.subject {
                field("Subject", subject);
            }
            field("Timestamp", &m.timestamp);
            field("TopicArn", &m.topic_arn);
            field("Type", &m.kind);
        }
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
            field("Message", &m.message);
            field("MessageId", &m.message_id);
            field(
                "SubscribeURL",
                m.subscribe_url
                    .as_deref()
                    .ok_or(SnsError::MissingField("SubscribeURL"))?,
            );
            field("Timestamp", &m.timestamp);
            field(
                "Token",
                m.token.as_deref().ok_or(SnsError::MissingField("Token"))?,
            );
            field("TopicArn", &m.topic_arn);
            field("Type", &m.kind);
        }
        other => return Err(SnsError::UnknownType(other.chars().take(40).collect())),
    }
    Ok(out)
}

/// The RSA public key (PKCS#1 DER) of a PEM certificate that is valid at `now`.
fn public_key(pem: &str, now: DateTime<Utc>) -> Result<Vec<u8>, SnsError> {
    let bad = |e: String| SnsError::Certificate(e);
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| bad(format!("not PEM: {e}")))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| bad(format!("not X.509: {e}")))?;
    let validity = cert.validity();
    let t = now.timestamp();
    if t < validity.not_before.timestamp() || t > validity.not_after.timestamp() {
        return Err(bad("outside its validity period".into()));
    }
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

pub struct SnsVerifier {
    allowed_topics: Vec<String>,
    certificates: Box<dyn CertificateSource>,
    cache: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    /// URLs that named no certificate, and when: refused without a request for a while.
    misses: Mutex<HashMap<String, DateTime<Utc>>>,
    /// The oldest signature version taken: 2 (SHA256) where the topics are spendguard's own
    /// and set to sign with it; 1 accepts SHA1 too.
    min_version: u8,
}

impl SnsVerifier {
    pub fn new(allowed_topics: Vec<String>, certificates: Box<dyn CertificateSource>) -> Self {
        SnsVerifier {
            allowed_topics,
            certificates,
            cache: Mutex::new(HashMap::new()),
            misses: Mutex::new(HashMap::new()),
            min_version: 1,
        }
    }

    /// Refuses messages signed with a version older than `version` (1 or 2).
    pub fn with_min_version(self, version: u8) -> Self {
        SnsVerifier {
            min_version: version,
            ..self
        }
    }

    pub fn topic_allowed(&self, topic_arn: &str) -> Result<(), SnsError> {
        if self.allowed_topics.iter().any(|t| t == topic_arn) {
            Ok(())
        } else {
            Err(SnsError::TopicNotAllowed(
                topic_arn.chars().take(200).collect(),
            ))
        }
    }

    async fn key_for(&self, url: &Url, now: DateTime<Utc>) -> Result<Arc<Vec<u8>>, SnsError> {
        if let Some(k) = self.cache.lock().await.get(url.as_str()) {
            return Ok(k.clone());
        }
        {
            let mut misses = self.misses.lock().await;
            misses.retain(|_, at| now - *at < MISS_MEMORY);
            if misses.contains_key(url.as_str()) {
                return Err(SnsError::Certificate(
                    "this URL named no certificate a moment ago".into(),
                ));
            }
        }
        let pem = match self.certificates.fetch(url).await {
            Ok(pem) => pem,
            Err(FetchError::Unavailable(e)) => return Err(SnsError::CertificateUnavailable(e)),
            Err(FetchError::Refused(e)) => {
                // bounded: each entry is forgotten after MISS_MEMORY
                let mut misses = self.misses.lock().await;
                if misses.len() < 10_000 {
                    misses.insert(url.as_str().to_string(), now);
                }
                return Err(SnsError::Certificate(e));
            }
        };
        let key = Arc::new(public_key(&pem, now)?);
        self.cache
            .lock()
            .await
            .insert(url.as_str().to_string(), key.clone());
        Ok(key)
    }

    /// Verifies topic, age, certificate URL and signature, in that order (cheap checks first,
    /// and no request is made for a message from a topic we do not accept).
    pub async fn verify(&self, m: &SnsMessage, now: DateTime<Utc>) -> Result<(), SnsError> {
        self.verify_within(m, now, MAX_AGE).await
    }

    /// [`Self::verify`], taking messages up to `max_age` old.
    pub async fn verify_within(
        &self,
        m: &SnsMessage,
        now: DateTime<Utc>,
        max_age: Duration,
    ) -> Result<(), SnsError> {
        self.topic_allowed(&m.topic_arn)?;
        let sent = DateTime::parse_from_rfc3339(&m.timestamp)
            .map_err(|_| SnsError::Stale(m.timestamp.chars().take(40).collect()))?;
        if now - sent.with_timezone(&Utc) > max_age || sent.with_timezone(&Utc) - now > MAX_SKEW {
            return Err(SnsError::Stale(m.timestamp.chars().take(40).collect()));
        }
        let url = check_certificate_url(&m.signing_cert_url, &m.topic_arn)?;
        let algorithm = match m.signature_version.as_str() {
            "1" if self.min_version <= 1 => &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            "2" => &RSA_PKCS1_2048_8192_SHA256,
            other => return Err(SnsError::SignatureVersion(other.chars().take(10).collect())),
        };
        let text = string_to_sign(m)?;
        let signature = STANDARD
            .decode(m.signature.trim())
            .map_err(|_| SnsError::BadSignature)?;
        let key = self.key_for(&url, now).await?;
        UnparsedPublicKey::new(algorithm, key.as_slice())
            .verify(text.as_bytes(), &signature)
            .map_err(|_| SnsError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts fetches and answers `answer`.
    struct Counting(Arc<AtomicUsize>, FetchError);

    #[async_trait]
    impl CertificateSource for Counting {
        async fn fetch(&self, _url: &Url) -> Result<String, FetchError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(self.1.clone())
        }
    }

    fn message(timestamp: &str, cert: &str) -> SnsMessage {
        serde_json::from_value(serde_json::json!({
            "Type": "Notification", "MessageId": "m-1", "TopicArn": TOPIC, "Message": "x",
            "Timestamp": timestamp, "SignatureVersion": "2", "Signature": "c2ln",
            "SigningCertURL": format!("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-{cert}.pem"),
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_message_older_than_an_hour_or_from_the_future_is_refused_before_any_fetch() {
        let fetched = Arc::new(AtomicUsize::new(0));
        let verifier = SnsVerifier::new(
            vec![TOPIC.into()],
            Box::new(Counting(
                fetched.clone(),
                FetchError::Unavailable("x".into()),
            )),
        );
        let now: DateTime<Utc> = "2026-12-06T12:00:00Z".parse().unwrap();
        for stale in [
            "2026-12-06T10:59:59.000Z",
            "2026-11-22T10:00:00.000Z",
            "2026-12-06T12:05:01.000Z",
            "yesterday",
        ] {
            let e = verifier
                .verify(&message(stale, "a"), now)
                .await
                .unwrap_err();
            assert!(matches!(e, SnsError::Stale(_)), "{stale}: {e}");
            assert!(!e.is_ours(), "a replay is the sender's fault");
        }
        assert_eq!(fetched.load(Ordering::SeqCst), 0);
        // within the hour: verification goes on (to the certificate)
        let e = verifier
            .verify(&message("2026-12-06T11:01:00.000Z", "a"), now)
            .await
            .unwrap_err();
        assert!(matches!(e, SnsError::CertificateUnavailable(_)), "{e}");
    }

    #[tokio::test]
    async fn version_1_is_refused_where_version_2_is_required() {
        let fetched = Arc::new(AtomicUsize::new(0));
        let verifier = SnsVerifier::new(
            vec![TOPIC.into()],
            Box::new(Counting(
                fetched.clone(),
                FetchError::Unavailable("x".into()),
            )),
        )
        .with_min_version(2);
        let now: DateTime<Utc> = "2026-12-06T12:00:00Z".parse().unwrap();
        let mut m = message("2026-12-06T11:59:00.000Z", "a");
        m.signature_version = "1".into();
        let e = verifier.verify(&m, now).await.unwrap_err();
        assert!(matches!(e, SnsError::SignatureVersion(_)), "{e}");
        assert_eq!(fetched.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_url_that_names_no_certificate_is_the_senders_fault_and_not_fetched_again_for_a_while()
     {
        let fetched = Arc::new(AtomicUsize::new(0));
        let verifier = SnsVerifier::new(
            vec![TOPIC.into()],
            Box::new(Counting(
                fetched.clone(),
                FetchError::Refused("HTTP 404".into()),
            )),
        );
        let now: DateTime<Utc> = "2026-12-06T12:00:00Z".parse().unwrap();
        let m = message("2026-12-06T11:59:00.000Z", "deadbeef");
        for _ in 0..5 {
            let e = verifier.verify(&m, now).await.unwrap_err();
            assert!(!e.is_ours(), "403, not 503: {e}");
        }
        assert_eq!(
            fetched.load(Ordering::SeqCst),
            1,
            "one request for five messages"
        );
        let later = now + MISS_MEMORY + Duration::seconds(1);
        let m = message("2026-12-06T12:10:00.000Z", "deadbeef");
        verifier.verify(&m, later).await.unwrap_err();
        assert_eq!(
            fetched.load(Ordering::SeqCst),
            2,
            "asked again after a while"
        );
    }

    const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:spendguard-budgets";

    #[test]
    fn only_the_regional_sns_host_and_pinned_path_are_accepted() {
        let ok = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem";
        assert!(check_certificate_url(ok, TOPIC).is_ok());
        let refused = [
            "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c64.pem",
            "https://s3.amazonaws.com/sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c64.pem",
            "https://sns.eu-west-1.amazonaws.com.evil.example/SimpleNotificationService-9c64.pem",
            "https://sns.evil.example/SimpleNotificationService-9c64.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-9c64.pem",
            "https://user:pw@sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c64.pem",
            "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c64.pem?x=1",
            "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c64.pem#f",
            "https://sns.eu-west-1.amazonaws.com:8443/SimpleNotificationService-9c64.pem",
            "https://sns.eu-west-1.amazonaws.com/other/SimpleNotificationService-9c64.pem",
            "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-../../x.pem",
            "not a url",
        ];
        for url in refused {
            assert!(
                matches!(
                    check_certificate_url(url, TOPIC),
                    Err(SnsError::CertificateUrl(_))
                ),
                "{url}"
            );
        }
        let china = "arn:aws-cn:sns:cn-north-1:123456789012:t";
        assert!(
            check_certificate_url(
                "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-ab.pem",
                china
            )
            .is_ok()
        );
        assert!(matches!(
            check_certificate_url(ok, "arn:aws:sqs:eu-west-1:1:x"),
            Err(SnsError::BadTopicArn(_))
        ));
    }

    #[test]
    fn string_to_sign_follows_the_documented_order() {
        let m = SnsMessage {
            kind: "Notification".into(),
            message_id: "id-1".into(),
            token: None,
            topic_arn: TOPIC.into(),
            subject: Some("AWS Budgets: x has exceeded your alert threshold".into()),
            message: "hello".into(),
            subscribe_url: None,
            timestamp: "2026-11-22T10:00:00.000Z".into(),
            signature_version: "2".into(),
            signature: String::new(),
            signing_cert_url: String::new(),
        };
        assert_eq!(
            string_to_sign(&m).unwrap(),
            format!(
                "Message\nhello\nMessageId\nid-1\nSubject\nAWS Budgets: x has exceeded your alert threshold\nTimestamp\n2026-11-22T10:00:00.000Z\nTopicArn\n{TOPIC}\nType\nNotification\n"
            )
        );
        let confirm = SnsMessage {
            kind: "SubscriptionConfirmation".into(),
            token: Some("tok".into()),
            subscribe_url: Some("https://x".into()),
            subject: None,
            ..m
        };
        assert_eq!(
            string_to_sign(&confirm).unwrap(),
            format!(
                "Message\nhello\nMessageId\nid-1\nSubscribeURL\nhttps://x\nTimestamp\n2026-11-22T10:00:00.000Z\nToken\ntok\nTopicArn\n{TOPIC}\nType\nSubscriptionConfirmation\n"
            )
        );
    }
}
