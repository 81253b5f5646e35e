//! Hostile input against every parser and verifier an attacker can reach: arbitrary bytes and
//! mutations of real messages never panic, and nothing that was not signed with the secret is
//! ever accepted. Property tests (proptest); each property runs `CASES` inputs.

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use spendguard_domain::budgets_file::parse_budgets;
use spendguard_domain::signals::{aws_budgets, gcp};
use spendguard_domain::standard_webhooks::{WebhookSecret, verify};
use spendguard_domain::usage::UsageWire;

const CASES: u32 = 1_000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap()
}

/// A real input with bytes replaced, inserted or removed at random places.
fn mutated(original: String) -> impl Strategy<Value = Vec<u8>> {
    let len = original.len();
    prop::collection::vec((0..len.max(1), any::<u8>(), 0u8..3), 1..8).prop_map(move |edits| {
        let mut bytes = original.clone().into_bytes();
        for (at, byte, how) in edits {
            let at = at.min(bytes.len().saturating_sub(1));
            match how {
                0 if !bytes.is_empty() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if !bytes.is_empty() => {
                    bytes.remove(at);
                }
                _ => {}
            }
        }
        bytes
    })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// The budgets file: every refusal names where (file:line) and what.
    #[test]
    fn budgets_file_never_panics_and_every_error_is_located(bytes in mutated(fixture("examples/budgets.toml"))) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(errors) = parse_budgets("budgets.toml", &text) {
            let report = errors.to_string();
            prop_assert!(!report.trim().is_empty());
            for line in report.lines().filter(|l| l.starts_with("budgets.toml")) {
                prop_assert!(line.starts_with("budgets.toml:"), "{line}");
            }
        }
    }

    #[test]
    fn budgets_file_from_noise(text in ".{0,400}") {
        let _ = parse_budgets("noise.toml", &text);
    }

    /// AWS Budgets notifications (plain text or JSON): parse or refuse, never panic.
    #[test]
    fn aws_budgets_text_never_panics(bytes in mutated({
        let event: serde_json::Value = serde_json::from_str(&fixture("events/budget-webhook/sns-aws-budgets-monthly-actual.json")).unwrap();
        event["Records"][0]["Sns"]["Message"].as_str().unwrap().to_string()
    })) {
        if let Ok(notice) = aws_budgets::parse(&String::from_utf8_lossy(&bytes)) {
            prop_assert!(!notice.budget_name.is_empty());
        }
    }

    /// CloudWatch alarm notifications (unsigned, from the operator topic): parse within their
    /// bounds or refuse naming a field, and the alert built from one never orders anything.
    #[test]
    fn alarm_notifications_never_panic(bytes in mutated({
        let event: serde_json::Value = serde_json::from_str(&fixture("events/alert-fanout/alarm-firing.json")).unwrap();
        event["Records"][0]["Sns"]["Message"].as_str().unwrap().to_string()
    })) {
        use spendguard_domain::alarm::{AlarmNotification, MAX_NAME, REASON_SHOWN};
        match AlarmNotification::parse(&String::from_utf8_lossy(&bytes)) {
            Ok(n) => {
                prop_assert!(!n.name.is_empty() && n.name.chars().count() <= MAX_NAME);
                prop_assert!(n.reason.chars().count() <= REASON_SHOWN);
                let event = n.event(vec!["ops-slack".into()]);
                prop_assert!(event.actions.is_empty());
                prop_assert!(event.subject().chars().count() <= 100);
            }
            Err(e) => prop_assert!(!e.field.is_empty()),
        }
    }

    /// GCP Pub/Sub push envelopes and the notification inside: parse or refuse with a field.
    #[test]
    fn gcp_push_never_panics(bytes in mutated({
        let event: serde_json::Value = serde_json::from_str(&fixture("events/budget-webhook/gcp-pubsub-threshold.json")).unwrap();
        event["body"].as_str().unwrap().to_string()
    })) {
        match gcp::parse_push(&bytes) {
            Ok(n) => prop_assert!(!n.message_id.is_empty() && n.message_id.len() <= 128),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Usage records: any JSON object either validates or is refused naming a field.
    #[test]
    fn usage_records_never_panic(bytes in mutated(r#"{"id": "req-1", "scope": "openai/prod/key-1", "provider": "openai", "model": "gpt-4o", "tokens_in": 1200, "tokens_out": 350, "requests": 1, "cost": {"amount": "0.0065", "currency": "USD"}, "timestamp": "2026-11-22T09:59:58Z"}"#.to_string())) {
        if let Ok(wire) = serde_json::from_slice::<UsageWire>(&bytes) {
            match wire.validate(&Default::default(), Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap()) {
                Ok(record) => prop_assert!(!record.id.is_empty()),
                Err(e) => prop_assert!(!e.field.is_empty()),
            }
        }
    }

    /// Standard Webhooks: only the exact signed (id, timestamp, body) verifies; one changed
    /// byte anywhere is refused.
    #[test]
    fn webhook_signatures_refuse_every_mutation(
        body in prop::collection::vec(any::<u8>(), 0..512),
        flip in any::<prop::sample::Index>(),
        part in 0u8..4,
    ) {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
        let (id, ts) = ("msg_2pEzpsTbv8mLx3yHcmN5uW".to_string(), now.timestamp().to_string());
        let signature = secret.sign(&id, now.timestamp(), &body);
        prop_assert!(verify(std::slice::from_ref(&secret), Some(&id), Some(&ts), Some(&signature), &body, now).is_ok());
        let (mut id2, mut ts2, mut sig2, mut body2) = (id.clone().into_bytes(), ts.clone().into_bytes(), signature.clone().into_bytes(), body.clone());
        let target = match part { 0 => &mut id2, 1 => &mut ts2, 2 => &mut sig2, _ => &mut body2 };
        if target.is_empty() {
            target.push(b'x');
        } else {
            let i = flip.index(target.len());
            target[i] ^= 0x01;
        }
        let (id2, ts2, sig2) = (String::from_utf8_lossy(&id2).into_owned(), String::from_utf8_lossy(&ts2).into_owned(), String::from_utf8_lossy(&sig2).into_owned());
        let accepted = verify(std::slice::from_ref(&secret), Some(&id2), Some(&ts2), Some(&sig2), &body2, now);
        // a timestamp digit flipped to another value inside the tolerance still fails the
        // signature; only the untouched message may pass
        prop_assert!(accepted.is_err(), "accepted a mutated message (part {part})");
    }

    /// Random header values never verify.
    #[test]
    fn webhook_noise_is_refused(id in ".{0,80}", ts in ".{0,20}", sig in ".{0,120}", body in prop::collection::vec(any::<u8>(), 0..64)) {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let now = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
        prop_assert!(verify(&[secret], Some(&id), Some(&ts), Some(&sig), &body, now).is_err());
    }
}
