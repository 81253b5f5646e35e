//! Hostile input against the inbound verifiers of spendguard-http (property tests, proptest):
//! the SNS certificate URL policy, checked against an independent statement of it.

use proptest::prelude::*;
use spendguard_http::verify::sns::check_certificate_url;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The SNS certificate URL policy, against an independent statement of it: https, host
    /// exactly sns.<topic's region>.amazonaws.com, path /SimpleNotificationService-<hex>.pem,
    /// nothing else. No request is ever made to a URL that fails it.
    #[test]
    fn sns_certificate_urls_follow_the_policy(
        scheme in prop::sample::select(vec!["https", "http", "ftp"]),
        userinfo in prop::sample::select(vec!["", "user@", "sns.eu-west-1.amazonaws.com@"]),
        host in prop::sample::select(vec![
            "sns.eu-west-1.amazonaws.com", "sns.us-east-1.amazonaws.com", "s3.amazonaws.com",
            "sns.eu-west-1.amazonaws.com.evil.example", "evil.example", "sns-eu-west-1.amazonaws.com",
            "SNS.EU-WEST-1.AMAZONAWS.COM",
        ]),
        port in prop::sample::select(vec!["", ":443", ":8443"]),
        path in prop::sample::select(vec![
            "/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem",
            "/SimpleNotificationService-.pem", "/other.pem", "/SimpleNotificationService-9c64/../x.pem",
            "/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem/",
        ]),
        tail in prop::sample::select(vec!["", "?x=1", "#frag"]),
    ) {
        let url = format!("{scheme}://{userinfo}{host}{port}{path}{tail}");
        let topic = "arn:aws:sns:eu-west-1:123456789012:spendguard-aws-budgets";
        let expected = scheme == "https"
            && userinfo.is_empty()
            && host.eq_ignore_ascii_case("sns.eu-west-1.amazonaws.com")
            && (port.is_empty() || port == ":443")
            && path == "/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
            && tail.is_empty();
        let accepted = check_certificate_url(&url, topic).is_ok();
        prop_assert_eq!(accepted, expected, "{}", url);
    }
}
