//! budget-webhook end to end: the production wiring against moto, inputs produced by
//! independent implementations (standardwebhooks, PyJWT, cryptography, moto's own SNS).

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use budget_webhook::http::{HttpRequest, HttpResponse};
use chrono::Utc;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use spendguard_app::ports::store::AlertStore;
use spendguard_app::ports::store::AuditLog;
use spendguard_app::ports::store::KeyStore;
use spendguard_app::ports::store::SpendStore;
use spendguard_domain::budget::SourceSpec;
use spendguard_domain::period::{WindowKind, YearMonth};
use spendguard_domain::records::{KillSwitch, SwitchState};
use spendguard_domain::scope::Scope;
use spendguard_domain::settings::PolicySet;
use spendguard_tests::aws;
use spendguard_tests::conformance::{budget, month_cost_now};
use spendguard_tests::webhook::{
    STATUS_TOKEN, WebhookWorld, post, python, signed_usage, signed_usage_with,
};

const GCP_BUDGET: &str = "7c1e2d3f-aaaa-bbbb-cccc-1234567890ab";

/// Each world gets its own AWS budget name: moto keeps budgets per account, shared by tests.
fn aws_name() -> String {
    spendguard_tests::aws::unique("monthly-total")
}

fn policy(aws_budget: &str) -> PolicySet {
    let mut gcp = budget(
        "gcp-data",
        "gcp/billing/01ABCD/data",
        WindowKind::Monthly,
        3000,
    );
    gcp.source = SourceSpec::GcpBudget {
        budget_id: GCP_BUDGET.into(),
    };
    gcp.windows[0].tiers[0].threshold =
        spendguard_domain::budget::Threshold::Percent(Decimal::from(100));
    let mut aws = budget("aws-main", "aws/123456789012", WindowKind::Monthly, 1000);
    aws.source = SourceSpec::AwsBudgets {
        budget_name: aws_budget.into(),
    };
    PolicySet {
        budgets: vec![
            budget("app-usage", "app", WindowKind::Monthly, 100),
            gcp,
            aws,
        ],
        ..PolicySet::default()
    }
}

fn usage_body(records: &[Value]) -> String {
    json!({ "records": records }).to_string()
}

fn usage_record(id: &str, cost: &str) -> Value {
    json!({"id": id, "scope": "app/search/key-1", "cost": {"amount": cost, "currency": "USD"}, "timestamp": Utc::now().to_rfc3339()})
}

fn gcp_data(cost: f64, threshold: Option<f64>) -> Value {
    let mut data = json!({
        "budgetDisplayName": "data-platform", "costAmount": cost,
        "costIntervalStart": format!("{}-01T08:00:00Z", Utc::now().format("%Y-%m")),
        "budgetAmount": 3000, "budgetAmountType": "SPECIFIED_AMOUNT", "currencyCode": "USD"
    });
    if let Some(t) = threshold {
        data["alertThresholdExceeded"] = json!(t);
    }
    data
}

fn gcp_push(data: &Value, message_id: &str) -> Vec<u8> {
    json!({
        "message": {
            "attributes": {"billingAccountId": "01ABCD-234567-89EFGH", "budgetId": GCP_BUDGET, "schemaVersion": "1.0"},
            "data": STANDARD.encode(data.to_string()),
            "messageId": message_id,
            "publishTime": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
        },
        "subscription": "projects/spendguard-test/subscriptions/budgets"
    })
    .to_string()
    .into_bytes()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A certificate URL of the allowed form, unique per signing key.
fn cert_url() -> String {
    format!(
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-{}.pem",
        uuid::Uuid::new_v4().simple()
    )
}

/// An SNS message signed by the Python signer with a fresh key, its certificate at `cert_url`.
fn sns_signed(w: &WebhookWorld, message: Value, version: &str, cert_url: &str) -> Value {
    let signed = python(
        json!({"op": "sns-sign", "message": message, "version": version, "cert_url": cert_url}),
    );
    w.certificates.fixed.lock().unwrap().insert(
        cert_url.to_string(),
        signed["certificate_pem"].as_str().unwrap().to_string(),
    );
    signed["message"].clone()
}

/// Now, as SNS writes a message's Timestamp.
fn sns_now() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn sns_notification(topic: &str, text: &str) -> Value {
    json!({
        "Type": "Notification", "MessageId": uuid::Uuid::new_v4().to_string(), "TopicArn": topic,
        "Message": text, "Timestamp": sns_now()
    })
}

/// What providers reported for `budget` (the check's own snapshots are kept apart).
async fn reported(w: &WebhookWorld, budget: &str) -> Vec<spendguard_domain::records::Observation> {
    w.store
        .observations(budget)
        .await
        .unwrap()
        .into_iter()
        .filter(|o| o.source != spendguard_app::flows::check::EVALUATION_SOURCE)
        .collect()
}

struct Case {
    name: &'static str,
    request: HttpRequest,
    status: u16,
    /// Substrings of the JSON response body.
    says: &'static [&'static str],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_refused_precisely_and_write_nothing() {
    let w = WebhookWorld::new(policy(&aws_name())).await;
    let before = w.items().await;
    let now = Utc::now().timestamp();
    let good = usage_body(&[usage_record("r-1", "1.25")]);
    let signed = |body: &str| signed_usage(body, "msg-bad", now);

    // SNS
    let notification = sns_notification(&w.budgets_topic, "Budget Name: monthly-total");
    let genuine = sns_signed(&w, notification.clone(), "2", &cert_url());
    let mut forged = genuine.clone();
    forged["Message"] =
        json!("Budget Name: monthly-total\nAlert Type: ACTUAL\nACTUAL Amount: $99999");
    let with_url = |url: &str| {
        let mut m = genuine.clone();
        m["SigningCertURL"] = json!(url);
        post("/sns", &[], m.to_string())
    };
    let other_topic = sns_signed(
        &w,
        sns_notification("arn:aws:sns:us-east-1:123456789012:not-allowed", "x"),
        "2",
        &cert_url(),
    );
    let mut version3 = genuine.clone();
    version3["SignatureVersion"] = json!("3");

    // GCP
    let push = gcp_push(&gcp_data(10.0, None), "gcp-bad-1");
    let gcp = |token: String| {
        post(
            "/gcp/pubsub",
            &[("authorization", &bearer(&token))],
            push.clone(),
        )
    };
    let expired = w.token(json!({"iat": now - 7200, "exp": now - 3600}), "RS256");

    let big = "x".repeat(300 * 1024);
    let cases = vec![
        Case {
            name: "forged SNS signature",
            request: post("/sns", &[], forged.to_string()),
            status: 403,
            says: &["not verified"],
        },
        Case {
            name: "certificate on s3.amazonaws.com",
            request: with_url(
                "https://s3.amazonaws.com/sns.us-east-1.amazonaws.com/SimpleNotificationService-ab.pem",
            ),
            status: 403,
            says: &["not verified"],
        },
        Case {
            name: "certificate on sns.evil.example",
            request: with_url("https://sns.evil.example/SimpleNotificationService-ab.pem"),
            status: 403,
            says: &["not verified"],
        },
        Case {
            name: "certificate over http",
            request: with_url(
                "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-ab.pem",
            ),
            status: 403,
            says: &["not verified"],
        },
        Case {
            name: "certificate URL with userinfo",
            request: with_url(
                "https://a:b@sns.us-east-1.amazonaws.com/SimpleNotificationService-ab.pem",
            ),
            status: 403,
            says: &["not verified"],
        },
        Case {
            name: "certificate URL with a query",
            request: with_url(
                "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-ab.pem?x=1",
            ),
            status: 403,
            says: &["not verified"],
        },
        Case {
            name: "certificate in another region",
            request: with_url(
                "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-ab.pem",
            ),
            status: 403,
            says: &["not verified"],
        },
        Case {
            name: "topic not allowed",
            request: post("/sns", &[], other_topic.to_string()),
            status: 403,
            says: &["not verified"],
        },
        Case {
            name: "unknown SignatureVersion",
            request: post("/sns", &[], version3.to_string()),
            status: 403,
            says: &["not verified"],
        },
        Case {
            name: "SNS body not JSON",
            request: post("/sns", &[], "Type=Notification"),
            status: 400,
            says: &["not an SNS message", "\"field\":\"body\""],
        },
        Case {
            name: "JWT expired",
            request: gcp(expired),
            status: 401,
            says: &["authentication failed"],
        },
        Case {
            name: "JWT wrong aud",
            request: gcp(w.token(json!({"aud": "https://other.example/"}), "RS256")),
            status: 401,
            says: &["authentication failed"],
        },
        Case {
            name: "JWT wrong iss",
            request: gcp(w.token(json!({"iss": "https://evil.example"}), "RS256")),
            status: 401,
            says: &["authentication failed"],
        },
        Case {
            name: "JWT wrong email",
            request: gcp(w.token(json!({"email": "someone@evil.example"}), "RS256")),
            status: 403,
            says: &["forbidden"],
        },
        Case {
            name: "JWT email not verified",
            request: gcp(w.token(json!({"email_verified": false}), "RS256")),
            status: 403,
            says: &["forbidden"],
        },
        Case {
            name: "JWT unknown kid",
            request: gcp(w.token(json!({"_kid": "someone-elses-key"}), "RS256")),
            status: 401,
            says: &["authentication failed"],
        },
        Case {
            name: "JWT alg none",
            request: gcp(w.token(json!({}), "none")),
            status: 401,
            says: &["authentication failed"],
        },
        Case {
            name: "JWT HS256 signed with the public key",
            request: gcp(w.token(json!({}), "HS256-public")),
            status: 401,
            says: &["authentication failed"],
        },
        Case {
            name: "no Authorization on the push",
            request: post("/gcp/pubsub", &[], push.clone()),
            status: 401,
            says: &["authentication failed"],
        },
        Case {
            name: "usage with a stale timestamp",
            request: signed_usage(&good, "m", now - 900),
            status: 401,
            says: &["authentication failed"],
        },
        Case {
            name: "usage with a future timestamp",
            request: signed_usage(&good, "m", now + 900),
            status: 401,
            says: &["authentication failed"],
        },
        Case {
            name: "usage with a wrong signature",
            request: {
                let mut r = signed(&good);
                r.headers.insert(
                    "webhook-signature".into(),
                    "v1,Zm9yZ2VkIHNpZ25hdHVyZSBieXRlcyBoZXJlISE=".into(),
                );
                r
            },
            status: 401,
            says: &["authentication failed"],
        },
        Case {
            name: "usage without a signature",
            request: {
                let mut r = signed(&good);
                r.headers.remove("webhook-signature");
                r
            },
            status: 401,
            says: &["authentication failed"],
        },
        Case {
            name: "usage with negative tokens",
            request: signed(&usage_body(&[
                json!({"id": "n", "scope": "app/x", "tokens_in": -5, "cost": {"amount": "1", "currency": "USD"}, "timestamp": Utc::now().to_rfc3339()}),
            ])),
            status: 400,
            says: &["must not be negative", "records[0].tokens_in"],
        },
        Case {
            name: "usage with negative cost",
            request: signed(&usage_body(&[
                usage_record("ok", "1"),
                usage_record("neg", "-0.5"),
            ])),
            status: 400,
            says: &["must not be negative", "records[1].cost.amount"],
        },
        Case {
            name: "usage with an unknown currency",
            request: signed(&usage_body(&[
                json!({"id": "c", "scope": "app/x", "cost": {"amount": "1", "currency": "ZZZ"}, "timestamp": Utc::now().to_rfc3339()}),
            ])),
            status: 400,
            says: &["ISO 4217", "records[0].cost.currency"],
        },
        Case {
            name: "usage malformed JSON",
            request: signed("{\"records\": [}"),
            status: 400,
            says: &["\"field\":\"body\""],
        },
        Case {
            name: "usage body over the limit",
            request: signed(&big),
            status: 413,
            says: &["body larger than 262144 bytes"],
        },
        Case {
            name: "usage empty batch",
            request: signed("{\"records\": []}"),
            status: 400,
            says: &["empty", "\"field\":\"records\""],
        },
        Case {
            name: "usage with an unknown field",
            request: signed(&usage_body(&[
                json!({"id": "u", "scope": "app/x", "cost": {"amount": "1", "currency": "USD"}, "timestamp": Utc::now().to_rfc3339(), "colour": "red"}),
            ])),
            status: 400,
            says: &["unknown field `colour`", "records[0]"],
        },
        // bounds (issue 20 §1): out-of-range values are refused naming the field, before
        // anything is counted; the other records of the batch are not counted either
        Case {
            name: "usage with a cost near Decimal::MAX, fourth in its batch",
            request: signed(&usage_body(&[
                usage_record("b0", "1"),
                usage_record("b1", "1"),
                usage_record("b2", "1"),
                usage_record("b3", "79228162514264337593543950335"),
            ])),
            status: 400,
            says: &["at most 1000000000", "records[3].cost.amount"],
        },
        Case {
            name: "usage with two costs whose sum would overflow a decimal (each past the bound)",
            request: signed(&usage_body(&[
                usage_record("o1", "40000000000000000000000000000"),
                usage_record("o2", "40000000000000000000000000000"),
            ])),
            status: 400,
            says: &["records[0].cost.amount"],
        },
        Case {
            name: "usage with more than a trillion tokens",
            request: signed(&usage_body(&[
                json!({"id": "t", "scope": "app/x", "tokens_in": 10_000_000_000_000_i64, "cost": {"amount": "1", "currency": "USD"}, "timestamp": Utc::now().to_rfc3339()}),
            ])),
            status: 400,
            says: &["at most 1000000000000", "records[0].tokens_in"],
        },
        Case {
            name: "usage dated 40 days ago (its id would be forgotten)",
            request: signed(&usage_body(&[
                json!({"id": "old", "scope": "app/x", "cost": {"amount": "1", "currency": "USD"}, "timestamp": (Utc::now() - chrono::Duration::days(40)).to_rfc3339()}),
            ])),
            status: 400,
            says: &["more than 35 days old", "records[0].timestamp"],
        },
        Case {
            name: "usage dated next month",
            request: signed(&usage_body(&[
                json!({"id": "ahead", "scope": "app/x", "cost": {"amount": "1", "currency": "USD"}, "timestamp": (Utc::now() + chrono::Duration::hours(1)).to_rfc3339()}),
            ])),
            status: 400,
            says: &["in the future", "records[0].timestamp"],
        },
        Case {
            name: "usage with a scope seven segments deep",
            request: signed(&usage_body(&[
                json!({"id": "deep", "scope": "app/a/b/c/d/e/f", "cost": {"amount": "1", "currency": "USD"}, "timestamp": Utc::now().to_rfc3339()}),
            ])),
            status: 400,
            says: &["7 segments", "records[0].scope"],
        },
        // §2: a currency no rate converts into a covering budget's would blind it
        Case {
            name: "usage in EUR on a scope only USD budgets cover",
            request: signed(&usage_body(&[
                json!({"id": "eur", "scope": "app/x", "cost": {"amount": "0.01", "currency": "EUR"}, "timestamp": Utc::now().to_rfc3339()}),
            ])),
            status: 400,
            says: &["budget `app-usage` (USD", "records[0].cost.currency"],
        },
        Case {
            name: "status with a wrong token",
            request: HttpRequest {
                method: "GET".into(),
                path: "/status".into(),
                query: "scope=app".into(),
                headers: HashMap::from([("authorization".into(), "Bearer guess".into())]),
                ..HttpRequest::default()
            },
            status: 401,
            says: &["authentication failed"],
        },
        Case {
            name: "status with a bad scope",
            request: HttpRequest {
                method: "GET".into(),
                path: "/status".into(),
                query: "scope=a//b".into(),
                headers: HashMap::from([("authorization".into(), bearer(STATUS_TOKEN))]),
                ..HttpRequest::default()
            },
            status: 400,
            says: &["empty segment", "\"field\":\"scope\""],
        },
        Case {
            name: "unknown route",
            request: post("/admin", &[], "{}"),
            status: 404,
            says: &["no such route"],
        },
        Case {
            name: "wrong method",
            request: HttpRequest {
                method: "GET".into(),
                path: "/usage".into(),
                ..HttpRequest::default()
            },
            status: 405,
            says: &["method not allowed"],
        },
    ];
    assert!(cases.len() >= 25);
    for case in cases {
        let response: HttpResponse = w.send(case.request).await;
        let body = response.body.to_string();
        assert_eq!(response.status, case.status, "{}: {body}", case.name);
        for s in case.says {
            assert!(body.contains(s), "{}: `{body}` lacks `{s}`", case.name);
        }
        assert_eq!(w.items().await, before, "{} wrote something", case.name);
    }
    assert!(w.probe.drain().await.is_empty(), "nothing was published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_signed_by_standardwebhooks_counts_once_however_often_it_is_replayed() {
    let w = WebhookWorld::new(policy(&aws_name())).await;
    // $60 of $100 in one batch: the 80 % warning is not reached; $25 more reaches it
    let body = usage_body(&[usage_record("u-1", "40.00"), usage_record("u-2", "20.00")]);
    let request = signed_usage(&body, "batch-1", Utc::now().timestamp());
    let mut replays = Vec::new();
    for _ in 0..3 {
        let (w, r) = (w.webhook.clone(), request.clone());
        replays.push(tokio::spawn(async move { w.http(r).await }));
    }
    let mut accepted = 0;
    for r in replays {
        let response = r.await.unwrap();
        assert_eq!(response.status, 200, "{}", response.body);
        accepted += response.body["accepted"].as_u64().unwrap();
    }
    assert_eq!(
        accepted, 2,
        "two records, counted once across three deliveries"
    );
    assert_eq!(month_cost_now(&w.store, "app").await, Decimal::from(60));
    assert!(w.probe.drain().await.is_empty());

    // the next batch crosses the tier: evaluated at once, alert published once
    let more = signed_usage(
        &usage_body(&[usage_record("u-3", "25.00")]),
        "batch-2",
        Utc::now().timestamp(),
    );
    let response = w.send(more).await;
    assert_eq!(response.body["alerts_published"], 1, "{}", response.body);
    let delivered = w.probe.drain().await;
    assert_eq!(delivered.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gcp_notification_delivered_five_times_at_once_gives_one_observation_and_one_alert() {
    let w = WebhookWorld::new(policy(&aws_name())).await;
    // 200 % of the GCP budget: a crossing signal; spendguard's own tier (100 %) decides
    let push = gcp_push(&gcp_data(6001.5, Some(2.0)), "gcp-msg-42");
    let token = w.token(json!({}), "RS256");
    let mut deliveries = Vec::new();
    for _ in 0..5 {
        let (webhook, request) = (
            w.webhook.clone(),
            post(
                "/gcp/pubsub",
                &[("authorization", &bearer(&token))],
                push.clone(),
            ),
        );
        deliveries.push(tokio::spawn(async move { webhook.http(request).await }));
    }
    for d in deliveries {
        let response = d.await.unwrap();
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let observations = reported(&w, "gcp-data").await;
    assert_eq!(observations.len(), 1);
    assert_eq!(observations[0].actual.amount, Decimal::new(60015, 1));
    let alerts = w.probe.drain().await;
    assert_eq!(alerts.len(), 1, "at most one alert for one crossing");
    let event: Value = serde_json::from_str(alerts[0]["Message"].as_str().unwrap()).unwrap();
    assert_eq!(
        (event["budget_id"].as_str(), event["percent"].as_str()),
        (Some("gcp-data"), Some("200.1"))
    );

    // a routine status message (no threshold) is an observation only
    let routine = post(
        "/gcp/pubsub",
        &[("authorization", &bearer(&token))],
        gcp_push(&gcp_data(6100.0, None), "gcp-msg-43"),
    );
    let response = w.send(routine).await;
    assert_eq!(
        (response.status, response.body["crossing"].as_bool()),
        (200, Some(false))
    );
    assert!(w.probe.drain().await.is_empty());
    assert_eq!(
        reported(&w, "gcp-data").await[0].actual.amount,
        Decimal::from(6100)
    );
}

async fn create_aws_budget(w: &WebhookWorld, name: &str, actual: &str) {
    let budgets = aws_sdk_budgets::Client::new(&w.sdk);
    let spend = |amount: &str| {
        aws_sdk_budgets::types::Spend::builder()
            .amount(amount)
            .unit("USD")
            .build()
            .unwrap()
    };
    budgets
        .create_budget()
        .account_id("123456789012")
        .budget(
            aws_sdk_budgets::types::Budget::builder()
                .budget_name(name)
                .budget_limit(spend("1000"))
                .time_unit(aws_sdk_budgets::types::TimeUnit::Monthly)
                .budget_type(aws_sdk_budgets::types::BudgetType::Cost)
                .calculated_spend(
                    aws_sdk_budgets::types::CalculatedSpend::builder()
                        .actual_spend(spend(actual))
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
}

const BUDGETS_TEXT: &str = "AWS Budget Notification
AWS Account 123456789012

Dear AWS Customer,

You requested that we alert you when the ACTUAL Cost associated with your monthly-total budget is greater than $800.00 for the current month. The ACTUAL Cost associated with this budget is $912.40.

Budget Name: monthly-total
Budget Type: Cost
Budgeted Amount: $1,000.00
Alert Type: ACTUAL
Alert Threshold: > $800.00
ACTUAL Amount: $912.40
";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moto_delivers_a_signed_aws_budgets_notification_to_the_webhook() {
    let name = aws_name();
    let w = WebhookWorld::new(policy(&name)).await;
    create_aws_budget(&w, &name, "912.40").await;
    let text = BUDGETS_TEXT.replace("monthly-total", &name);
    let (url, _server) = w.serve().await;
    let sns = aws_sdk_sns::Client::new(&w.sdk);
    sns.subscribe()
        .topic_arn(&w.budgets_topic)
        .protocol("http")
        .endpoint(format!("{url}/sns"))
        .send()
        .await
        .unwrap();
    // moto signs without Subject, so this publish has none (AWS Budgets sets one)
    sns.publish()
        .topic_arn(&w.budgets_topic)
        .message(&text)
        .send()
        .await
        .unwrap();

    let observations = reported(&w, "aws-main").await;
    assert_eq!(
        observations.len(),
        1,
        "moto's delivery was verified and recorded"
    );
    assert_eq!(observations[0].actual.amount, Decimal::new(91240, 2));
    let audit = w
        .store
        .audit_log(YearMonth::of(Utc::now().date_naive()), 10)
        .await
        .unwrap();
    let entry = audit
        .iter()
        .find(|a| a.action == "aws_budgets_notification")
        .expect("audited");
    assert_eq!(entry.detail["raw"], text, "the raw text is kept");
    let alerts = w.probe.drain().await;
    assert_eq!(
        alerts.len(),
        1,
        "91 % of the budget reached the 80 % warning at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_signature_versions_one_and_two_and_subscription_confirmation() {
    let name = aws_name();
    let w = WebhookWorld::new(policy(&name)).await;
    create_aws_budget(&w, &name, "100").await;
    let text = BUDGETS_TEXT.replace("monthly-total", &name);
    for version in ["1", "2"] {
        let m = sns_signed(
            &w,
            sns_notification(&w.budgets_topic, &text),
            version,
            &cert_url(),
        );
        let response = w
            .send(post(
                "/sns",
                &[("x-amz-sns-message-type", "Notification")],
                m.to_string(),
            ))
            .await;
        assert_eq!(response.status, 200, "v{version}: {}", response.body);
        // the same message again: verified duplicate, 2xx, nothing new
        let again = w.send(post("/sns", &[], m.to_string())).await;
        assert_eq!(
            (again.status, again.body["duplicate"].as_bool()),
            (200, Some(true))
        );
    }
    let confirmation = json!({
        "Type": "SubscriptionConfirmation", "MessageId": "c-1", "Token": "2336412f37fb687f5d51e6e2425f004aed",
        "TopicArn": w.budgets_topic, "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336412f",
        "Timestamp": sns_now()
    });
    let signed = sns_signed(&w, confirmation, "2", &cert_url());
    let response = w.send(post("/sns", &[], signed.to_string())).await;
    assert_eq!(
        (response.status, response.body["confirmed"].as_bool()),
        (200, Some(true)),
        "{}",
        response.body
    );
}

#[tokio::test]
async fn status_reports_the_most_restrictive_switch_on_the_path() {
    let w = WebhookWorld::new(policy(&aws_name())).await;
    let status = |scope: &str| HttpRequest {
        method: "GET".into(),
        path: "/status".into(),
        query: format!("scope={scope}"),
        headers: HashMap::from([("authorization".into(), bearer(STATUS_TOKEN))]),
        ..HttpRequest::default()
    };
    let open = w.send(status("openai/prod/key-1")).await;
    assert_eq!(
        open.body,
        json!({"scope": "openai/prod/key-1", "state": "open", "limit_factor": "1"})
    );
    let engaged = KillSwitch {
        scope: Scope::parse("openai").unwrap(),
        state: SwitchState::Engaged {
            reason: "budget emergency".into(),
            actor: "key-guard".into(),
            at: Utc::now(),
            incident: "test".into(),
            incidents: vec!["test".into()],
        },
        limit_factor: Decimal::ZERO,
        updated_at: Utc::now(),
        released: Vec::new(),
    };
    w.store
        .put_kill_switch(
            &engaged,
            None,
            &spendguard_tests::conformance::audit("engaged"),
        )
        .await
        .unwrap();
    let response = w.send(status("openai/prod/key-1")).await;
    assert_eq!(
        (
            response.body["state"].as_str(),
            response.body["switch_scope"].as_str()
        ),
        (Some("engaged"), Some("openai"))
    );
    assert_eq!(w.send(status("anthropic")).await.body["state"], "open");
}

/// Every single-bit change anywhere in a valid Google OIDC token (header, claims, signature)
/// is refused: 8 flips per character of the token, against the real verifier and JWKS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_one_bit_change_to_an_oidc_token_is_refused() {
    let w = WebhookWorld::new(PolicySet::default()).await;
    let verifier = w
        .webhook
        .gcp
        .as_ref()
        .expect("the push route is configured");
    let token = w.token(json!({}), "RS256");
    verifier
        .verify(Some(&format!("Bearer {token}")))
        .await
        .expect("the untouched token verifies");
    let mut tried = 0;
    for i in 0..token.len() {
        for bit in 0..8 {
            let mut bytes = token.clone().into_bytes();
            bytes[i] ^= 1 << bit;
            let Ok(forged) = String::from_utf8(bytes) else {
                continue;
            };
            tried += 1;
            assert!(
                verifier
                    .verify(Some(&format!("Bearer {forged}")))
                    .await
                    .is_err(),
                "accepted a token changed at byte {i} bit {bit}"
            );
        }
    }
    assert!(tried > 4 * token.len(), "{tried} forgeries tried");
    eprintln!("forged OIDC tokens refused: {tried}");
}

/// What deliveries leave behind: the app's month-to-date cost, the GCP budget's observations
/// (their actual cost; the forecast a check adds depends on the second it ran), and the alerts
/// that reached the topic, by id (fan-out delivers each id once).
async fn delivered_state(
    w: &WebhookWorld,
) -> (Decimal, Vec<String>, std::collections::BTreeSet<String>) {
    let cost = month_cost_now(&w.store, "app").await;
    let observations = reported(w, "gcp-data")
        .await
        .iter()
        .map(|o| format!("{} {}", o.actual.amount, o.period_key))
        .collect();
    let alerts = w
        .probe
        .drain()
        .await
        .iter()
        .map(|e| {
            let event: Value = serde_json::from_str(e["Message"].as_str().unwrap()).unwrap();
            event["alert_id"].as_str().unwrap().to_string()
        })
        .collect();
    (cost, observations, alerts)
}

/// What the deployment runs next: the scheduled check of the usage budget, which rolls up
/// what ingest left pending first (ADR 031).
async fn scheduled_check_of_usage(w: &WebhookWorld) {
    let config = budget_check::config::Config {
        table: w.table.clone(),
        alerts_topic_arn: w.probe.topic_arn.clone(),
        sources: Default::default(),
        claim_lease_seconds: 300,
        alert_signing_key_arn: None,
        role: budget_check::config::Role::Check,
    };
    let checker = budget_check::app::checker(&config, &w.sdk).await.unwrap();
    checker
        .run(&spendguard_app::flows::check::CheckOptions {
            only: vec!["app-usage".into()],
            actor: "schedule".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Crash consistency of the webhook: a usage batch that crosses a tier and a GCP crossing
/// notification, with the handler stopped right after each one of its writes. The sender
/// delivers again as it does after a failed delivery (any answer but 2xx), and the scheduled
/// check runs; the end state equals an uninterrupted run's, and one more delivery of each
/// changes nothing. (A redelivery of a batch whose ingest committed reads nothing pending,
/// review finding 6: a crossing of an ancestor budget it missed is the check's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_stopped_after_any_write_then_redelivered_ends_as_if_uninterrupted() {
    use spendguard_tests::faults::{FaultProxy, Rule};
    let deliveries = |w: &WebhookWorld| {
        // $85 of $100: the 80 % warning; 200 % of the GCP budget: a crossing signal
        let usage = usage_body(&[usage_record("u-1", "50.00"), usage_record("u-2", "35.00")]);
        let token = w.token(json!({}), "RS256");
        vec![
            signed_usage(&usage, "batch-1", Utc::now().timestamp()),
            post(
                "/gcp/pubsub",
                &[("authorization", &bearer(&token))],
                gcp_push(&gcp_data(6001.5, Some(2.0)), "gcp-msg-7"),
            ),
        ]
    };
    // the uninterrupted run, through the proxy only to count its writes
    let w = WebhookWorld::new(policy(&aws_name())).await;
    let counting = FaultProxy::start(vec![]).await;
    let webhook = w.webhook_through(&counting.sdk().await).await;
    for request in deliveries(&w) {
        let response = webhook.http(request).await;
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let writes = counting.writes_seen();
    scheduled_check_of_usage(&w).await;
    let expected = delivered_state(&w).await;
    assert_eq!(expected.0, Decimal::from(85));
    assert_eq!(expected.1.len(), 1, "{expected:?}");
    assert_eq!(expected.2.len(), 2, "one alert per crossing: {expected:?}");
    assert!(writes >= 6, "{writes} writes");

    for n in 1..=writes {
        let w = WebhookWorld::new(policy(&aws_name())).await;
        let proxy = FaultProxy::start(vec![Rule::crash_after_write(n)]).await;
        let crashing = w.webhook_through(&proxy.sdk().await).await;
        let requests = deliveries(&w);
        for request in &requests {
            let first = crashing.http(request.clone()).await;
            if first.status / 100 != 2 {
                let again = w.send(request.clone()).await;
                assert_eq!(again.status, 200, "after write {n}: {}", again.body);
            }
        }
        assert_eq!(proxy.total_injected(), 1, "stopped after write {n}");
        scheduled_check_of_usage(&w).await;
        assert_eq!(
            delivered_state(&w).await,
            expected,
            "stopped after write {n} of {writes}"
        );
        for request in requests {
            let response = w.send(request).await;
            assert_eq!(response.status, 200, "{}", response.body);
        }
        assert_eq!(
            delivered_state(&w).await,
            (expected.0, expected.1.clone(), Default::default()),
            "after write {n}: one more delivery of each changes nothing"
        );
    }
    eprintln!(
        "budget-webhook stopped after each of its {writes} writes, then redelivered: same end state"
    );
}

// ---- issue 20 §4: signals carry their own figures ---------------------------------------

/// A push like `gcp_push`, published at `published`.
fn gcp_push_at(data: &Value, message_id: &str, published: chrono::DateTime<Utc>) -> Vec<u8> {
    let mut envelope: Value = serde_json::from_slice(&gcp_push(data, message_id)).unwrap();
    envelope["message"]["publishTime"] =
        json!(published.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
    envelope.to_string().into_bytes()
}

fn scheduled() -> spendguard_app::flows::check::CheckOptions {
    spendguard_app::flows::check::CheckOptions {
        actor: "schedule".into(),
        ..Default::default()
    }
}

/// An AWS Budgets notification says what was spent: it counts as an observation of its own,
/// so the crossing is raised at once even while DescribeBudgets still shows less, and a later
/// check keeps the larger figure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_budgets_notification_is_evaluated_with_its_own_figure() {
    let name = aws_name();
    let w = WebhookWorld::new(policy(&name)).await;
    create_aws_budget(&w, &name, "100").await;
    let text = BUDGETS_TEXT
        .replace("monthly-total", &name)
        .replace("$912.40", "$950.00");
    let m = sns_signed(
        &w,
        sns_notification(&w.budgets_topic, &text),
        "2",
        &cert_url(),
    );
    let response = w.send(post("/sns", &[], m.to_string())).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["alerts_published"], 1, "{}", response.body);
    let delivered = w.probe.drain().await;
    let event: Value = serde_json::from_str(delivered[0]["Message"].as_str().unwrap()).unwrap();
    assert_eq!(event["budget_id"], "aws-main");
    assert_eq!(
        event["spend"]["amount"]
            .as_str()
            .unwrap()
            .parse::<Decimal>()
            .unwrap(),
        Decimal::from(950)
    );
    // the scheduled check still reads $100 from DescribeBudgets: the notified $950 stands
    let report = w.webhook.checker.run(&scheduled()).await.unwrap();
    let window = &report
        .budgets
        .iter()
        .find(|b| b.budget_id == "aws-main")
        .unwrap()
        .windows[0];
    assert_eq!(window.spend.unwrap().amount, Decimal::from(950));
    assert!(w.probe.drain().await.is_empty(), "raised once");
}

/// Finding #13: a notification redelivered after a check run is not dropped as "older": the
/// check's evaluation is kept apart from what Google reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gcp_notification_redelivered_after_a_check_run_is_evaluated() {
    let name = aws_name();
    let w = WebhookWorld::new(policy(&name)).await;
    create_aws_budget(&w, &name, "100").await;
    let token = w.token(json!({}), "RS256");
    let t0 = Utc::now() - chrono::Duration::seconds(60);
    let first = w
        .send(post(
            "/gcp/pubsub",
            &[("authorization", &bearer(&token))],
            gcp_push_at(&gcp_data(1500.0, None), "gcp-early", t0),
        ))
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    // a scheduled check runs now...
    w.webhook.checker.run(&scheduled()).await.unwrap();
    // ...then Pub/Sub redelivers a crossing Google published before it (its first delivery
    // was answered 503)
    let late = w
        .send(post(
            "/gcp/pubsub",
            &[("authorization", &bearer(&token))],
            gcp_push_at(
                &gcp_data(3300.0, Some(1.0)),
                "gcp-late",
                t0 + chrono::Duration::seconds(30),
            ),
        ))
        .await;
    assert_eq!(late.status, 200, "{}", late.body);
    assert_eq!(late.body["alerts_published"], 1, "{}", late.body);
    assert_eq!(w.probe.drain().await.len(), 1);
}

/// The rule for a lower figure later in the same period (credits): provider-reported spend
/// is a high-water mark within its period, so a paging alert recovers only with the period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_later_in_the_period_do_not_resolve_a_paging_alert() {
    let name = aws_name();
    let mut p = policy(&name);
    let gcp = p.budgets.iter_mut().find(|b| b.id == "gcp-data").unwrap();
    gcp.windows[0].tiers[0].name = "critical".into();
    gcp.windows[0].tiers[0].severity = spendguard_domain::budget::Severity::Critical;
    let w = WebhookWorld::new(p).await;
    create_aws_budget(&w, &name, "100").await;
    let token = w.token(json!({}), "RS256");
    let t0 = Utc::now() - chrono::Duration::seconds(120);
    let crossing = w
        .send(post(
            "/gcp/pubsub",
            &[("authorization", &bearer(&token))],
            gcp_push_at(&gcp_data(3300.0, Some(1.0)), "gcp-over", t0),
        ))
        .await;
    assert_eq!(crossing.body["alerts_published"], 1, "{}", crossing.body);
    assert_eq!(w.probe.drain().await.len(), 1);
    // a credit lowers the month's cost in Google's next routine notification, published
    // after the crossing was evaluated
    let credit = w
        .send(post(
            "/gcp/pubsub",
            &[("authorization", &bearer(&token))],
            gcp_push_at(&gcp_data(2400.0, None), "gcp-credit", Utc::now()),
        ))
        .await;
    assert_eq!(credit.status, 200, "{}", credit.body);
    let report = w.webhook.checker.run(&scheduled()).await.unwrap();
    assert_eq!(report.alerts.recoveries, 0, "{:?}", report.alerts);
    assert!(w.probe.drain().await.is_empty(), "no recovery mid-period");
    assert_eq!(w.store.open_alerts().await.unwrap().len(), 1);
}

// ---- senders with their own keys, secrets that follow a rotation (issue 23 part 5) -----------

const SEARCH_SECRET: &str = "whsec_C2FTBj9Z2v5nDPGlMj8ApVcq0dU4q8Pa";
const OPS_SECRET: &str = "whsec_TG9yZW1JcHN1bURvbG9yU2l0QW1ldENvbnM=";

/// The world's webhook with `config` changed, at `clock`.
async fn webhook_at(
    w: &WebhookWorld,
    config: budget_webhook::config::Config,
    clock: std::sync::Arc<spendguard_app::ports::clock::FixedClock>,
) -> Result<budget_webhook::handler::Webhook, spendguard_app::ports::secrets::SecretError> {
    let mut backends = spendguard_aws::backends::deployed(&w.sdk, &w.table);
    backends.clock = clock;
    budget_webhook::app::webhook_with(
        &config,
        &w.sdk,
        backends,
        std::sync::Arc::new(spendguard_local::memory_bus::MemoryBus::default()),
        Box::new(w.certificates.clone()),
    )
    .await
}

fn from_sender(mut request: HttpRequest, sender: &str) -> HttpRequest {
    request
        .headers
        .insert("spendguard-sender".into(), sender.into());
    request
}

fn records_for(scopes: &[&str], id: &str) -> String {
    let records: Vec<Value> = scopes
        .iter()
        .enumerate()
        .map(|(i, scope)| {
            json!({"id": format!("{id}-{i}"), "scope": scope, "cost": {"amount": "1.00", "currency": "USD"},
                   "timestamp": Utc::now().to_rfc3339()})
        })
        .collect();
    json!({ "records": records }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_reports_only_for_its_own_scopes() {
    let w = WebhookWorld::new(PolicySet::default()).await;
    let senders = json!({"senders": [
        {"id": "search", "secrets": [SEARCH_SECRET], "scopes": ["openai/search"]},
        {"id": "ops", "secrets": [OPS_SECRET], "scopes": ["*"]}
    ]});
    let config = budget_webhook::config::Config {
        usage_secret_arn: aws::secret(&w.sdk, "senders", &senders.to_string()).await,
        ..w.config.clone()
    };
    let clock = std::sync::Arc::new(spendguard_app::ports::clock::FixedClock::new(Utc::now()));
    let webhook = webhook_at(&w, config, clock).await.unwrap();
    let now = Utc::now().timestamp();
    let send = |secret: &str, sender: Option<&str>, scopes: &[&str], id: &str| {
        let body = records_for(scopes, id);
        let request = signed_usage_with(secret, &body, id, now);
        match sender {
            Some(s) => from_sender(request, s),
            None => request,
        }
    };

    let ok = webhook
        .http(send(
            SEARCH_SECRET,
            Some("search"),
            &["openai/search/k1"],
            "m1",
        ))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let before = w.items().await;

    // one record outside the sender's scopes refuses the batch: 403, nothing written
    let other = webhook
        .http(send(
            SEARCH_SECRET,
            Some("search"),
            &["openai/search/k1", "anthropic/finance/k9"],
            "m2",
        ))
        .await;
    assert_eq!(other.status, 403, "{}", other.body);
    assert_eq!(other.body["field"], "records[1].scope", "{}", other.body);
    assert!(
        other.body["error"]
            .as_str()
            .unwrap()
            .contains("`openai/search`"),
        "{}",
        other.body
    );
    assert_eq!(w.items().await, before, "nothing written");

    // a sender's secret is its own; a sender must say who it is
    for (secret, sender) in [
        (SEARCH_SECRET, Some("ops")),
        (SEARCH_SECRET, None),
        (SEARCH_SECRET, Some("marketing")),
    ] {
        let refused = webhook
            .http(send(secret, sender, &["openai/search/k1"], "m3"))
            .await;
        assert_eq!(refused.status, 401, "{sender:?}: {}", refused.body);
    }
    assert_eq!(w.items().await, before, "nothing written");
    // the ops sender may report for anything
    let ops = webhook
        .http(send(
            OPS_SECRET,
            Some("ops"),
            &["anthropic/finance/k9"],
            "m4",
        ))
        .await;
    assert_eq!(ops.status, 200, "{}", ops.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_usage_secret_is_taken_within_minutes_not_hours() {
    let w = WebhookWorld::new(PolicySet::default()).await;
    let arn = aws::secret(&w.sdk, "rotating", SEARCH_SECRET).await;
    let config = budget_webhook::config::Config {
        usage_secret_arn: arn.clone(),
        ..w.config.clone()
    };
    let t0 = Utc::now();
    let clock = std::sync::Arc::new(spendguard_app::ports::clock::FixedClock::new(t0));
    let webhook = webhook_at(&w, config, clock.clone()).await.unwrap();
    let secrets = aws_sdk_secretsmanager::Client::new(&w.sdk);
    let rotate = |value: String| {
        let secrets = secrets.clone();
        let arn = arn.clone();
        async move {
            spendguard_tests::logs::secret_used(&value);
            secrets
                .put_secret_value()
                .secret_id(arn)
                .secret_string(value)
                .send()
                .await
                .unwrap();
        }
    };
    let send = |secret: &str, id: &str| {
        let at = spendguard_app::ports::clock::Clock::now(clock.as_ref()).timestamp();
        signed_usage_with(secret, &records_for(&["openai/search/k1"], id), id, at)
    };

    // rotation step 1: both secrets held; a sender already on the new one is taken at once
    // (its first mismatch re-reads the secret)
    rotate(format!("{OPS_SECRET} {SEARCH_SECRET}")).await;
    let r = webhook.http(send(OPS_SECRET, "r1")).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // step 2: the old secret is dropped; mismatches re-read at most every 30 s
    rotate(OPS_SECRET.to_string()).await;
    clock.advance(chrono::Duration::seconds(10));
    let r = webhook.http(send(SEARCH_SECRET, "r2")).await;
    assert_eq!(r.status, 200, "the value held still has it: {}", r.body);
    // after at most five minutes the value held is the new one
    clock.advance(chrono::Duration::minutes(5));
    let r = webhook.http(send(SEARCH_SECRET, "r3")).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = webhook.http(send(OPS_SECRET, "r4")).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_token_is_at_least_32_bytes_and_follows_a_rotation() {
    let w = WebhookWorld::new(PolicySet::default()).await;
    let clock = std::sync::Arc::new(spendguard_app::ports::clock::FixedClock::new(Utc::now()));
    // a short (or empty) token is refused when `/status` reads it (the log names the secret)
    let short_arn = aws::secret(&w.sdk, "short-status", "short-token").await;
    let webhook = webhook_at(
        &w,
        budget_webhook::config::Config {
            status_token_arn: short_arn.clone(),
            ..w.config.clone()
        },
        clock.clone(),
    )
    .await
    .expect("the status token is not read at start");
    let r = webhook
        .http(status_request("short-token", "scope=openai/prod"))
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    let text = r.body.to_string();
    assert!(
        !text.contains(&short_arn) && !text.contains("short-token"),
        "{text}"
    );

    let arn = aws::secret(&w.sdk, "status-rotating", STATUS_TOKEN).await;
    let webhook = webhook_at(
        &w,
        budget_webhook::config::Config {
            status_token_arn: arn.clone(),
            ..w.config.clone()
        },
        clock,
    )
    .await
    .unwrap();
    let new_token = "status-token-rotated-0123456789abcdef01234567";
    spendguard_tests::logs::secret_used(new_token);
    aws_sdk_secretsmanager::Client::new(&w.sdk)
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(new_token)
        .send()
        .await
        .unwrap();
    let r = webhook
        .http(status_request(new_token, "scope=openai/prod"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

fn status_request(token: &str, query: &str) -> HttpRequest {
    HttpRequest {
        method: "GET".into(),
        path: "/status".into(),
        query: query.into(),
        headers: HashMap::from([("authorization".into(), bearer(token))]),
        ..HttpRequest::default()
    }
}

/// The status token is read by the first `/status` request, not at start (issue 28): a webhook
/// whose token cannot be read still counts usage, and `/status` answers 503 naming the secret
/// until the token can be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_serves_usage_without_its_status_token_and_status_answers_503() {
    let w = WebhookWorld::new(PolicySet::default()).await;
    let clock = std::sync::Arc::new(spendguard_app::ports::clock::FixedClock::new(Utc::now()));
    // a name is a reference Secrets Manager takes like an ARN, and the secret can be created
    // under it later
    let missing_arn = aws::unique("status-never-created");
    let webhook = webhook_at(
        &w,
        budget_webhook::config::Config {
            status_token_arn: missing_arn.clone(),
            ..w.config.clone()
        },
        clock.clone(),
    )
    .await
    .expect("the webhook starts without its status token");

    let now = Utc::now().timestamp();
    let body = records_for(&["openai/prod/k1"], "no-status-1");
    let r = webhook.http(signed_usage(&body, "no-status-1", now)).await;
    assert_eq!(r.status, 200, "usage is served: {}", r.body);

    let r = webhook
        .http(status_request(STATUS_TOKEN, "scope=openai/prod"))
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    // whoever asks may not be the operator: the log names the secret, the answer does not
    assert!(
        !r.body.to_string().contains(&missing_arn),
        "the answer names no secret: {}",
        r.body
    );

    // once the secret exists (and the retry interval passed), `/status` reads it
    aws_sdk_secretsmanager::Client::new(&w.sdk)
        .create_secret()
        .name(&missing_arn)
        .secret_string(STATUS_TOKEN)
        .send()
        .await
        .unwrap();
    let r = webhook
        .http(status_request(STATUS_TOKEN, "scope=openai/prod"))
        .await;
    assert_eq!(
        r.status, 503,
        "not asked again within the retry interval: {}",
        r.body
    );
    clock.advance(spendguard_app::refreshing::MISS_INTERVAL);
    let r = webhook
        .http(status_request(STATUS_TOKEN, "scope=openai/prod"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The usage secret is read while the runtime waits for the first event, not before (issue 28):
/// a webhook whose usage secret does not exist yet starts, answers `/usage` 503 naming no
/// secret (the log names it), and takes the secret once it exists, without a restart (read
/// again at most every 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_whose_usage_secret_is_missing_answers_503_until_it_exists() {
    let w = WebhookWorld::new(PolicySet::default()).await;
    let clock = std::sync::Arc::new(spendguard_app::ports::clock::FixedClock::new(Utc::now()));
    let missing_name = aws::unique("usage-not-yet-created");
    let webhook = webhook_at(
        &w,
        budget_webhook::config::Config {
            usage_secret_arn: missing_name.clone(),
            ..w.config.clone()
        },
        clock.clone(),
    )
    .await
    .expect("the webhook starts without reading its usage secret");
    let usage = |id: &str| {
        let at = spendguard_app::ports::clock::Clock::now(clock.as_ref()).timestamp();
        signed_usage(&records_for(&["openai/prod/k1"], id), id, at)
    };

    let r = webhook.http(usage("missing-usage-1")).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        !r.body.to_string().contains(&missing_name),
        "the answer names no secret: {}",
        r.body
    );

    aws_sdk_secretsmanager::Client::new(&w.sdk)
        .create_secret()
        .name(&missing_name)
        .secret_string(spendguard_tests::webhook::USAGE_SECRET)
        .send()
        .await
        .unwrap();
    let r = webhook.http(usage("missing-usage-2")).await;
    assert_eq!(
        r.status, 503,
        "not asked again within the retry interval: {}",
        r.body
    );
    clock.advance(spendguard_app::refreshing::MISS_INTERVAL);
    let r = webhook.http(usage("missing-usage-3")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["accepted"], 1, "{}", r.body);
}

/// The webhook's start waits on no network read (issue 28): with Secrets Manager holding its
/// answer back, the webhook is built all the same; the first `/usage` takes the read begun at
/// start once it is answered, and the secret is read once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_starts_without_waiting_for_its_usage_secret_and_reads_it_once() {
    let w = WebhookWorld::new(PolicySet::default()).await;
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:usage-held-AbCdEf";
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let held = gate.clone();
    let secrets_manager = spendguard_tests::aws::secrets_manager_standin(
        vec![(arn.into(), spendguard_tests::webhook::USAGE_SECRET.into())],
        held,
    )
    .await;
    let vault_client = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&w.sdk)
            .endpoint_url(&secrets_manager.url)
            .build(),
    );
    let backends = spendguard_app::backends::Backends {
        vault: std::sync::Arc::new(spendguard_aws::secrets::SecretsManagerVault::new(
            vault_client,
        )),
        ..spendguard_aws::backends::deployed(&w.sdk, &w.table)
    };
    let config = budget_webhook::config::Config {
        usage_secret_arn: arn.into(),
        ..w.config.clone()
    };
    // generous: on a loaded machine a start takes milliseconds; one that awaits the held read
    // never ends
    let webhook = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        budget_webhook::app::webhook_with(
            &config,
            &w.sdk,
            backends,
            std::sync::Arc::new(spendguard_local::memory_bus::MemoryBus::default()),
            Box::new(w.certificates.clone()),
        ),
    )
    .await
    .expect("the start waits on no secret read")
    .expect("the webhook starts");

    gate.add_permits(1);
    let now = Utc::now().timestamp();
    let body = records_for(&["openai/prod/k1"], "held-1");
    let r = webhook.http(signed_usage(&body, "held-1", now)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = records_for(&["openai/prod/k1"], "held-2");
    let r = webhook.http(signed_usage(&body, "held-2", now)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let reads: Vec<_> = secrets_manager
        .received()
        .into_iter()
        .filter(|r| r.header("x-amz-target") == Some("secretsmanager.GetSecretValue"))
        .collect();
    assert_eq!(reads.len(), 1, "the usage secret is read once: {reads:?}");
}

/// The Secrets Manager stand-in refuses what the service refuses: an unsigned request, another
/// operation, a secret it does not hold.
#[tokio::test]
async fn the_secrets_manager_standin_refuses_what_the_service_refuses() {
    let w = WebhookWorld::new(PolicySet::default()).await;
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(100));
    let held = "arn:aws:secretsmanager:us-east-1:123456789012:secret:held-AbCdEf";
    let standin =
        spendguard_tests::aws::secrets_manager_standin(vec![(held.into(), "value".into())], open)
            .await;
    let http = reqwest::Client::new();
    let unsigned = http
        .post(format!("{}/", standin.url))
        .header("x-amz-target", "secretsmanager.GetSecretValue")
        .body(json!({"SecretId": held}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status().as_u16(), 400);
    assert!(
        unsigned
            .text()
            .await
            .unwrap()
            .contains("MissingAuthenticationToken")
    );
    let client = aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::config::Builder::from(&w.sdk)
            .endpoint_url(&standin.url)
            .build(),
    );
    let missing = client
        .get_secret_value()
        .secret_id("arn:aws:secretsmanager:us-east-1:123456789012:secret:other-AbCdEf")
        .send()
        .await
        .expect_err("not held");
    assert!(
        missing
            .as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception()),
        "{missing:?}"
    );
    let listed = client
        .list_secrets()
        .send()
        .await
        .expect_err("not an operation it answers");
    assert!(
        format!("{listed:?}").contains("UnknownOperation"),
        "{listed:?}"
    );
    let read = client
        .get_secret_value()
        .secret_id(held)
        .send()
        .await
        .unwrap();
    assert_eq!(read.secret_string(), Some("value"));
}

/// The certificate fetch of the SNS route follows no redirect, reads at most 16 KiB, and tells
/// a URL that names no certificate (the sender's fault: 403) from one that fails now (ours:
/// 503) — review finding #18.
#[tokio::test]
async fn the_certificate_fetch_follows_no_redirect_and_reads_at_most_16_kib() {
    use spendguard_http::verify::sns::{CertificateSource, FetchError, HttpsCertificates};
    use spendguard_tests::standin::{Reply, StandIn};
    let standin = StandIn::start(|r, _| {
        let text = |status: u16, body: String| Reply {
            status,
            headers: vec![("content-type", "text/plain".into())],
            body,
            delay: None,
            hold: None,
        };
        match r.path.as_str() {
            "/ok.pem" => text(200, "-----BEGIN CERTIFICATE-----\n".into()),
            "/redirect.pem" => Reply {
                headers: vec![("location", "http://127.0.0.1:9/ok.pem".into())],
                ..text(302, String::new())
            },
            "/huge.pem" => text(200, "A".repeat(17 * 1024)),
            "/failing.pem" => text(500, "overloaded".into()),
            "/throttled.pem" => text(429, "slow down".into()),
            _ => text(404, "no such key".into()),
        }
    })
    .await;
    let fetch = |path: &str| {
        let url = url::Url::parse(&format!("{}{path}", standin.url)).unwrap();
        async move { HttpsCertificates::new().unwrap().fetch(&url).await }
    };
    assert!(fetch("/ok.pem").await.unwrap().starts_with("-----BEGIN"));
    for refused in ["/redirect.pem", "/huge.pem", "/missing.pem"] {
        assert!(
            matches!(fetch(refused).await, Err(FetchError::Refused(_))),
            "{refused}"
        );
    }
    for ours in ["/failing.pem", "/throttled.pem"] {
        assert!(
            matches!(fetch(ours).await, Err(FetchError::Unavailable(_))),
            "{ours}: a passing refusal must not block the real certificate"
        );
    }
    assert_eq!(standin.received().len(), 6, "the redirect was not followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genuine_sns_message_replayed_after_an_hour_is_refused() {
    let w = WebhookWorld::new(policy(&aws_name())).await;
    let mut old = sns_notification(&w.budgets_topic, "AWS Budget Notification");
    old["Timestamp"] = json!(
        (Utc::now() - chrono::Duration::minutes(61))
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
    );
    let signed = sns_signed(&w, old, "2", &cert_url());
    let response = w.send(post("/sns", &[], signed.to_string())).await;
    assert_eq!(response.status, 403, "{}", response.body);
}

/// A push Google signed whose body spendguard cannot read is acknowledged (a 4xx would have
/// Pub/Sub redeliver it for days), audited, and changes nothing else (review finding #23).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_push_that_cannot_be_read_is_acknowledged_and_audited() {
    let w = WebhookWorld::new(policy(&aws_name())).await;
    let counted = |items: Vec<(String, String)>| -> Vec<(String, String)> {
        items
            .into_iter()
            .filter(|(pk, _)| !pk.starts_with("AUDIT#"))
            .collect()
    };
    let before = counted(w.items().await);
    let response = w
        .send(post(
            "/gcp/pubsub",
            &[("authorization", &bearer(&w.token(json!({}), "RS256")))],
            b"{\"message\":{}}".to_vec(),
        ))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["field"], "body", "{}", response.body);
    assert_eq!(
        counted(w.items().await),
        before,
        "nothing but the audit entry"
    );
    let audited = w
        .store
        .audit_log(YearMonth::of(Utc::now().date_naive()), 50)
        .await
        .unwrap();
    assert!(
        audited.iter().any(|e| e.action == "gcp_push_unparseable"),
        "{audited:?}"
    );
}

/// While Google's keys cannot be fetched, pushes are answered 503 without asking Google again
/// on every one of them (review finding #22).
#[tokio::test]
async fn a_failed_fetch_of_googles_keys_is_not_repeated_on_every_push() {
    use spendguard_http::verify::gcp_oidc::{GoogleOidcVerifier, OidcPolicy};
    use spendguard_tests::standin::{Reply, StandIn};
    let google = StandIn::start(|_, _| Reply::json(503, json!({"error": "unavailable"}))).await;
    let verifier = GoogleOidcVerifier::new(
        OidcPolicy {
            audience: "https://spendguard.example/gcp/pubsub".into(),
            service_account_email: "push@p.iam.gserviceaccount.com".into(),
            jwks_url: format!("{}/oauth2/v3/certs", google.url),
        },
        reqwest::Client::new(),
    );
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#);
    let token = format!("Bearer {header}.e30.c2ln");
    for _ in 0..5 {
        let e = verifier.verify(Some(&token)).await.unwrap_err();
        assert!(e.is_ours(), "503, retried by Pub/Sub: {e}");
    }
    assert_eq!(google.received().len(), 1, "one fetch for five pushes");
}

/// A store that answers too slowly gets the sender a clean 503 within the request deadline
/// (below Pub/Sub's 10-second acknowledgement deadline), not a function timeout; the retry
/// counts the batch once (review finding #29).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_is_a_clean_503_within_the_deadline_and_the_retry_counts_once() {
    use spendguard_tests::faults::{Fault, FaultProxy, Rule};
    let w = WebhookWorld::new(policy(&aws_name())).await;
    let proxy = FaultProxy::start(vec![Rule {
        // every attempt: the SDK's own retries cannot hide it
        operation: "TransactWriteItems",
        body_contains: None,
        every: 1,
        limit: 100,
        fault: Fault::Delay(std::time::Duration::from_secs(60)),
    }])
    .await;
    let slow = w.webhook_through(&proxy.sdk().await).await;
    let body = json!({"records": [{"id": "slow-1", "scope": "openai/prod/key-1",
        "cost": {"amount": "2.00", "currency": "USD"}, "timestamp": Utc::now().to_rfc3339()}]})
    .to_string();
    let started = std::time::Instant::now();
    let response = slow
        .http(signed_usage(&body, "slow", Utc::now().timestamp()))
        .await;
    assert_eq!(response.status, 503, "{}", response.body);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "answered before Pub/Sub's deadline: {:?}",
        started.elapsed()
    );
    // the sender retries: counted once, whether or not the slow write landed
    let retried = w
        .send(signed_usage(&body, "slow", Utc::now().timestamp()))
        .await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    let counted =
        retried.body["accepted"].as_u64().unwrap() + retried.body["duplicates"].as_u64().unwrap();
    assert_eq!(counted, 1, "{}", retried.body);
}

/// The internet-facing webhook never reads the providers' admin keys (review finding #7): given
/// ARNs that name nothing, it still starts, and a usage report is evaluated as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_starts_and_evaluates_without_reading_any_admin_key() {
    let w = WebhookWorld::new(policy(&aws_name())).await;
    let missing = |name: &str| {
        Some(format!(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:{}",
            aws::unique(name)
        ))
    };
    let mut config = w.config.clone();
    config.sources.openai_admin_key_arn = missing("openai-admin");
    config.sources.anthropic_admin_key_arn = missing("anthropic-admin");
    config.sources.cost_explorer = true;
    let clock = std::sync::Arc::new(spendguard_app::ports::clock::FixedClock::new(Utc::now()));
    let webhook = webhook_at(&w, config, clock)
        .await
        .expect("starts without the admin keys");
    let body = json!({"records": [{"id": "no-admin-1", "scope": "openai/prod/key-1",
        "cost": {"amount": "1.00", "currency": "USD"}, "timestamp": Utc::now().to_rfc3339()}]})
    .to_string();
    let response = webhook
        .http(signed_usage(&body, "no-admin", Utc::now().timestamp()))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
}

/// With the push subscription pinned, a push Google signed for another subscription (anyone
/// who may act as the push service account can point one at the webhook) is refused and
/// audited, and records nothing (review finding #22).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_from_another_subscription_is_refused_when_the_subscription_is_pinned() {
    let w = WebhookWorld::new(policy(&aws_name())).await;
    let mut config = w.config.clone();
    config.gcp.as_mut().unwrap().subscription =
        Some("projects/spendguard-test/subscriptions/budgets".into());
    let clock = std::sync::Arc::new(spendguard_app::ports::clock::FixedClock::new(Utc::now()));
    let webhook = webhook_at(&w, config, clock).await.unwrap();
    let token = w.token(json!({}), "RS256");
    let mut foreign: Value =
        serde_json::from_slice(&gcp_push(&gcp_data(9000.0, Some(1.0)), "foreign-1")).unwrap();
    foreign["subscription"] = json!("projects/attacker/subscriptions/false-kill");
    let counted = |items: Vec<(String, String)>| -> Vec<(String, String)> {
        items
            .into_iter()
            .filter(|(pk, _)| !pk.starts_with("AUDIT#"))
            .collect()
    };
    let before = counted(w.items().await);
    let refused = webhook
        .http(post(
            "/gcp/pubsub",
            &[("authorization", &bearer(&token))],
            foreign.to_string().into_bytes(),
        ))
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.body["field"], "subscription", "{}", refused.body);
    assert_eq!(counted(w.items().await), before, "nothing recorded");
    // the pinned subscription's own push is taken
    let ours = webhook
        .http(post(
            "/gcp/pubsub",
            &[("authorization", &bearer(&token))],
            gcp_push(&gcp_data(100.0, None), "ours-1"),
        ))
        .await;
    assert_eq!(ours.status, 200, "{}", ours.body);
}

/// What the webhook's role may write: (actions, `dynamodb:LeadingKeys` patterns) of each of its
/// statements that names leading keys in template.yaml (tests/deploy checks terraform/ agrees).
fn webhook_write_statements() -> Vec<(Vec<String>, Vec<String>)> {
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml"),
    )
    .unwrap();
    let start = template.find("  BudgetWebhookFunction:").unwrap();
    let end = start + template[start..].find("      Events:").unwrap();
    let list = |line: &str| -> Vec<String> {
        line.trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|s| s.trim().trim_matches('"').to_string())
            .collect()
    };
    let mut statements = Vec::new();
    let mut actions = Vec::new();
    for line in template[start..end].lines().map(str::trim) {
        if let Some(a) = line.strip_prefix("Action: ") {
            actions = list(a);
        } else if let Some(keys) = line.strip_prefix("dynamodb:LeadingKeys: ") {
            statements.push((actions.clone(), list(keys)));
        }
    }
    assert!(
        !statements.is_empty(),
        "the webhook's writes name leading keys"
    );
    statements
}

fn leading_key_allows(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => key == pattern,
    }
}

/// Finding #7: the public function's role may write only some items. Every item its store
/// writes while it takes a hold (`/authorize`), usage that reconciles it, a GCP notification,
/// an AWS Budgets notice, replays and a status request, each crossing a tier and publishing, is
/// one that role allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_writes_only_items_its_role_may_write() {
    let name = aws_name();
    let w = WebhookWorld::new(policy(&name)).await;
    create_aws_budget(&w, &name, "912.40").await;
    let (webhook, recorder) = w.webhook_recording_writes().await;

    // a hold, reconciled by the usage record with its request id
    let hold = json!({"scope": "app/search/key-1", "estimate": {"amount": "5.00", "currency": "USD"}, "request_id": "w-1"});
    let response = webhook
        .http(HttpRequest {
            path: "/authorize".into(),
            ..signed_usage(&hold.to_string(), "writes-hold", Utc::now().timestamp())
        })
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.body["decision"], "allow", "{}", response.body);
    let usage = signed_usage(
        &usage_body(&[usage_record("w-1", "70.00"), usage_record("w-2", "20.00")]),
        "writes-1",
        Utc::now().timestamp(),
    );
    for _ in 0..2 {
        let response = webhook.http(usage.clone()).await;
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let token = w.token(json!({}), "RS256");
    let push = post(
        "/gcp/pubsub",
        &[("authorization", &bearer(&token))],
        gcp_push(&gcp_data(6001.5, Some(2.0)), "writes-gcp"),
    );
    assert_eq!(webhook.http(push).await.status, 200);
    let text = BUDGETS_TEXT.replace("monthly-total", &name);
    let notice = sns_signed(
        &w,
        sns_notification(&w.budgets_topic, &text),
        "1",
        &cert_url(),
    );
    let response = webhook.http(post("/sns", &[], notice.to_string())).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let status = HttpRequest {
        method: "GET".into(),
        path: "/status".into(),
        query: "scope=app/search".into(),
        headers: HashMap::from([("authorization".into(), bearer(STATUS_TOKEN))]),
        ..HttpRequest::default()
    };
    assert_eq!(webhook.http(status).await.status, 200);
    assert_eq!(w.probe.drain().await.len(), 3, "each signal crossed a tier");

    let statements = webhook_write_statements();
    let writes = recorder.writes();
    let refused: Vec<_> = writes
        .iter()
        .filter(|(operation, pk)| {
            !statements.iter().any(|(actions, keys)| {
                actions.contains(&format!("dynamodb:{operation}"))
                    && keys.iter().any(|p| leading_key_allows(p, pk))
            })
        })
        .collect();
    assert!(refused.is_empty(), "IAM would refuse {refused:?}");
    // what the signals write is in the record: the check above saw real writes
    for prefix in [
        "USAGE#", "SPEND#", "OBS#", "SRCDAY#", "ALERT#", "AUDIT#", "RESERVE#", "HOLDS#",
    ] {
        assert!(
            writes.iter().any(|(_, pk)| pk.starts_with(prefix)),
            "no {prefix} write recorded: {writes:?}"
        );
    }
    // and the role's lists are no wider than the key table's: KILL#/KEYS/BUDGETS stay out
    for forbidden in [
        "KILL#openai",
        "KILL_INDEX",
        "KEYS",
        "BUDGETS",
        "KEYACTION#k",
        "MSG#security-ack#k",
    ] {
        assert!(
            !statements
                .iter()
                .any(|(_, keys)| keys.iter().any(|p| leading_key_allows(p, forbidden))),
            "{forbidden}"
        );
    }
}

/// A Lambda SNS record as Lambda delivers `message` (an HTTP-format SNS message).
fn lambda_sns_event(message: &Value) -> Value {
    let mut sns = message.clone();
    let object = sns.as_object_mut().unwrap();
    if let Some(url) = object.remove("SigningCertURL") {
        object.insert("SigningCertUrl".into(), url);
    }
    object.entry("Subject").or_insert(Value::Null);
    object.insert("MessageAttributes".into(), json!({}));
    json!({"Records": [{
        "EventSource": "aws:sns", "EventVersion": "1.0",
        "EventSubscriptionArn": format!("{}:1f1e", message["TopicArn"].as_str().unwrap()),
        "Sns": sns
    }]})
}

/// Finding #20: whoever may invoke the webhook could hand it an SNS-shaped record from the
/// allowed topic. The record's own signature is verified, as on the HTTP route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sns_trigger_record_is_verified_like_an_http_delivery() {
    let name = aws_name();
    let w = WebhookWorld::new(policy(&name)).await;
    create_aws_budget(&w, &name, "912.40").await;
    let text = BUDGETS_TEXT.replace("monthly-total", &name);
    let genuine = sns_signed(
        &w,
        sns_notification(&w.budgets_topic, &text),
        "1",
        &cert_url(),
    );
    let before = w.items().await;

    let mut forged = genuine.clone();
    forged["Message"] = json!(text.replace("$912.40", "$99,912.40"));
    let mut unsigned = lambda_sns_event(&genuine);
    unsigned["Records"][0]["Sns"]["Signature"] = json!("");
    let mut foreign_certificate = genuine.clone();
    foreign_certificate["SigningCertURL"] =
        json!("https://attacker.example/SimpleNotificationService-1.pem");
    for (case, event) in [
        ("a changed message", lambda_sns_event(&forged)),
        ("no signature", unsigned),
        (
            "a certificate off SNS",
            lambda_sns_event(&foreign_certificate),
        ),
    ] {
        let refused = budget_webhook::event::handle(&w.webhook, event).await;
        let error = refused.expect_err(case);
        assert!(
            error.to_string().contains("not verified"),
            "{case}: {error}"
        );
    }
    assert_eq!(w.items().await, before, "a refused record writes nothing");
    assert!(w.probe.drain().await.is_empty());

    let taken = budget_webhook::event::handle(&w.webhook, lambda_sns_event(&genuine))
        .await
        .expect("a genuine record is taken");
    assert_eq!(taken["records"][0]["observations"], 1, "{taken}");
    assert_eq!(
        reported(&w, "aws-main").await[0].actual.amount,
        Decimal::new(91240, 2)
    );
}

/// Finding #24: every `/usage` request used to add an audit entry, kept forever. The webhook's
/// evaluations are audited when they publish (or fail), and every audit entry expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_audits_only_evaluations_that_acted_and_audit_entries_expire() {
    let w = WebhookWorld::new(policy(&aws_name())).await;
    let audits = |items: Vec<(String, String)>| {
        items
            .into_iter()
            .filter(|(pk, _)| pk.starts_with("AUDIT#"))
            .count()
    };
    let before = audits(w.items().await);
    for (i, cost) in ["10.00", "15.00", "20.00"].iter().enumerate() {
        let body = usage_body(&[usage_record(&format!("quiet-{i}"), cost)]);
        let response = w
            .send(signed_usage(
                &body,
                &format!("quiet-{i}"),
                Utc::now().timestamp(),
            ))
            .await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(response.body["alerts_published"], 0, "{}", response.body);
    }
    assert_eq!(
        audits(w.items().await),
        before,
        "quiet evaluations add no entry"
    );

    let crossing = usage_body(&[usage_record("loud", "40.00")]);
    let response = w
        .send(signed_usage(&crossing, "loud", Utc::now().timestamp()))
        .await;
    assert_eq!(response.body["alerts_published"], 1, "{}", response.body);
    assert_eq!(
        audits(w.items().await),
        before + 1,
        "the one that published"
    );

    let dynamodb = aws_sdk_dynamodb::Client::new(&w.sdk);
    let page = dynamodb
        .scan()
        .table_name(&w.table)
        .filter_expression("begins_with(PK, :audit)")
        .expression_attribute_values(
            ":audit",
            aws_sdk_dynamodb::types::AttributeValue::S("AUDIT#".into()),
        )
        .send()
        .await
        .unwrap();
    assert!(!page.items().is_empty());
    for item in page.items() {
        let expires: i64 = item["expires_at"].as_n().unwrap().parse().unwrap();
        let entry: spendguard_domain::records::AuditEntry =
            serde_json::from_str(item["doc"].as_s().unwrap()).unwrap();
        assert_eq!(
            expires,
            (entry.at + spendguard_domain::records::AUDIT_RETENTION).timestamp(),
            "{}",
            entry.action
        );
    }
}

/// A sender's record ids are its own: one sender cannot use up another's ids and so have that
/// sender's usage dropped as "duplicates" (a blinding attack between senders).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_senders_record_ids_cannot_shadow_another_senders() {
    const BILLING_SECRET: &str = "whsec_QmlsbGluZ1NlbmRlclNlY3JldEZvclRlc3Rz";
    spendguard_tests::logs::secret_used(BILLING_SECRET);
    let w = WebhookWorld::new(PolicySet::default()).await;
    let senders = json!({"senders": [
        {"id": "search", "secrets": [SEARCH_SECRET], "scopes": ["openai/search"]},
        {"id": "billing", "secrets": [BILLING_SECRET], "scopes": ["anthropic/billing"]}
    ]});
    let config = budget_webhook::config::Config {
        usage_secret_arn: aws::secret(&w.sdk, "senders", &senders.to_string()).await,
        ..w.config.clone()
    };
    let clock = std::sync::Arc::new(spendguard_app::ports::clock::FixedClock::new(Utc::now()));
    let webhook = webhook_at(&w, config, clock).await.unwrap();
    let now = Utc::now().timestamp();
    let send = |secret: &str, sender: &str, scope: &str| {
        // the same record id ("shared-0") from both senders
        let body = records_for(&[scope], "shared");
        from_sender(signed_usage_with(secret, &body, "batch", now), sender)
    };
    // billing goes first with the id search is about to use
    let first = webhook
        .http(send(BILLING_SECRET, "billing", "anthropic/billing/k1"))
        .await;
    assert_eq!(first.body["accepted"], 1, "{}", first.body);
    let second = webhook
        .http(send(SEARCH_SECRET, "search", "openai/search/k1"))
        .await;
    assert_eq!(
        (
            second.body["accepted"].as_u64(),
            second.body["duplicates"].as_u64()
        ),
        (Some(1), Some(0)),
        "search's record counts: {}",
        second.body
    );
    assert_eq!(
        month_cost_now(&w.store, "openai/search").await,
        Decimal::ONE
    );
    // each sender's own replay is still a duplicate
    let replay = webhook
        .http(send(SEARCH_SECRET, "search", "openai/search/k1"))
        .await;
    assert_eq!(replay.body["duplicates"], 1, "{}", replay.body);
    assert_eq!(
        month_cost_now(&w.store, "openai/search").await,
        Decimal::ONE
    );
}

// ---- POST /authorize ----------------------------------------------------------------------

/// Agents under `agents/` may spend 10 dollars a day.
fn agents_policy() -> PolicySet {
    PolicySet {
        budgets: vec![budget("agents-daily", "agents", WindowKind::Daily, 10)],
        ..PolicySet::default()
    }
}

fn authorize_body(request_id: &str, amount: &str) -> String {
    json!({"scope": "agents/loop-1", "estimate": {"amount": amount, "currency": "USD"}, "request_id": request_id}).to_string()
}

/// `body` signed with the usage secrets, to `/authorize`.
fn signed_authorize(body: &str, message_id: &str) -> HttpRequest {
    HttpRequest {
        path: "/authorize".into(),
        ..signed_usage(body, message_id, Utc::now().timestamp())
    }
}

fn agents_record(id: &str, cost: &str) -> Value {
    json!({"id": id, "scope": "agents/loop-1", "cost": {"amount": cost, "currency": "USD"}, "timestamp": Utc::now().to_rfc3339()})
}

async fn authorize_once(w: &WebhookWorld, request_id: &str, amount: &str) -> Value {
    let response = w
        .send(signed_authorize(
            &authorize_body(request_id, amount),
            &format!("msg-{request_id}"),
        ))
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_authorizations_allow_exactly_the_headroom_and_usage_reconciles_them() {
    let w = WebhookWorld::new(agents_policy()).await;
    let requests: Vec<HttpRequest> = (0..50)
        .map(|i| {
            signed_authorize(
                &authorize_body(&format!("call-{i}"), "1.00"),
                &format!("m-{i}"),
            )
        })
        .collect();
    let answers: Vec<HttpResponse> = futures::future::join_all(requests.into_iter().map(|r| {
        let webhook = w.webhook.clone();
        async move { webhook.http(r).await }
    }))
    .await;
    let mut allowed = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["request_id"], format!("call-{i}"));
        match a.body["decision"].as_str() {
            Some("allow") => allowed.push(format!("call-{i}")),
            Some("deny") => {
                assert_eq!(a.body["headroom"]["budget"], "agents-daily", "{}", a.body);
                assert_eq!(a.body["headroom"]["window"], "daily");
                assert_eq!(a.body["headroom"]["remaining"], "0", "{}", a.body);
                assert_eq!(a.body["headroom"]["currency"], "USD");
            }
            other => panic!("decision {other:?}: {}", a.body),
        }
    }
    assert_eq!(allowed.len(), 10, "10 dollars of headroom, 1 dollar each");

    // the calls report what they really cost: 80 cents each, reconciling their holds
    let records: Vec<Value> = allowed.iter().map(|id| agents_record(id, "0.80")).collect();
    let response = w
        .send(signed_usage(
            &usage_body(&records),
            "usage-1",
            Utc::now().timestamp(),
        ))
        .await;
    assert_eq!(response.body["accepted"], 10, "{}", response.body);
    assert_eq!(month_cost_now(&w.store, "agents").await, Decimal::from(8));
    // no hold remains: the 2 dollars left take exactly two more calls
    let after: Vec<String> = [
        authorize_once(&w, "next-1", "1.00").await,
        authorize_once(&w, "next-2", "1.00").await,
        authorize_once(&w, "next-3", "1.00").await,
    ]
    .iter()
    .map(|b| b["decision"].as_str().unwrap().to_string())
    .collect();
    assert_eq!(after, ["allow", "allow", "deny"]);
}

/// A hard cap on an ancestor holds while a key's spend waits for its roll-up (ADR 031): the
/// reserved request's usage moves its spend into the key's own counters at once and into
/// `agents` only at the roll-up, so its hold on `agents` stays until then. (The first build
/// released every hold at ingest: until the roll-up the spend was in neither, and another
/// key was allowed past the cap.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ancestor_cap_holds_between_a_keys_usage_and_its_roll_up() {
    let w = WebhookWorld::new(agents_policy()).await;
    let authorize_for = |key: &'static str, id: &'static str, amount: &'static str| {
        let body = json!({"scope": format!("agents/{key}"), "estimate": {"amount": amount, "currency": "USD"}, "request_id": id}).to_string();
        let w = &w;
        async move {
            let response = w.send(signed_authorize(&body, &format!("msg-{id}"))).await;
            assert_eq!(response.status, 200, "{}", response.body);
            response.body["decision"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(authorize_for("loop-1", "a-1", "6.00").await, "allow");
    let usage = json!({"id": "a-1", "scope": "agents/loop-1", "cost": {"amount": "6.00", "currency": "USD"}, "timestamp": Utc::now().to_rfc3339()});
    let response = w
        .send(signed_usage(
            &usage_body(&[usage]),
            "usage-a",
            Utc::now().timestamp(),
        ))
        .await;
    assert_eq!(response.body["accepted"], 1, "{}", response.body);

    // not rolled up yet: key loop-2 sees loop-1's hold, 4 dollars are left
    assert_eq!(authorize_for("loop-2", "b-1", "6.00").await, "deny");

    let leaf = Scope::parse("agents/loop-1").unwrap();
    assert_eq!(w.store.roll_up(&[leaf], Utc::now()).await.unwrap(), 1);
    // rolled up: the spend is in `agents` and the hold is gone (counted once, not twice)
    assert_eq!(authorize_for("loop-2", "b-2", "6.00").await, "deny");
    assert_eq!(authorize_for("loop-2", "b-3", "4.00").await, "allow");
    assert_eq!(authorize_for("loop-3", "c-1", "0.01").await, "deny");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_authorization_answers_the_same_and_holds_once() {
    let w = WebhookWorld::new(agents_policy()).await;
    let first = authorize_once(&w, "r-1", "4").await;
    assert_eq!(first["decision"], "allow");
    assert_eq!(first["headroom"]["remaining"], "6");
    assert_eq!(first["replayed"], false);
    let again = authorize_once(&w, "r-1", "4").await;
    assert_eq!(again["replayed"], true);
    assert_eq!(
        (&again["decision"], &again["headroom"]),
        (&first["decision"], &first["headroom"])
    );
    // held once: 6 dollars are left, not 2
    assert_eq!(authorize_once(&w, "r-2", "6").await["decision"], "allow");
    let denied = authorize_once(&w, "r-3", "0.01").await;
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["headroom"]["remaining"], "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_authorizations_are_refused_naming_the_field_and_hold_nothing() {
    let w = WebhookWorld::new(agents_policy()).await;
    let before = w.items().await;
    let cases: [(&str, u16, Option<&str>); 6] = [
        (
            r#"{"scope": "agents/loop-1", "request_id": "a"}"#,
            400,
            Some("body"),
        ),
        (
            r#"{"scope": "_model/x", "estimate": {"amount": "1", "currency": "USD"}, "request_id": "a"}"#,
            400,
            Some("scope"),
        ),
        (
            r#"{"scope": "agents", "estimate": {"amount": "0", "currency": "USD"}, "request_id": "a"}"#,
            400,
            Some("estimate.amount"),
        ),
        (
            r#"{"scope": "agents", "estimate": {"amount": "1000000001", "currency": "USD"}, "request_id": "a"}"#,
            400,
            Some("estimate.amount"),
        ),
        (
            r#"{"scope": "agents", "estimate": {"amount": "1", "currency": "EUR"}, "request_id": "a"}"#,
            400,
            Some("estimate.currency"),
        ),
        (
            r#"{"scope": "agents", "estimate": {"amount": "1", "currency": "USD"}, "request_id": "a/b"}"#,
            400,
            Some("request_id"),
        ),
    ];
    for (body, status, field) in cases {
        let response = w.send(signed_authorize(body, "bad")).await;
        assert_eq!(response.status, status, "{body}: {}", response.body);
        assert_eq!(response.body["field"].as_str(), field, "{body}");
    }
    // not signed, or signed with another secret
    let mut unsigned = signed_authorize(&authorize_body("a", "1"), "bad");
    unsigned.headers.remove("webhook-signature");
    assert_eq!(w.send(unsigned).await.status, 401);
    let other = HttpRequest {
        path: "/authorize".into(),
        ..signed_usage_with(
            "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            &authorize_body("a", "1"),
            "bad",
            Utc::now().timestamp(),
        )
    };
    assert_eq!(w.send(other).await.status, 401);
    let get = HttpRequest {
        method: "GET".into(),
        ..signed_authorize(&authorize_body("a", "1"), "bad")
    };
    assert_eq!(w.send(get).await.status, 405);
    assert_eq!(w.items().await, before, "a refused request writes nothing");
}

/// ADR 031: an ingest counts a record on its own key and leaves its ancestors' share pending
/// until the roll-up; the webhook's evaluation right after the batch still reads it (the
/// counter and its batch's pending items in one snapshot). A `*` budget alerts on the report
/// that crosses its tier, with no roll-up between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_budget_alerts_on_the_report_that_crosses_it_before_any_roll_up() {
    let mut set = policy(&aws_name());
    set.budgets
        .push(budget("everything", "*", WindowKind::Monthly, 100));
    let w = WebhookWorld::new(set).await;
    let report = |id: &str, scope: &str, cost: &str| {
        let record = json!({"id": id, "scope": scope, "cost": {"amount": cost, "currency": "USD"}, "timestamp": Utc::now().to_rfc3339()});
        signed_usage(
            &usage_body(&[record]),
            &format!("msg-{id}"),
            Utc::now().timestamp(),
        )
    };
    let published = |r: &HttpResponse| r.body["alerts_published"].clone();
    // $50 on one key, rolled up as the table's stream would
    let first = w.send(report("r-1", "openai/a/k1", "50.00")).await;
    assert_eq!(published(&first), json!(0), "{}", first.body);
    let k1 = Scope::parse("openai/a/k1").unwrap();
    assert!(w.store.roll_up(&[k1], Utc::now()).await.unwrap() > 0);
    // another key: $20 (70 of 100), then $15 (85): nothing rolled up in between
    let second = w.send(report("r-2", "anthropic/b/k2", "20.00")).await;
    assert_eq!(published(&second), json!(0), "{}", second.body);
    let third = w.send(report("r-3", "anthropic/b/k2", "15.00")).await;
    assert_eq!(published(&third), json!(1), "{}", third.body);
    let alerts = w.probe.drain().await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(alerts[0].to_string().contains("everything"), "{alerts:?}");
    assert_eq!(month_cost_now(&w.store, "*").await, Decimal::from(85));
}

/// Issue 28 item 2: on a warm container a one-record batch costs one `TransactWriteItems` (the
/// marker a conditional put in it, no marker read first) and one read of the counters (with
/// the batch's pending share of them, one `TransactGetItems`: ADR 031) — before and after its
/// budget's tier was crossed; a replay is still counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_one_record_batch_costs_one_transaction_and_one_read() {
    let w = WebhookWorld::new(policy(&aws_name())).await;
    let (webhook, counter) = w.webhook_counting_requests().await;
    let one = |id: &str, cost: &str| {
        signed_usage(
            &usage_body(&[usage_record(id, cost)]),
            &format!("msg-{id}"),
            Utc::now().timestamp(),
        )
    };
    let warm_batch = |expected: &str| {
        let operations = counter.operations();
        assert_eq!(
            operations,
            BTreeMap::from([
                ("TransactGetItems".to_string(), 1),
                ("TransactWriteItems".to_string(), 1)
            ]),
            "{expected}"
        );
    };
    // the cold container's first batch reads the policy and indexes the scopes
    assert_eq!(webhook.http(one("w-1", "10.00")).await.status, 200);
    counter.reset();
    let response = webhook.http(one("w-2", "10.00")).await;
    assert_eq!(response.body["accepted"], 1, "{}", response.body);
    warm_batch("a warm batch below every tier");

    // $90 of $100: the 80 % warning is raised once (its claim, the open alerts)
    let response = webhook.http(one("w-3", "70.00")).await;
    assert_eq!(response.body["alerts_published"], 1, "{}", response.body);
    counter.reset();
    let response = webhook.http(one("w-4", "1.00")).await;
    assert_eq!(response.body["alerts_published"], 0, "{}", response.body);
    warm_batch("a warm batch past a tier already raised");

    // a replay: the transaction's marker condition fails; counted once, answered as before
    let response = webhook.http(one("w-4", "1.00")).await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        (&response.body["accepted"], &response.body["duplicates"]),
        (&json!(0), &json!(1))
    );
    assert_eq!(month_cost_now(&w.store, "app").await, Decimal::from(91));
    assert_eq!(w.probe.drain().await.len(), 1, "the warning, once");
}

/// Review finding 5: one batch for one key that packs into more than 8 transactions (a
/// pending item each) is read whole by the evaluation right after it: the crossing is
/// alerted at once. (Before, the store remembered the last 8 pending items per leaf: the
/// `*` budget read about $13 of the batch's $97 and nothing was published.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_of_many_transactions_is_evaluated_whole() {
    let mut set = policy(&aws_name());
    set.budgets
        .push(budget("everything", "*", WindowKind::Monthly, 100));
    let w = WebhookWorld::new(set).await;
    let now = Utc::now().to_rfc3339();
    // $90 in the first 300 records, $7 in the 700 after them
    let records: Vec<Value> = (0..1000)
        .map(|i| {
            let cost = if i < 300 { "0.30" } else { "0.01" };
            json!({"id": format!("big-{i}"), "scope": "openai/a/k1", "cost": {"amount": cost, "currency": "USD"}, "timestamp": now})
        })
        .collect();
    let response = w
        .send(signed_usage(
            &usage_body(&records),
            "msg-big",
            Utc::now().timestamp(),
        ))
        .await;
    assert_eq!(response.body["accepted"], 1000, "{}", response.body);
    assert_eq!(response.body["alerts_published"], 1, "{}", response.body);
    let alerts = w.probe.drain().await;
    assert!(alerts[0].to_string().contains("everything"), "{alerts:?}");
    let pending = w
        .items()
        .await
        .into_iter()
        .filter(|(pk, sk)| pk == "SPEND#openai/a/k1" && sk.starts_with("P#"))
        .count();
    assert!(pending > 8, "the batch wrote {pending} pending items");
}

/// Review finding 6: a batch of only duplicates (a sender's retry) reads nothing pending,
/// however much its leaf has pending: its spend was counted by the request that wrote it and
/// is seen through the roll-up and the scheduled check. (Before, a container that had not
/// written the leaf queried every pending item of it and read them all on the request path.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_batch_reads_no_pending_item() {
    let mut set = policy(&aws_name());
    set.budgets
        .push(budget("everything", "*", WindowKind::Monthly, 100_000));
    let w = WebhookWorld::new(set).await;
    let one = |i: usize| {
        let record = json!({"id": format!("p-{i}"), "scope": "openai/a/k1", "cost": {"amount": "1.00", "currency": "USD"}, "timestamp": Utc::now().to_rfc3339()});
        signed_usage(
            &usage_body(&[record]),
            &format!("msg-p-{i}"),
            Utc::now().timestamp(),
        )
    };
    // 30 pending items under the leaf, none rolled up
    for i in 0..30 {
        assert_eq!(w.send(one(i)).await.status, 200);
    }
    // another container: warmed by a report for another key, then the retry
    let (webhook, counter) = w.webhook_counting_requests().await;
    let other = json!({"id": "warm", "scope": "openai/b/k2", "cost": {"amount": "1.00", "currency": "USD"}, "timestamp": Utc::now().to_rfc3339()});
    let warm = signed_usage(&usage_body(&[other]), "msg-warm", Utc::now().timestamp());
    assert_eq!(webhook.http(warm).await.status, 200);
    counter.reset();
    let retry = webhook.http(one(7)).await;
    assert_eq!(retry.body["duplicates"], 1, "{}", retry.body);
    let operations = counter.operations();
    assert_eq!(operations.get("Query"), None, "{operations:?}");
    assert!(counter.count() <= 4, "{operations:?}");
}
