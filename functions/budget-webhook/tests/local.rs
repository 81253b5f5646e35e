//! budget-webhook on the embedded store, no network: every fixture in `events/budget-webhook`
//! is handled as Lambda would deliver it, and hostile bytes on every route never panic and
//! never get a 2xx. (Verification against real signers and moto is in `tests/tests/functions/webhook.rs`.)

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use budget_webhook::event;
use budget_webhook::handler::{SnsIntake, SubscriptionConfirmer, Webhook};
use budget_webhook::http::{HttpRequest, HttpResponse};
use chrono::Utc;
use proptest::prelude::*;
use serde_json::Value;
use spendguard_app::flows::check::{CheckOptions, Checker, DEFAULT_CLAIM_LEASE};
use spendguard_app::policy_cache::PolicyCache;
use spendguard_app::ports::clock::{Clock, FixedClock, SystemClock};
use spendguard_app::ports::secrets::{SecretError, SecretVault};
use spendguard_app::ports::sources::{SourceError, SpendRequest, SpendSource};
use spendguard_app::ports::store::StateStore;
use spendguard_app::refreshing::{OnFirstUse, secret_reader};
use spendguard_app::sources::counters::UsageCounters;
use spendguard_app::sources::gcp::GcpBudgetObservations;
use spendguard_domain::alert::AlertKind;
use spendguard_domain::budget::{
    Action, Basis, Budget, Severity, SourceSpec, Threshold, Tier, Window,
};
use spendguard_domain::money::Currency;
use spendguard_domain::period::{WindowKind, Zone};
use spendguard_domain::scope::Scope;
use spendguard_domain::secret::Secret;
use spendguard_domain::senders::UsageSenders;
use spendguard_domain::settings::PolicySet;
use spendguard_domain::signals::{aws_budgets, gcp};
use spendguard_domain::spend::{BudgetSpend, WindowError};
use spendguard_domain::standard_webhooks::WebhookSecret;
use spendguard_http::verify::gcp_oidc::{GoogleOidcVerifier, OidcPolicy};
use spendguard_http::verify::sns::{CertificateSource, FetchError, SnsVerifier};
use spendguard_local::memory_bus::MemoryBus;
use spendguard_local::sqlite::SqliteStore;
use url::Url;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOPIC: &str = "arn:aws:sns:eu-west-1:123456789012:spendguard-aws-budgets";

struct NoCertificates;

#[async_trait]
impl CertificateSource for NoCertificates {
    async fn fetch(&self, _url: &Url) -> Result<String, FetchError> {
        Err(FetchError::Unavailable("no network in these tests".into()))
    }
}

struct NeverConfirm;

#[async_trait]
impl SubscriptionConfirmer for NeverConfirm {
    async fn confirm(&self, _topic_arn: &str, _token: &str) -> Result<(), String> {
        Err("not in these tests".into())
    }
}

fn budget(id: &str, source: SourceSpec, kind: WindowKind) -> Budget {
    Budget {
        id: id.into(),
        description: None,
        scope: Scope::parse("aws/123456789012").unwrap(),
        currency: Currency::USD,
        zone: Zone::UTC,
        windows: vec![Window {
            provider_cap: false,
            kind,
            limit: 5000.into(),
            tiers: vec![Tier {
                name: "warning".into(),
                threshold: Threshold::Percent(80.into()),
                basis: Basis::Actual,
                severity: Severity::Warning,
                actions: vec![Action::Notify],
            }],
        }],
        source,
        routing: BTreeMap::new(),
    }
}

/// A vault holding one value.
struct Fixed(&'static str);

#[async_trait]
impl SecretVault for Fixed {
    async fn read(&self, _reference: &str) -> Result<Secret, SecretError> {
        Ok(Secret::new(self.0))
    }
}

async fn webhook() -> (Webhook, Arc<dyn StateStore>) {
    let budgets = vec![
        budget(
            "aws-monthly",
            SourceSpec::AwsBudgets {
                budget_name: "monthly-total".into(),
            },
            WindowKind::Monthly,
        ),
        budget(
            "aws-daily",
            SourceSpec::AwsBudgets {
                budget_name: "daily-total".into(),
            },
            WindowKind::Daily,
        ),
    ];
    let (webhook, store, _) = webhook_with(budgets, Arc::new(SystemClock)).await;
    (webhook, store)
}

/// A webhook on an embedded store holding `budgets`, on `clock`, publishing to the bus returned.
async fn webhook_with(
    budgets: Vec<Budget>,
    clock: Arc<dyn Clock>,
) -> (Webhook, Arc<dyn StateStore>, Arc<MemoryBus>) {
    let store: Arc<dyn StateStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let bus = Arc::new(MemoryBus::default());
    store
        .put_policy(&PolicySet {
            budgets,
            ..PolicySet::default()
        })
        .await
        .unwrap();
    let sources: Vec<Arc<dyn SpendSource>> = vec![
        Arc::new(UsageCounters::new(store.clone())),
        Arc::new(GcpBudgetObservations::new(store.clone())),
    ];
    let webhook = Webhook {
        store: store.clone(),
        policy: PolicyCache::new(store.clone(), clock.clone()),
        known_raised: Arc::default(),
        checker: Checker {
            store: store.clone(),
            bus: bus.clone(),
            sources,
            key_usage: Vec::new(),
            clock: clock.clone(),
            claim_lease: DEFAULT_CLAIM_LEASE,
            provider_caps: Vec::new(),
            pending_age: None,
        },
        usage_senders: OnFirstUse::new(
            secret_reader(
                Arc::new(Fixed(SECRET)),
                "usage",
                UsageSenders::parse,
                clock.clone(),
            ),
            clock.clone(),
        ),
        status_token: OnFirstUse::new(
            secret_reader(
                Arc::new(Fixed("status-token-0123456789abcdef0123456789")),
                "status",
                |t| Ok(Secret::new(t)),
                clock.clone(),
            ),
            clock.clone(),
        ),
        gcp: Some(GoogleOidcVerifier::new(
            OidcPolicy {
                audience: "https://spendguard.example/gcp/pubsub".into(),
                service_account_email: "push@p.iam.gserviceaccount.com".into(),
                // a closed port: keys are never reachable here
                jwks_url: "http://127.0.0.1:9/certs".into(),
            },
            reqwest::Client::new(),
        )),
        gcp_subscription: None,
        sns: Some(SnsIntake {
            verifier: SnsVerifier::new(vec![TOPIC.into()], Box::new(NoCertificates)),
            confirmer: Box::new(NeverConfirm),
            // the recorded events' signatures cannot be checked here (their certificates are
            // on sns.*.amazonaws.com); tests/tests/functions/webhook.rs verifies signed ones
            verify_trigger_signatures: false,
        }),
        clock,
        reservation_ttl: spendguard_domain::authorize::bounds::DEFAULT_RESERVATION_TTL,
    };
    (webhook, store, bus)
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../../events/budget-webhook/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn body_of(fixture: &Value) -> Vec<u8> {
    fixture["body"]
        .as_str()
        .unwrap_or_default()
        .as_bytes()
        .to_vec()
}

#[tokio::test]
async fn every_fixture_is_handled_as_lambda_delivers_it() {
    let (w, store) = webhook().await;
    let dir = format!("{}/../../events/budget-webhook", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 10);
    for name in &names {
        let event = fixture(name);
        let result = event::handle(&w, event.clone()).await;
        if name.starts_with("sns-aws-budgets-") {
            let out = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(out["records"][0]["observations"], 1, "{name}: {out}");
        } else {
            // Function URL fixtures carry placeholder credentials: refused, and never a 5xx crash
            let out = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            let status = out["statusCode"].as_u64().unwrap();
            let expected = match name.as_str() {
                "sns-http-notification.json" => 403, // the placeholder signature is refused before any fetch
                _ => 401,
            };
            assert_eq!(status, expected, "{name}: {out}");
            assert!(serde_json::from_str::<Value>(out["body"].as_str().unwrap()).is_ok());
        }
    }
    // the SNS fixtures were recorded: actual for monthly and daily, forecast kept beside actual
    let reported = |budget: &'static str| {
        let store = store.clone();
        async move {
            store
                .observations(budget)
                .await
                .unwrap()
                .into_iter()
                .filter(|o| o.source != spendguard_app::flows::check::EVALUATION_SOURCE)
                .collect::<Vec<_>>()
        }
    };
    let monthly = reported("aws-monthly").await;
    assert_eq!(monthly.len(), 1);
    assert_eq!(monthly[0].actual.amount.to_string(), "4120.33");
    assert_eq!(monthly[0].forecast.unwrap().amount.to_string(), "5480.10");
    assert_eq!(
        reported("aws-daily").await[0].actual.amount.to_string(),
        "212.80"
    );
}

#[test]
fn fixture_bodies_parse_as_their_senders_mean_them() {
    let expectations = [
        ("gcp-pubsub-observation.json", None, None),
        ("gcp-pubsub-threshold.json", Some("0.9"), None),
        ("gcp-pubsub-threshold-200-percent.json", Some("2.0"), None),
        ("gcp-pubsub-forecast-threshold.json", None, Some("1.0")),
    ];
    for (name, alert, forecast) in expectations {
        let n = gcp::parse_push(&body_of(&fixture(name))).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            n.alert_threshold.map(|t| t.to_string()).as_deref(),
            alert,
            "{name}"
        );
        assert_eq!(
            n.forecast_threshold.map(|t| t.to_string()).as_deref(),
            forecast,
            "{name}"
        );
        assert_eq!(n.is_crossing(), alert.is_some() || forecast.is_some());
    }
    for (name, kind, daily) in [
        (
            "sns-aws-budgets-monthly-actual.json",
            aws_budgets::AlertType::Actual,
            false,
        ),
        (
            "sns-aws-budgets-daily-actual.json",
            aws_budgets::AlertType::Actual,
            true,
        ),
        (
            "sns-aws-budgets-forecasted.json",
            aws_budgets::AlertType::Forecasted,
            false,
        ),
    ] {
        let text = fixture(name)["Records"][0]["Sns"]["Message"]
            .as_str()
            .unwrap()
            .to_string();
        let n = aws_budgets::parse(&text).unwrap();
        assert_eq!((n.alert_type, n.daily), (kind, daily), "{name}");
    }
}

fn request(
    route: usize,
    body: Vec<u8>,
    signed: bool,
    authorization: Option<String>,
) -> HttpRequest {
    let (method, path) = [
        ("POST", "/usage"),
        ("POST", "/authorize"),
        ("POST", "/gcp/pubsub"),
        ("POST", "/sns"),
        ("GET", "/status"),
    ][route];
    let mut r = HttpRequest {
        method: method.into(),
        path: path.into(),
        body,
        ..HttpRequest::default()
    };
    if signed {
        let now = Utc::now().timestamp();
        let signature = WebhookSecret::parse(SECRET)
            .unwrap()
            .sign("fuzz", now, &r.body);
        r.headers.insert("webhook-id".into(), "fuzz".into());
        r.headers
            .insert("webhook-timestamp".into(), now.to_string());
        r.headers.insert("webhook-signature".into(), signature);
    }
    if let Some(a) = authorization {
        r.headers.insert("authorization".into(), a);
    }
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Arbitrary bytes, signed or not, with arbitrary credentials, on every route.
    #[test]
    fn arbitrary_bytes_never_panic_and_never_succeed(
        route in 0usize..5,
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        signed in any::<bool>(),
        authorization in proptest::option::of("[ -~]{0,200}"),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let response = runtime.block_on(async {
            let (w, _) = webhook().await;
            w.http(request(route, body, signed, authorization)).await
        });
        prop_assert!(!response.is_success(), "{} {}", response.status, response.body);
    }

    /// JSON-shaped garbage is refused too (it gets past the first parse).
    #[test]
    fn json_shaped_garbage_is_refused(
        route in 0usize..3,
        value in proptest::collection::btree_map("[a-zA-Z]{1,12}", "[ -~]{0,40}", 0..8),
    ) {
        let body = serde_json::to_vec(&value).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let response = runtime.block_on(async {
            let (w, _) = webhook().await;
            w.http(request(route, body, true, Some("Bearer x.y.z".into()))).await
        });
        prop_assert!(!response.is_success(), "{} {}", response.status, response.body);
    }
}

/// `body` to `path`, signed with the usage secret.
fn signed(path: &str, body: String) -> HttpRequest {
    let now = Utc::now().timestamp();
    let id = uuid::Uuid::new_v4().to_string();
    let signature = WebhookSecret::parse(SECRET)
        .unwrap()
        .sign(&id, now, body.as_bytes());
    HttpRequest {
        method: "POST".into(),
        path: path.into(),
        headers: [
            ("webhook-id".to_string(), id),
            ("webhook-timestamp".to_string(), now.to_string()),
            ("webhook-signature".to_string(), signature),
        ]
        .into(),
        body: body.into_bytes(),
        ..HttpRequest::default()
    }
}

/// Sends every request at once, answers in order.
async fn all_at_once(w: &Arc<Webhook>, requests: Vec<HttpRequest>) -> Vec<HttpResponse> {
    let calls: Vec<_> = requests
        .into_iter()
        .map(|r| {
            let w = w.clone();
            tokio::spawn(async move { w.http(r).await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    answers
}

fn authorize(request_id: &str) -> HttpRequest {
    signed(
        "/authorize",
        serde_json::json!({"scope": "agents/loop-1", "estimate": {"amount": "1", "currency": "USD"}, "request_id": request_id}).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_authorizations_on_the_embedded_store_allow_exactly_the_headroom() {
    let (w, store) = webhook().await;
    let mut agents = budget("agents-daily", SourceSpec::Usage, WindowKind::Daily);
    agents.scope = Scope::parse("agents").unwrap();
    agents.windows[0].limit = 10.into();
    store
        .put_policy(&PolicySet {
            budgets: vec![agents],
            ..PolicySet::default()
        })
        .await
        .unwrap();
    let w = Arc::new(w);
    let answers = all_at_once(
        &w,
        (0..50).map(|i| authorize(&format!("call-{i}"))).collect(),
    )
    .await;
    let allowed: Vec<String> = answers
        .iter()
        .filter(|a| a.status == 200 && a.body["decision"] == "allow")
        .map(|a| a.body["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        allowed.len(),
        10,
        "{:?}",
        answers.iter().map(|a| &a.body).collect::<Vec<_>>()
    );
    assert!(answers.iter().all(|a| a.status == 200));
    // their usage records reconcile them: 50 cents each really spent, no hold left
    let records: Vec<Value> = allowed
        .iter()
        .map(|id| serde_json::json!({"id": id, "scope": "agents/loop-1", "cost": {"amount": "0.50", "currency": "USD"}, "timestamp": Utc::now().to_rfc3339()}))
        .collect();
    let counted = w
        .http(signed(
            "/usage",
            serde_json::json!({"records": records}).to_string(),
        ))
        .await;
    assert_eq!(counted.body["accepted"], 10, "{}", counted.body);
    // 5 dollars spent, nothing held: exactly five more fit
    let more = all_at_once(
        &w,
        (0..8).map(|i| authorize(&format!("more-{i}"))).collect(),
    )
    .await;
    assert_eq!(
        more.iter()
            .filter(|a| a.body["decision"] == "allow")
            .count(),
        5
    );
}

/// A usage report of one record of `cost` US dollars at `at`, signed as its sender would.
fn usage_report(id: &str, cost: &str, at: chrono::DateTime<Utc>) -> HttpRequest {
    let body = serde_json::json!({"records": [{
        "id": id,
        "scope": "openai/agents/loop-1",
        "cost": {"amount": cost, "currency": "USD"},
        "timestamp": at.to_rfc3339(),
    }]})
    .to_string()
    .into_bytes();
    let mut r = HttpRequest {
        method: "POST".into(),
        path: "/usage".into(),
        body,
        ..HttpRequest::default()
    };
    let signature = WebhookSecret::parse(SECRET)
        .unwrap()
        .sign(id, at.timestamp(), &r.body);
    r.headers.insert("webhook-id".into(), id.into());
    r.headers
        .insert("webhook-timestamp".into(), at.timestamp().to_string());
    r.headers.insert("webhook-signature".into(), signature);
    r
}

/// The webhook evaluates a rolling window inline after the usage report that crosses it: a
/// burst alerts once however often it is reported on, and again only once the window has moved
/// on past it.
#[tokio::test]
async fn a_burst_reported_to_the_webhook_alerts_once_per_rolling_crossing() {
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let clock = Arc::new(FixedClock::new(start));
    let mut agents = budget(
        "agents",
        SourceSpec::Usage,
        WindowKind::Rolling { minutes: 60 },
    );
    agents.scope = Scope::parse("openai/agents").unwrap();
    agents.windows[0].limit = 50.into();
    agents.windows[0].tiers[0].threshold = Threshold::Percent(100.into());
    let (w, _store, bus) = webhook_with(vec![agents], clock.clone()).await;
    let alerts = |bus: &MemoryBus| {
        bus.events()
            .iter()
            .filter(|e| e.budget_id == "agents")
            .map(|e| e.period_key.clone())
            .collect::<Vec<_>>()
    };
    // 30 + 25 within ten minutes crosses 50: one alert, in the window that ended at 10:10
    for (i, (minute, cost)) in [(0, "30"), (10, "25"), (20, "5"), (40, "10")]
        .iter()
        .enumerate()
    {
        clock.set(start + chrono::Duration::minutes(*minute));
        let response = w
            .http(usage_report(&format!("burst-{i}"), cost, clock.now()))
            .await;
        assert_eq!(response.status, 200, "{}", response.body);
    }
    assert_eq!(alerts(&bus), ["R60#2026-11-22T09:11"]);
    // at 11:15 the first 30 and 25 have left the window (15 left): the next 40 crosses again
    clock.set(start + chrono::Duration::minutes(75));
    let response = w.http(usage_report("again", "40", clock.now())).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        alerts(&bus),
        ["R60#2026-11-22T09:11", "R60#2026-11-22T10:16"]
    );
}

/// A record dated before the one that crossed (a buffered sender, a concurrent request) moves
/// where the run above the tier began; it is still the crossing that alerted, not a second one.
#[tokio::test]
async fn a_record_arriving_out_of_order_does_not_alert_a_rolling_crossing_twice() {
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let clock = Arc::new(FixedClock::new(start));
    let mut agents = budget(
        "agents",
        SourceSpec::Usage,
        WindowKind::Rolling { minutes: 60 },
    );
    agents.scope = Scope::parse("openai/agents").unwrap();
    agents.windows[0].limit = 50.into();
    agents.windows[0].tiers[0].threshold = Threshold::Percent(100.into());
    let (w, _store, bus) = webhook_with(vec![agents], clock.clone()).await;
    let alerts = |bus: &MemoryBus| {
        bus.events()
            .iter()
            .filter(|e| e.budget_id == "agents")
            .map(|e| e.period_key.clone())
            .collect::<Vec<_>>()
    };
    clock.set(start + chrono::Duration::minutes(10));
    let crossed = w.http(usage_report("late-1", "55", clock.now())).await;
    assert_eq!(crossed.status, 200, "{}", crossed.body);
    assert_eq!(alerts(&bus), ["R60#2026-11-22T09:11"]);
    // dated 10:08, arriving at 10:12: the window reached 50 at 10:08 now
    clock.set(start + chrono::Duration::minutes(12));
    let earlier = w
        .http(usage_report(
            "late-2",
            "55",
            start + chrono::Duration::minutes(8),
        ))
        .await;
    assert_eq!(earlier.status, 200, "{}", earlier.body);
    assert_eq!(alerts(&bus), ["R60#2026-11-22T09:11"]);
}

/// A paging alert of a rolling window stays open while the tier is reached, though the window it
/// was claimed in ended a minute after the crossing, and recovers once the spend is below.
#[tokio::test]
async fn a_paging_rolling_alert_recovers_when_the_tier_is_no_longer_reached() {
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let clock = Arc::new(FixedClock::new(start));
    let mut agents = budget(
        "agents",
        SourceSpec::Usage,
        WindowKind::Rolling { minutes: 60 },
    );
    agents.scope = Scope::parse("openai/agents").unwrap();
    agents.windows[0].limit = 50.into();
    agents.windows[0].tiers[0].threshold = Threshold::Percent(100.into());
    agents.windows[0].tiers[0].severity = Severity::Critical;
    let (w, _store, bus) = webhook_with(vec![agents], clock.clone()).await;
    let kinds = |bus: &MemoryBus| {
        bus.events()
            .iter()
            .map(|e| format!("{:?}", e.kind))
            .collect::<Vec<_>>()
    };
    let report = |id: &str, minute: i64, cost: &str| {
        clock.set(start + chrono::Duration::minutes(minute));
        usage_report(id, cost, clock.now())
    };
    assert_eq!(w.http(report("burst", 0, "60")).await.status, 200);
    // ten minutes on, still 60 in the window: no recovery
    assert_eq!(w.http(report("trickle", 10, "1")).await.status, 200);
    assert_eq!(kinds(&bus), ["Budget"]);
    // at 11:05 the burst has left the window (1 left): the tier is no longer reached
    assert_eq!(w.http(report("later", 65, "1")).await.status, 200);
    assert_eq!(kinds(&bus), ["Budget", "Recovery"]);
}

/// A dip within a window length of the crossing is not its end: the climb back is the same
/// crossing and does not alert again, so the paging alert must stay open through the dip.
#[tokio::test]
async fn a_paging_rolling_alert_stays_open_through_a_dip_of_the_same_crossing() {
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-22T09:30:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let clock = Arc::new(FixedClock::new(start));
    let mut agents = budget(
        "agents",
        SourceSpec::Usage,
        WindowKind::Rolling { minutes: 60 },
    );
    agents.scope = Scope::parse("openai/agents").unwrap();
    agents.windows[0].limit = 50.into();
    agents.windows[0].tiers[0].threshold = Threshold::Percent(100.into());
    agents.windows[0].tiers[0].severity = Severity::Critical;
    let (w, _store, bus) = webhook_with(vec![agents], clock.clone()).await;
    let kinds = |bus: &MemoryBus| {
        bus.events()
            .iter()
            .map(|e| format!("{:?}", e.kind))
            .collect::<Vec<_>>()
    };
    let report = |id: &str, minute: i64, cost: &str| {
        clock.set(start + chrono::Duration::minutes(minute));
        usage_report(id, cost, clock.now())
    };
    assert_eq!(w.http(report("first", 0, "30")).await.status, 200);
    // 10:00: 55 in the window, the tier pages
    assert_eq!(w.http(report("second", 30, "25")).await.status, 200);
    assert_eq!(kinds(&bus), ["Budget"]);
    // 10:30: the 09:30 spend has left (26): a dip, 30 minutes after the crossing
    assert_eq!(w.http(report("dip", 60, "1")).await.status, 200);
    // 10:40: 56 again, the same crossing: nothing new, and the page is still open
    assert_eq!(w.http(report("climb", 70, "30")).await.status, 200);
    assert_eq!(kinds(&bus), ["Budget"]);
}

/// A source that cannot evaluate any window (an unreadable stored figure, say).
struct Unreadable;

#[async_trait]
impl SpendSource for Unreadable {
    fn kind(&self) -> &'static str {
        "usage"
    }

    async fn spend(
        &self,
        request: &SpendRequest<'_>,
    ) -> Result<BTreeMap<String, BudgetSpend>, SourceError> {
        Ok(request
            .budgets
            .iter()
            .map(|b| {
                let windows = b
                    .windows
                    .iter()
                    .map(|w| (w.kind, Err(WindowError::Unevaluable("unreadable".into()))))
                    .collect();
                (b.id.clone(), windows)
            })
            .collect())
    }
}

/// A rolling window that cannot be evaluated raises one operator alert per UTC hour, not one a
/// minute as its window moves.
#[tokio::test]
async fn an_unevaluable_rolling_window_is_alerted_once_an_hour() {
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
        .unwrap()
        .with_timezone(&Utc);
    let clock = Arc::new(FixedClock::new(start));
    let agents = budget(
        "agents",
        SourceSpec::Usage,
        WindowKind::Rolling { minutes: 60 },
    );
    let store: Arc<dyn StateStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let bus = Arc::new(MemoryBus::default());
    let checker = Checker {
        store,
        bus: bus.clone(),
        sources: vec![Arc::new(Unreadable)],
        key_usage: Vec::new(),
        clock: clock.clone(),
        claim_lease: DEFAULT_CLAIM_LEASE,
        provider_caps: Vec::new(),
        pending_age: None,
    };
    let policy = PolicySet {
        budgets: vec![agents],
        ..PolicySet::default()
    };
    let options = CheckOptions {
        only: vec!["agents".into()],
        actor: "test".into(),
        ..CheckOptions::default()
    };
    for minute in [0, 1, 2, 30, 59, 60] {
        clock.set(start + chrono::Duration::minutes(minute));
        checker.check_only(&policy, &options).await.unwrap();
    }
    let unevaluable: Vec<String> = bus
        .events()
        .iter()
        .filter(|e| e.kind == AlertKind::Unevaluable)
        .map(|e| e.period_key.clone())
        .collect();
    assert_eq!(unevaluable, ["H#2026-11-22T10", "H#2026-11-22T11"]);
}
