//! SNS messages over HTTPS: any JSON is parsed or refused, and verified against a real
//! signing certificate (bench/fixtures/verify.json); nothing but the signed message verifies.
#![no_main]
use std::sync::OnceLock;

use async_trait::async_trait;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use spendguard_http::verify::sns::{CertificateSource, FetchError, SnsMessage, SnsVerifier, string_to_sign};

struct FixedCertificate(String);

#[async_trait]
impl CertificateSource for FixedCertificate {
    async fn fetch(&self, _url: &url::Url) -> Result<String, FetchError> {
        Ok(self.0.clone())
    }
}

fn fixture() -> &'static (SnsVerifier, SnsMessage) {
    static FIXTURE: OnceLock<(SnsVerifier, SnsMessage)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let all: Value =
            serde_json::from_str(include_str!("../../bench/fixtures/verify.json")).unwrap();
        let sns = &all["sns"];
        let verifier = SnsVerifier::new(
            vec![sns["topic"].as_str().unwrap().to_string()],
            Box::new(FixedCertificate(
                sns["certificate_pem"].as_str().unwrap().to_string(),
            )),
        );
        (
            verifier,
            serde_json::from_value(sns["message"].clone()).unwrap(),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(message) = serde_json::from_slice::<SnsMessage>(data) else {
        return;
    };
    let (verifier, signed) = fixture();
    let now = chrono::Utc::now();
    if futures::executor::block_on(verifier.verify(&message, now)).is_ok() {
        assert_eq!(
            string_to_sign(&message).ok(),
            string_to_sign(signed).ok(),
            "verified a message that was not signed"
        );
        assert_eq!(message.signature, signed.signature);
    }
});
