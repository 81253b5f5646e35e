//! key-guard test world: the production wiring (`app::handler`) against moto (DynamoDB,
//! Secrets Manager, IAM, STS) and local stand-ins for the Anthropic and OpenAI admin APIs that
//! keep each key's state like the real services do.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use key_guard::app;
use key_guard::config::Config;
use key_guard::handler::Handler;
use serde_json::{Value, json};
use spendguard_aws::dynamo::DynamoStore;
use spendguard_domain::keys::KeySpec;
use spendguard_domain::settings::PolicySet;

use crate::aws;
use crate::standin::{Reply, StandIn};
use spendguard_app::ports::store::PolicyStore;

/// A provider's keys as the provider sees them.
#[derive(Default)]
pub struct ProviderState {
    /// key id -> active
    pub keys: Mutex<BTreeMap<String, bool>>,
    /// API key values that authenticate (for rotation tests)
    pub valid: Mutex<BTreeSet<String>>,
    /// The next this many admin writes fail with a 500.
    pub fail_next: AtomicUsize,
    /// Admin writes seen, as (key id, new state).
    pub writes: Mutex<Vec<(String, String)>>,
    /// While set, an admin write is carried out but its answer waits for the gate.
    pub gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// Admin writes whose answer was held at the gate.
    pub held: AtomicUsize,
}

impl ProviderState {
    pub fn add(&self, id: &str, active: bool) {
        self.keys.lock().unwrap().insert(id.into(), active);
    }

    pub fn active(&self, id: &str) -> Option<bool> {
        self.keys.lock().unwrap().get(id).copied()
    }

    pub fn writes_for(&self, id: &str) -> Vec<String> {
        self.writes
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == id)
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// From now on, admin writes are carried out but not answered until [`Self::release`].
    pub fn hold_writes(&self) {
        *self.gate.lock().unwrap() = Some(Arc::new(tokio::sync::Semaphore::new(0)));
    }

    /// Answers every held write, and the ones after.
    pub fn release(&self) {
        if let Some(gate) = self.gate.lock().unwrap().take() {
            gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
        }
    }

    /// Waits (up to ten seconds) until `n` writes are held at the gate.
    pub async fn until_held(&self, n: usize) {
        for _ in 0..200 {
            if self.held.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no admin write reached the gate");
    }

    fn gated(&self, reply: Reply) -> Reply {
        match self.gate.lock().unwrap().clone() {
            Some(gate) => {
                self.held.fetch_add(1, Ordering::SeqCst);
                Reply {
                    hold: Some(gate),
                    ..reply
                }
            }
            None => reply,
        }
    }

    fn fail(&self) -> bool {
        self.fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Anthropic admin: GET/POST /v1/organizations/api_keys/{id}, GET /v1/models.
/// Anthropic's error body: `{"type": "error", "error": {"type": ..., "message": ...}}`.
fn anthropic_error(status: u16, kind: &str, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

/// Anthropic admin: GET/POST /v1/organizations/api_keys/{id}, GET /v1/models. Refuses what
/// Anthropic refuses: no or another `anthropic-version` (400), a missing or wrong key (401), an
/// unknown key (404), a status other than `active` / `inactive` (400), another method (405).
pub async fn anthropic_standin(state: Arc<ProviderState>) -> StandIn {
    StandIn::start(move |r, _| {
        if r.header("anthropic-version") != Some("2023-06-01") {
            return anthropic_error(400, "invalid_request_error", "anthropic-version: header is required");
        }
        if r.path == "/v1/models" {
            let ok = r.header("x-api-key").is_some_and(|k| state.valid.lock().unwrap().contains(k));
            return if ok { Reply::json(200, json!({"data": []})) } else { anthropic_error(401, "authentication_error", "invalid x-api-key") };
        }
        let Some(id) = r.path.strip_prefix("/v1/organizations/api_keys/") else {
            return anthropic_error(404, "not_found_error", "Not found");
        };
        if r.header("x-api-key") != Some("sk-ant-admin-test") {
            return anthropic_error(401, "authentication_error", "invalid x-api-key: an admin key is required");
        }
        match r.method.as_str() {
            "GET" => match state.active(id) {
                Some(active) => Reply::json(200, json!({"id": id, "type": "api_key", "status": if active { "active" } else { "inactive" }})),
                None => anthropic_error(404, "not_found_error", "no such api key"),
            },
            "POST" => {
                if state.active(id).is_none() {
                    return anthropic_error(404, "not_found_error", "no such api key");
                }
                let body: Value = serde_json::from_str(&r.body).unwrap_or_default();
                let status = body["status"].as_str().unwrap_or_default().to_string();
                if status != "active" && status != "inactive" {
                    return anthropic_error(400, "invalid_request_error", "status: must be active or inactive");
                }
                if state.fail() {
                    return anthropic_error(500, "api_error", "overloaded");
                }
                state.writes.lock().unwrap().push((id.to_string(), status.clone()));
                state.keys.lock().unwrap().insert(id.to_string(), status == "active");
                state.gated(Reply::json(200, json!({"id": id, "type": "api_key", "status": status})))
            }
            _ => anthropic_error(405, "invalid_request_error", "method not allowed"),
        }
    })
    .await
}

/// OpenAI admin: GET/DELETE /v1/organization/projects/{p}/api_keys/{id}, GET /v1/models.
pub async fn openai_standin(state: Arc<ProviderState>) -> StandIn {
    StandIn::start(move |r, _| {
        if r.path == "/v1/models" {
            let key = r.header("authorization").and_then(|a| a.strip_prefix("Bearer ")).unwrap_or_default();
            let ok = state.valid.lock().unwrap().contains(key);
            return if ok { Reply::json(200, json!({"data": []})) } else { Reply::json(401, json!({"error": "invalid key"})) };
        }
        let id = r.path.rsplit('/').next().unwrap_or_default().to_string();
        match r.method.as_str() {
            "GET" => match state.active(&id) {
                Some(_) => Reply::json(200, json!({"object": "organization.project.api_key", "id": id})),
                None => Reply::json(404, json!({"error": "no such key"})),
            },
            "DELETE" => {
                state.writes.lock().unwrap().push((id.clone(), "deleted".into()));
                state.keys.lock().unwrap().remove(&id);
                Reply::json(200, json!({"object": "organization.project.api_key.deleted", "id": id, "deleted": true}))
            }
            _ => Reply::json(405, json!({})),
        }
    })
    .await
}

pub struct KeyGuardWorld {
    pub sdk: aws_config::SdkConfig,
    pub store: DynamoStore,
    pub handler: Handler,
    pub anthropic: Arc<ProviderState>,
    pub openai: Arc<ProviderState>,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub iam: aws_sdk_iam::Client,
    /// The configuration `handler` was built from (to build another, e.g. through a proxy).
    pub config: Config,
    _standins: (StandIn, StandIn),
}

impl KeyGuardWorld {
    /// `keys` are registered after the secrets they name exist; `make` builds them from the
    /// world (so specs can point at secrets and IAM keys it created).
    pub async fn new(policy: PolicySet) -> KeyGuardWorld {
        let sdk = aws::sdk().await;
        let (store, table) = aws::new_store(&sdk).await;
        store.put_policy(&policy).await.unwrap();
        let anthropic = Arc::new(ProviderState::default());
        let openai = Arc::new(ProviderState::default());
        let a = anthropic_standin(anthropic.clone()).await;
        let o = openai_standin(openai.clone()).await;
        let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
        let config = Config {
            table,
            anthropic_admin_key_arn: Some(
                aws::secret(&sdk, "anthropic-admin", "sk-ant-admin-test").await,
            ),
            anthropic_api_url: a.url.clone(),
            openai_admin_key_arn: Some(
                aws::secret(&sdk, "openai-admin", "sk-admin-openai-test").await,
            ),
            openai_api_url: o.url.clone(),
            gcp_credential_arn: None,
            gcp_token_url: None,
            gcp_billing_api_url: spendguard_http::gcp::BILLING_API.into(),
            gcp_iam_api_url: spendguard_http::gcp::IAM_API.into(),
            own_function_name: None,
        };
        let handler = app::handler(&config, &sdk).await.expect("key-guard starts");
        KeyGuardWorld {
            iam: aws_sdk_iam::Client::new(&sdk),
            sdk,
            store,
            handler,
            anthropic,
            openai,
            secrets,
            config,
            _standins: (a, o),
        }
    }

    /// key-guard as deployed, on `sdk` (a fault proxy, say) and `clock` (a test's own).
    pub async fn handler_at(
        &self,
        sdk: &aws_config::SdkConfig,
        clock: Arc<dyn spendguard_app::ports::clock::Clock>,
    ) -> Handler {
        let backends = spendguard_app::backends::Backends {
            clock,
            ..spendguard_aws::backends::deployed(sdk, &self.config.table)
        };
        app::handler_with(&self.config, sdk, backends, app::AwsKeys::Managed)
            .await
            .expect("key-guard starts")
    }

    /// A secret holding `value`; returns its ARN.
    pub async fn secret(&self, name: &str, value: &str) -> String {
        aws::secret(&self.sdk, name, value).await
    }

    /// Registers keys (as `spendguard budgets apply` would).
    pub async fn register(&self, keys: Vec<KeySpec>) {
        let mut policy = self.store.load_policy().await.unwrap();
        policy.keys = keys;
        self.store.put_policy(&policy).await.unwrap();
    }

    /// The value and stages of every version of a secret.
    pub async fn versions(&self, arn: &str) -> BTreeMap<String, Vec<String>> {
        let d = self
            .secrets
            .describe_secret()
            .secret_id(arn)
            .send()
            .await
            .unwrap();
        d.version_ids_to_stages()
            .map(|m| {
                m.iter()
                    .filter(|(_, s)| !s.is_empty())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn current_value(&self, arn: &str) -> String {
        // by stage: moto's stage-less read does not follow UpdateSecretVersionStage (AWS's does)
        self.secrets
            .get_secret_value()
            .secret_id(arn)
            .version_stage("AWSCURRENT")
            .send()
            .await
            .unwrap()
            .secret_string()
            .unwrap()
            .to_string()
    }

    /// An IAM user with one access key; returns (access key id, secret access key).
    pub async fn iam_key(&self, user: &str) -> (String, String) {
        self.iam.create_user().user_name(user).send().await.unwrap();
        let key = self
            .iam
            .create_access_key()
            .user_name(user)
            .send()
            .await
            .unwrap()
            .access_key
            .unwrap();
        (key.access_key_id, key.secret_access_key)
    }

    pub async fn iam_active(&self, user: &str, id: &str) -> bool {
        let keys = self
            .iam
            .list_access_keys()
            .user_name(user)
            .send()
            .await
            .unwrap();
        keys.access_key_metadata().iter().any(|k| {
            k.access_key_id() == Some(id)
                && k.status() == Some(&aws_sdk_iam::types::StatusType::Active)
        })
    }
}
