//! Standard Webhooks: the input is split into id, timestamp, signature and body; only a message
//! signed with the secret verifies, so a fuzzed one never does unless it is byte for byte a
//! signed one.
#![no_main]
use chrono::TimeZone;
use libfuzzer_sys::fuzz_target;
use spendguard_domain::standard_webhooks::{WebhookSecret, verify};

fuzz_target!(|data: &[u8]| {
    let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let now = chrono::Utc
        .with_ymd_and_hms(2026, 11, 22, 10, 0, 0)
        .unwrap();
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (id, timestamp, signature) = (text(), text(), text());
    let body = parts.next().unwrap_or_default();
    let accepted = verify(
        std::slice::from_ref(&secret),
        Some(&id),
        Some(&timestamp),
        Some(&signature),
        body,
        now,
    );
    if accepted.is_ok() {
        let ts: i64 = timestamp.trim().parse().unwrap();
        let expected = secret.sign(&id, ts, body);
        assert!(
            signature.split(' ').any(|s| s == expected),
            "accepted a signature the secret did not make"
        );
    }
});
