//! Google stand-ins on one local server, keeping state as Google does: the OAuth token endpoint
//! (the signed assertion is checked with PyJWT against the service account's public key, an
//! independent implementation), Cloud Billing (`projects.getBillingInfo` / `updateBillingInfo`)
//! and IAM service-account keys (list, get, disable, enable). Every API call must carry a token
//! the endpoint issued.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};

use crate::standin::{Received, Reply, StandIn};
use crate::webhook::python;

pub const CLIENT_EMAIL: &str = "spendguard@ops-project-1.iam.gserviceaccount.com";

#[derive(Default)]
pub struct GoogleState {
    /// project -> billing account name ("" when unlinked)
    pub billing: Mutex<BTreeMap<String, String>>,
    /// key name (`projects/<p>/serviceAccounts/<e>/keys/<id>`) -> disabled
    pub keys: Mutex<BTreeMap<String, bool>>,
    pub tokens: Mutex<Vec<String>>,
    /// Assertions the token endpoint refused, with why.
    pub refused: Mutex<Vec<String>>,
}

impl GoogleState {
    pub fn billing_of(&self, project: &str) -> String {
        self.billing.lock().unwrap()[project].clone()
    }

    pub fn disabled(&self, key: &str) -> bool {
        self.keys.lock().unwrap()[key]
    }
}

pub struct Google {
    pub state: Arc<GoogleState>,
    pub url: String,
    /// The service-account key file (JSON) key-guard is given.
    pub key_file: String,
    _server: StandIn,
}

fn error(code: u16, status: &str, message: &str) -> Reply {
    Reply::json(
        code,
        json!({"error": {"code": code, "status": status, "message": message}}),
    )
}

fn billing_info(project: &str, account: &str) -> Value {
    json!({
        "name": format!("projects/{project}/billingInfo"),
        "projectId": project,
        "billingAccountName": account,
        "billingEnabled": !account.is_empty(),
    })
}

fn respond(state: &GoogleState, r: &Received, public_pem: &str, url: &str) -> Reply {
    if r.path == "/token" {
        let form: BTreeMap<String, String> = url::form_urlencoded::parse(r.body.as_bytes())
            .into_owned()
            .collect();
        let refuse = |why: String| {
            state.refused.lock().unwrap().push(why.clone());
            Reply::json(
                400,
                json!({"error": "invalid_grant", "error_description": why}),
            )
        };
        if form.get("grant_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
        {
            return refuse("unsupported grant_type".into());
        }
        let verdict = python(json!({
            "op": "jwt-verify",
            "token": form.get("assertion").cloned().unwrap_or_default(),
            "public_pem": public_pem,
            "audience": format!("{url}/token"),
        }));
        if verdict["valid"] != json!(true) {
            return refuse(format!("Invalid JWT Signature: {}", verdict["error"]));
        }
        let claims = &verdict["claims"];
        if claims["iss"] != json!(CLIENT_EMAIL)
            || !claims["scope"]
                .as_str()
                .unwrap_or_default()
                .contains("cloud-platform")
        {
            return refuse(format!("unexpected issuer or scope: {claims}"));
        }
        let mut tokens = state.tokens.lock().unwrap();
        let token = format!("ya29.standin-{}", tokens.len() + 1);
        tokens.push(token.clone());
        return Reply::json(
            200,
            json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"}),
        );
    }
    let bearer = r
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "));
    if !bearer.is_some_and(|t| state.tokens.lock().unwrap().iter().any(|i| i == t)) {
        return error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        );
    }
    let Some(path) = r.path.strip_prefix("/v1/") else {
        return error(404, "NOT_FOUND", "no such method");
    };
    // Cloud Billing
    if let Some(project) = path
        .strip_prefix("projects/")
        .and_then(|p| p.strip_suffix("/billingInfo"))
    {
        let mut billing = state.billing.lock().unwrap();
        let Some(account) = billing.get(project).cloned() else {
            return error(
                403,
                "PERMISSION_DENIED",
                "The caller does not have permission",
            );
        };
        return match r.method.as_str() {
            "GET" => Reply::json(200, billing_info(project, &account)),
            "PUT" => {
                let body: Value = serde_json::from_str(&r.body).unwrap_or_default();
                let Some(new) = body["billingAccountName"].as_str() else {
                    return error(400, "INVALID_ARGUMENT", "billingAccountName is required");
                };
                billing.insert(project.to_string(), new.to_string());
                Reply::json(200, billing_info(project, new))
            }
            _ => error(405, "METHOD_NOT_ALLOWED", "method not allowed"),
        };
    }
    // IAM service-account keys
    let mut keys = state.keys.lock().unwrap();
    if let Some(prefix) = path.strip_suffix("/keys") {
        if r.query != "keyTypes=USER_MANAGED" {
            return error(400, "INVALID_ARGUMENT", "expected keyTypes=USER_MANAGED");
        }
        let listed: Vec<Value> = keys
            .iter()
            .filter(|(name, _)| name.starts_with(&format!("{prefix}/keys/")))
            .map(|(name, disabled)| json!({"name": name, "disabled": disabled, "keyType": "USER_MANAGED"}))
            .collect();
        return Reply::json(200, json!({"keys": listed}));
    }
    let (name, verb) = match path.rsplit_once(':') {
        Some((n, v)) if r.method == "POST" => (n, Some(v)),
        _ => (path, None),
    };
    let Some(disabled) = keys.get(name).copied() else {
        return error(
            404,
            "NOT_FOUND",
            &format!("Service account key {name} does not exist."),
        );
    };
    match verb {
        None => Reply::json(
            200,
            json!({"name": name, "disabled": disabled, "keyType": "USER_MANAGED"}),
        ),
        Some("disable") => {
            keys.insert(name.to_string(), true);
            Reply::json(200, json!({}))
        }
        Some("enable") => {
            keys.insert(name.to_string(), false);
            Reply::json(200, json!({}))
        }
        Some(other) => error(400, "INVALID_ARGUMENT", &format!("unknown verb {other}")),
    }
}

impl Google {
    pub async fn start() -> Google {
        let key = python(json!({"op": "rsa-key", "kid": "sa-key-1"}));
        let public_pem = key["public_pem"].as_str().unwrap().to_string();
        crate::logs::secret_used(key["private_pem"].as_str().unwrap());
        let state = Arc::new(GoogleState::default());
        let own_url: Arc<OnceLock<String>> = Arc::default();
        let (s, u) = (state.clone(), own_url.clone());
        let server = StandIn::start(move |r, _| {
            respond(
                &s,
                r,
                &public_pem,
                u.get().map(String::as_str).unwrap_or(""),
            )
        })
        .await;
        own_url.set(server.url.clone()).unwrap();
        let key_file = json!({
            "type": "service_account",
            "project_id": "ops-project-1",
            "private_key_id": "sa-key-1",
            "private_key": key["private_pem"],
            "client_email": CLIENT_EMAIL,
            "token_uri": format!("{}/token", server.url),
        })
        .to_string();
        Google {
            state,
            url: server.url.clone(),
            key_file,
            _server: server,
        }
    }

    pub fn project(&self, project: &str, billing_account: &str) {
        self.state
            .billing
            .lock()
            .unwrap()
            .insert(project.into(), billing_account.into());
    }

    /// A user-managed key of `account` in `project`; returns its name.
    pub fn key(&self, project: &str, account: &str, id: &str, disabled: bool) -> String {
        let name = format!("projects/{project}/serviceAccounts/{account}/keys/{id}");
        self.state
            .keys
            .lock()
            .unwrap()
            .insert(name.clone(), disabled);
        name
    }
}
