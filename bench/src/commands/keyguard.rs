//! Emergency latency: from an emergency reaching key-guard to the kill switch engaged, to
//! every key under the scope disabled at its provider, and to an OpenAI project's hard spend
//! limit written (its previous limit recorded first). Embedded store; the admin APIs are
//! loopback stand-ins that answer at once, so the figures are spendguard's own overhead (add
//! the provider's latency, typically 100-300 ms per call, made concurrently per key).
//!
//!     cargo run --release -p spendguard-bench -- keyguard

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::Request;
use spendguard_app::flows::guard::KeyGuard;
use spendguard_app::ports::clock::SystemClock;
use spendguard_app::ports::store::StateStore;
use spendguard_domain::budgets_file::parse_budgets;
use spendguard_domain::keys::{KeySpec, ProviderKind};
use spendguard_domain::scope::Scope;
use spendguard_domain::secret::Secret;
use spendguard_domain::settings::PolicySet;
use spendguard_http::keys::anthropic::AnthropicAdmin;
use spendguard_http::keys::openai::OpenAiSpendLimits;
use spendguard_local::sqlite::SqliteStore;
use spendguard_tests::admin_apis::{OPENAI_ADMIN_KEY, ProviderState, openai_standin};

const KEYS_PER_SCOPE: usize = 10;
const ROUNDS: usize = 30;

async fn admin_standin() -> String {
    let keys: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let app = Router::new().fallback(move |request: Request<Body>| {
        let keys = keys.clone();
        async move {
            let (parts, body) = request.into_parts();
            let id = parts
                .uri
                .path()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string();
            let body = to_bytes(body, 1 << 16).await.unwrap_or_default();
            let mut keys = keys.lock().unwrap();
            if parts.method == "POST" {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                keys.insert(
                    id.clone(),
                    v["status"].as_str().unwrap_or("active").to_string(),
                );
            }
            let status = keys.get(&id).cloned().unwrap_or_else(|| "active".into());
            axum::Json(serde_json::json!({"id": id, "status": status}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub async fn run(_args: &[String]) {
    let url = admin_standin().await;
    let store: Arc<dyn StateStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let keys: Vec<KeySpec> = (0..ROUNDS * 2)
        .flat_map(|round| {
            (0..KEYS_PER_SCOPE).map(move |k| KeySpec {
                id: format!("r{round}-k{k}"),
                provider: ProviderKind::Anthropic,
                scope: Scope::parse(&format!("anthropic/round-{round}/key-{k}")).unwrap(),
                secret_arn: None,
                key_id: Some(format!("apikey_{round}_{k}")),
                project_id: None,
                user: None,
                rotation: None,
                allow_delete: false,
            })
        })
        .collect();
    store
        .put_policy(&PolicySet {
            keys,
            ..PolicySet::default()
        })
        .await
        .unwrap();
    let guard = KeyGuard::new(
        store,
        vec![Arc::new(AnthropicAdmin {
            http: reqwest::Client::new(),
            base_url: url,
            admin_key: Secret::new("bench"),
        })],
        None,
        Arc::new(SystemClock),
        Vec::new(),
    );
    let (mut engaged, mut all) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // engaging alone (what applications reading the switch see) ...
        let scope = Scope::parse(&format!("anthropic/round-{round}")).unwrap();
        let start = Instant::now();
        guard
            .engage(&scope, "bench", "bench", &format!("i{round}"))
            .await
            .unwrap();
        engaged.push(start.elapsed());
        // ... and the whole emergency on a fresh scope: switch, then every key
        let scope = Scope::parse(&format!("anthropic/round-{}", round + ROUNDS)).unwrap();
        let start = Instant::now();
        let report = guard
            .disable(&scope, "bench", "bench", &format!("j{round}"))
            .await
            .unwrap();
        all.push(start.elapsed());
        assert_eq!(report.keys.len(), KEYS_PER_SCOPE);
    }
    println!(
        "key-guard emergency latency (median of {ROUNDS}, embedded store, loopback admin API)"
    );
    println!(
        "{:<52} {:>10.2} ms",
        "event -> kill switch engaged",
        median(engaged).as_secs_f64() * 1e3
    );
    println!(
        "{:<52} {:>10.2} ms",
        format!("event -> all {KEYS_PER_SCOPE} keys disabled (switch first)"),
        median(all).as_secs_f64() * 1e3
    );
    println!(
        "{:<52} {:>10.2} ms",
        "event -> OpenAI project spend limit set (switch first)",
        median(openai_limits().await).as_secs_f64() * 1e3
    );
}

/// One OpenAI project per round, each read by a budget on its own scope: the time from the
/// emergency to the project's limit written at the (strict) OpenAI stand-in.
async fn openai_limits() -> Vec<Duration> {
    let openai = Arc::new(ProviderState::default());
    let standin = openai_standin(openai.clone()).await;
    let budgets: String = std::iter::once("version = 1\n".to_string())
        .chain((0..ROUNDS)
        .map(|r| {
            openai.set_spend_limit_by_hand(&format!("project:proj_{r}"), Some(100_000));
            format!(
                "[[budget]]\nid = \"p{r}\"\nscope = \"openai/p{r}\"\n\
                 source = {{ kind = \"openai\", project_id = \"proj_{r}\" }}\n\
                 [[budget.window]]\nperiod = \"monthly\"\nlimit = \"1000\"\n\
                 tiers = [{{ name = \"emergency\", percent = 100, actions = [\"disable_keys\"] }}]\n"
            )
        }))
        .collect();
    let store: Arc<dyn StateStore> = Arc::new(SqliteStore::in_memory().unwrap());
    store
        .put_policy(&parse_budgets("bench.toml", &budgets).unwrap())
        .await
        .unwrap();
    let guard = KeyGuard::new(
        store,
        Vec::new(),
        None,
        Arc::new(SystemClock),
        vec![Arc::new(OpenAiSpendLimits {
            http: reqwest::Client::new(),
            base_url: standin.url.clone(),
            admin_key: Secret::new(OPENAI_ADMIN_KEY),
        })],
    );
    let mut times = Vec::new();
    for round in 0..ROUNDS {
        let scope = Scope::parse(&format!("openai/p{round}")).unwrap();
        let start = Instant::now();
        guard
            .disable(&scope, "bench", "bench", &format!("o{round}"))
            .await
            .unwrap();
        times.push(start.elapsed());
        assert_eq!(
            openai.spend_limit(&format!("project:proj_{round}")),
            Some(1)
        );
    }
    times
}
