//! Pub/Sub push envelopes with a GCP budget notification inside: parsed or refused naming a
//! field, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match spendguard_domain::signals::gcp::parse_push(data) {
        Ok(n) => assert!(!n.message_id.is_empty() && n.message_id.len() <= 128),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
