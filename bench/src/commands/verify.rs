//! Per-message verification cost of the three inbound schemes, warm (certificate and JWKS
//! cached, as in a warm Lambda): SNS signature v2, Google OIDC JWT (RS256), Standard Webhooks
//! HMAC-SHA256. Prints a table; asserts nothing.
//!
//!     cargo run --release -p spendguard-bench -- verify

use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use serde_json::Value;
use spendguard_domain::standard_webhooks::{self, WebhookSecret};
use spendguard_http::verify::gcp_oidc::{GoogleOidcVerifier, OidcPolicy};
use spendguard_http::verify::sns::{CertificateSource, FetchError, SnsMessage, SnsVerifier};
use url::Url;

struct FixedCertificate(String);

#[async_trait]
impl CertificateSource for FixedCertificate {
    async fn fetch(&self, _url: &Url) -> Result<String, FetchError> {
        Ok(self.0.clone())
    }
}

/// Median time per operation over `rounds` batches of `batch` operations.
async fn measure<F, Fut>(batch: u32, rounds: u32, mut op: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..batch {
        op().await; // warm up (and fill caches)
    }
    let mut per_op = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..batch {
            op().await;
        }
        per_op.push(start.elapsed() / batch);
    }
    per_op.sort();
    per_op[per_op.len() / 2]
}

pub async fn run(_args: &[String]) {
    let fixture: Value =
        serde_json::from_str(include_str!("../../fixtures/verify.json")).expect("fixture");

    // SNS signature version 2, certificate cached after the first message
    let sns = &fixture["sns"];
    let message: SnsMessage = serde_json::from_value(sns["message"].clone()).expect("SNS message");
    let verifier = SnsVerifier::new(
        vec![sns["topic"].as_str().unwrap().to_string()],
        Box::new(FixedCertificate(
            sns["certificate_pem"].as_str().unwrap().to_string(),
        )),
    );
    // the fixture's own moment, not today's: a signed SNS message is refused as stale an hour
    // after its timestamp, and the figures must not depend on the calendar
    let now = chrono::DateTime::parse_from_rfc3339(sns["message"]["Timestamp"].as_str().unwrap())
        .expect("the fixture's timestamp")
        .to_utc()
        + chrono::Duration::minutes(1);
    verifier
        .verify(&message, now)
        .await
        .expect("the fixture verifies");
    let sns_cost = measure(200, 25, || async {
        verifier.verify(&message, now).await.unwrap()
    })
    .await;

    // Google OIDC JWT, JWKS served once from loopback then cached
    let oidc = &fixture["oidc"];
    let jwks = oidc["jwks"].clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/certs", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let app = Router::new().fallback(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        });
        axum::serve(listener, app).await.unwrap();
    });
    let oidc_verifier = GoogleOidcVerifier::new(
        OidcPolicy {
            audience: oidc["audience"].as_str().unwrap().into(),
            service_account_email: oidc["email"].as_str().unwrap().into(),
            jwks_url,
        },
        reqwest::Client::new(),
    );
    let header = format!("Bearer {}", oidc["token"].as_str().unwrap());
    oidc_verifier
        .verify(Some(&header))
        .await
        .expect("the fixture token verifies");
    let jwt_cost = measure(200, 25, || async {
        oidc_verifier
            .verify(Some(&header))
            .await
            .map(|_| ())
            .unwrap()
    })
    .await;

    // Standard Webhooks HMAC over a 1,000-record-sized body (about 200 KB) and a small one
    let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let secrets = [secret.clone()];
    let mut hmac_costs = Vec::new();
    for size in [200usize, 200_000] {
        let body = vec![b'x'; size];
        let ts = now.timestamp();
        let signature = secret.sign("msg_bench", ts, &body);
        let ts_text = ts.to_string();
        let cost = measure(500, 25, || async {
            standard_webhooks::verify(
                &secrets,
                Some("msg_bench"),
                Some(&ts_text),
                Some(&signature),
                &body,
                now,
            )
            .unwrap();
        })
        .await;
        hmac_costs.push((size, cost));
    }

    println!("verification cost per message (median of 25 batches, warm caches, one core)");
    println!("{:<44} {:>12}", "scheme", "per message");
    println!(
        "{:<44} {:>9.1} µs",
        "SNS signature v2 (RSA-2048, SHA-256)",
        sns_cost.as_secs_f64() * 1e6
    );
    println!(
        "{:<44} {:>9.1} µs",
        "Pub/Sub OIDC JWT (RS256, JWKS cached)",
        jwt_cost.as_secs_f64() * 1e6
    );
    for (size, cost) in hmac_costs {
        println!(
            "{:<44} {:>9.1} µs",
            format!("Standard Webhooks HMAC-SHA256 ({size} B body)"),
            cost.as_secs_f64() * 1e6
        );
    }
}
