//! `spendguard serve` as an operator runs it: the real binary on a free port, usage signed by
//! the PyPI `standardwebhooks` signer over HTTP, the kill switch engaged within the crossing
//! request, one Slack message and one disable at the stand-ins, `restore` through the running
//! serve and its ramp; `kill -9` during a stream of ingests losing and doubling nothing; one
//! serve per store; a secrets file others may read refused; SIGTERM draining a request.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use chrono::{Datelike, Utc};
use serde_json::{Value, json};
use spendguard_app::ports::store::SpendStore;
use spendguard_domain::period::{YearMonth, Zone};
use spendguard_domain::scope::Scope;
use spendguard_domain::standard_webhooks::WebhookSecret;
use spendguard_domain::usage::{CounterKey, Metric};
use spendguard_local::sqlite::SqliteStore;
use spendguard_tests::admin_apis::{ANTHROPIC_ADMIN_KEY, ProviderState, anthropic_standin};
use spendguard_tests::logs;
use spendguard_tests::standin::{Reply, StandIn};
use spendguard_tests::webhook::python;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// What serve logs, at the level the suite scans for secrets.
const SERVE_LOG: &str = "debug,spendguard=trace,spendguard_app=trace,spendguard_local=trace,budget_webhook=trace,key_guard=trace,alert_fanout=trace,budget_check=trace,hyper=info,h2=info";

/// A running `spendguard serve`: its address, and its log lines as they come.
struct Serve {
    child: Child,
    address: String,
    /// Where `/health` and `/metrics` are served (`--metrics-listen`).
    ops_address: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    /// Starts serve on a free port and waits for the line that says where it listens.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_spendguard"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .env("SPENDGUARD_LOG", SERVE_LOG)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start spendguard serve");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let (found, listening) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let kept = lines.clone();
        let pid = child.id();
        std::thread::spawn(move || {
            // the suite's log scan reads serve's lines too
            let mut file = std::env::var_os("SPENDGUARD_TEST_LOGS")
                .filter(|v| !v.is_empty())
                .map(|d| {
                    std::fs::File::create(PathBuf::from(d).join(format!("serve-{pid}.log")))
                        .expect("create serve's log file")
                });
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = file.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && let (Some(a), Some(m)) =
                        (v["listening"].as_str(), v["metrics_listening"].as_str())
                {
                    let _ = found.send((a.to_string(), m.to_string()));
                }
                kept.lock().unwrap().push(line);
            }
        });
        let (address, ops_address) = listening
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("serve did not say where it listens: {:?}", lines));
        Serve {
            child,
            address,
            ops_address,
            lines,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn ops_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ops_address)
    }

    fn logged(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    /// Sends SIGTERM and returns the exit code.
    fn terminate(mut self) -> Option<i32> {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        self.child.wait().unwrap().code()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spendguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run spendguard")
}

fn private_file(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn record(id: &str, cost: &str) -> Value {
    json!({
        "id": id,
        "scope": "anthropic/research/key-r1",
        "provider": "anthropic",
        "model": "claude-sonnet-4",
        "requests": 1,
        "cost": {"amount": cost, "currency": "USD"},
        "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// A `/usage` request: its webhook id, body, timestamp and signature.
struct Signed {
    id: String,
    body: String,
    timestamp: i64,
    signature: String,
}

/// Signs with the PyPI `standardwebhooks` package (an independent implementation).
fn signed_by_python(secret: &str, id: &str, records: &[Value]) -> Signed {
    let body = json!({ "records": records }).to_string();
    let timestamp = Utc::now().timestamp();
    let signature = python(json!({"op": "webhook-sign", "secret": secret, "id": id, "timestamp": timestamp, "body": body}))["signature"]
        .as_str()
        .unwrap()
        .to_string();
    Signed {
        id: id.into(),
        body,
        timestamp,
        signature,
    }
}

async fn post_usage(
    http: &reqwest::Client,
    serve_url: &str,
    s: &Signed,
) -> reqwest::Result<(u16, Value)> {
    let response = http
        .post(format!("{serve_url}/usage"))
        .header("content-type", "application/json")
        .header("webhook-id", &s.id)
        .header("webhook-timestamp", s.timestamp.to_string())
        .header("webhook-signature", &s.signature)
        .body(s.body.clone())
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

async fn status(http: &reqwest::Client, serve: &Serve, token: &str) -> Value {
    http.get(serve.url("/status?scope=anthropic/research/key-r1"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn read_secret(path: &Path) -> String {
    let value = std::fs::read_to_string(path).unwrap().trim().to_string();
    logs::secret_used(&value);
    value
}

/// Slack's incoming webhook as far as spendguard uses it: POST of a JSON body with `text`
/// (400 `invalid_payload` otherwise, 404 `no_service` on another path).
async fn slack_standin() -> StandIn {
    StandIn::start(|r, _| {
        if r.method != "POST" {
            return Reply::json(405, json!("invalid_method"));
        }
        if r.path != "/services/T0/B0/hook" {
            return Reply {
                status: 404,
                body: "no_service".into(),
                ..Default::default()
            };
        }
        let payload: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        if !r
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
            || !payload["text"].is_string()
        {
            return Reply {
                status: 400,
                body: "invalid_payload".into(),
                ..Default::default()
            };
        }
        Reply {
            status: 200,
            body: "ok".into(),
            ..Default::default()
        }
    })
    .await
}

const BUDGETS: &str = r#"
version = 1
[defaults]
currency = "USD"
timezone = "UTC"

[channels.ops-slack]
kind = "slack"
secret = "local:ops-slack"

[routing]
emergency = ["ops-slack"]

[restore]
steps = ["0.25", "0.5", "1"]
step_minutes = 5

[[budget]]
id = "anthropic-research"
scope = "anthropic/research"
[[budget.window]]
period = "monthly"
limit = "100"
tiers = [{ name = "emergency", percent = 100, actions = ["notify", "disable_keys"] }]

[[key]]
id = "anthropic-research-r1"
provider = "anthropic"
scope = "anthropic/research/key-r1"
key_id = "apikey_r1"
"#;

/// What the tests of [`BUDGETS`] start serve with, in a temporary directory: the budgets file,
/// a private secrets file (the Slack channel's URL, Anthropic's admin key) and a clock offset
/// (0 until a test moves it).
struct Setup {
    dir: tempfile::TempDir,
    store: PathBuf,
    anthropic_url: String,
}

impl Setup {
    fn new(slack_url: &str, anthropic_url: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("budgets.toml"), BUDGETS).unwrap();
        logs::secret_used(slack_url);
        logs::secret_used(ANTHROPIC_ADMIN_KEY);
        private_file(
            &dir.path().join("secrets.toml"),
            &format!("ops-slack = \"{slack_url}\"\nanthropic-admin = \"{ANTHROPIC_ADMIN_KEY}\"\n"),
            0o600,
        );
        std::fs::write(dir.path().join("clock-offset"), "0").unwrap();
        Setup {
            store: dir.path().join("state.db"),
            dir,
            anthropic_url: anthropic_url.to_string(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts serve, its scheduled check every `check_every`.
    fn start(&self, check_every: &str) -> Serve {
        let path = |name| self.path(name).to_str().unwrap().to_string();
        Serve::start(
            &[
                "--budgets",
                &path("budgets.toml"),
                "--store",
                &path("state.db"),
                "--secrets",
                &path("secrets.toml"),
                "--check-every",
                check_every,
                "--clock-offset-file",
                &path("clock-offset"),
            ],
            &[
                (
                    "SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN",
                    "local:anthropic-admin",
                ),
                ("SPENDGUARD_ANTHROPIC_API_URL", &self.anthropic_url),
            ],
        )
    }

    /// Moves serve's clock `seconds` ahead of the system's.
    fn set_clock_offset(&self, seconds: i64) {
        std::fs::write(self.path("clock-offset"), seconds.to_string()).unwrap();
    }

    fn usage_secret(&self) -> String {
        read_secret(&self.path("secrets/usage-webhook"))
    }

    fn status_token(&self) -> String {
        read_secret(&self.path("secrets/status-token"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crossing_request_engages_the_switch_and_restore_ramps_it_back() {
    logs::capture();
    let anthropic = Arc::new(ProviderState::default());
    anthropic.add("apikey_r1", true);
    let anthropic_api = anthropic_standin(anthropic.clone()).await;
    let slack = slack_standin().await;
    let setup = Setup::new(
        &format!("{}/services/T0/B0/hook", slack.url),
        &anthropic_api.url,
    );
    let store = setup.store.clone();
    let serve = setup.start("1h");
    let usage_secret = setup.usage_secret();
    let token = setup.status_token();
    let http = reqwest::Client::new();

    assert_eq!(status(&http, &serve, &token).await["state"], "open");
    let below = signed_by_python(&usage_secret, "msg_below", &[record("r1", "60")]);
    let (code, body) = post_usage(&http, &serve.url(""), &below).await.unwrap();
    assert_eq!((code, body["accepted"].clone()), (200, json!(1)), "{body}");
    assert_eq!(status(&http, &serve, &token).await["state"], "open");

    // the request that crosses the emergency tier: engaged as soon as it is answered
    // (the Anthropic stand-in holds its answer to the disable until the test lets it go)
    let crossing = signed_by_python(&usage_secret, "msg_crossing", &[record("r2", "50")]);
    anthropic.hold_writes();
    let answered = {
        let (http, url) = (http.clone(), serve.url(""));
        tokio::spawn(async move { post_usage(&http, &url, &crossing).await.unwrap() })
    };
    anthropic.until_held(1).await;
    assert!(
        !answered.is_finished(),
        "the crossing request was answered before key-guard stopped the key"
    );
    anthropic.release();
    let (code, body) = answered.await.unwrap();
    assert_eq!(
        (code, body["alerts_published"].clone()),
        (200, json!(1)),
        "{body}"
    );
    let engaged = status(&http, &serve, &token).await;
    assert_eq!(engaged["state"], "engaged", "{engaged}");
    assert_eq!(engaged["limit_factor"], "0", "{engaged}");
    assert_eq!(anthropic.active("apikey_r1"), Some(false));
    assert_eq!(anthropic.writes_for("apikey_r1").len(), 1);

    // a forged signature changes nothing
    let mut forged = signed_by_python(&usage_secret, "msg_forged", &[record("r3", "500")]);
    forged.body = json!({"records": [record("r3", "5000")]}).to_string();
    let (code, _) = post_usage(&http, &serve.url(""), &forged).await.unwrap();
    assert_eq!(code, 401);

    // restore through the running serve: the operator's command has no admin key at all
    let restore = spendguard(&[
        "restore",
        "--scope",
        "anthropic/research",
        "--yes",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(restore.status.success(), "{}", text(&restore.stderr));
    assert!(
        text(&restore.stdout).contains("limit factor 0.25"),
        "{}",
        text(&restore.stdout)
    );
    assert!(serve.logged("operator request"));
    assert_eq!(anthropic.active("apikey_r1"), Some(true));
    let ramping = status(&http, &serve, &token).await;
    assert_eq!(
        (ramping["state"].as_str(), ramping["limit_factor"].as_str()),
        (Some("restoring"), Some("0.25")),
        "{ramping}"
    );

    let metrics = http
        .get(serve.ops_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"spendguard_usage_records_total{outcome="accepted"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"spendguard_alerts_published_total{kind="budget",severity="emergency"} 1"#),
        "{metrics}"
    );
    // the Anthropic stand-in has no usage report API: the scheduled check cannot read the
    // key's usage, and /health says so (a guard that is not guarding is not healthy)
    let health = http.get(serve.ops_url("/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 503);
    let health: Value = health.json().await.unwrap();
    assert!(
        health["last_check"]["error"]
            .as_str()
            .unwrap()
            .contains("anthropic key usage"),
        "{health}"
    );

    // once serve stopped, every delivery is done: exactly one Slack message, one disable
    assert_eq!(serve.terminate(), Some(0));
    let messages: Vec<_> = slack
        .received()
        .into_iter()
        .filter(|r| r.accepted())
        .collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].body.contains("anthropic-research"),
        "{}",
        messages[0].body
    );
    assert_eq!(
        anthropic.writes_for("apikey_r1").len(),
        2,
        "one disable, one re-enable"
    );
}

/// Waits until `/status` shows `state` and `factor`: serve's own schedule moves the ramp.
async fn until_status(
    http: &reqwest::Client,
    serve: &Serve,
    token: &str,
    state: &str,
    factor: &str,
) {
    let mut seen = Value::Null;
    for _ in 0..600 {
        seen = status(http, serve, token).await;
        if seen["state"] == state && seen["limit_factor"] == factor {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("serve's schedule did not reach {state} {factor}: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_own_schedule_steps_the_restore_ramp() {
    logs::capture();
    let anthropic = Arc::new(ProviderState::default());
    anthropic.add("apikey_r1", true);
    let anthropic_api = anthropic_standin(anthropic.clone()).await;
    let slack = slack_standin().await;
    let setup = Setup::new(
        &format!("{}/services/T0/B0/hook", slack.url),
        &anthropic_api.url,
    );
    let store = setup.store.clone();
    let serve = setup.start("1s");
    let token = setup.status_token();
    let http = reqwest::Client::new();
    let store_arg = store.to_str().unwrap();
    let kill = spendguard(&[
        "kill",
        "--scope",
        "anthropic/research",
        "--reason",
        "test",
        "--yes",
        "--store",
        store_arg,
    ]);
    assert!(kill.status.success(), "{}", text(&kill.stderr));
    assert_eq!(anthropic.active("apikey_r1"), Some(false));
    let restore = spendguard(&[
        "restore",
        "--scope",
        "anthropic/research",
        "--yes",
        "--store",
        store_arg,
    ]);
    assert!(restore.status.success(), "{}", text(&restore.stderr));
    until_status(&http, &serve, &token, "restoring", "0.25").await;
    // six minutes on: past the first 5-minute step
    setup.set_clock_offset(360);
    until_status(&http, &serve, &token, "restoring", "0.5").await;
    setup.set_clock_offset(720);
    until_status(&http, &serve, &token, "open", "1").await;
    assert_eq!(serve.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_action_fails_visibly_when_serves_admin_socket_is_unreachable() {
    logs::capture();
    let anthropic = Arc::new(ProviderState::default());
    anthropic.add("apikey_r1", true);
    let anthropic_api = anthropic_standin(anthropic.clone()).await;
    let setup = Setup::new(
        "https://hooks.slack.com/services/T0/B0/x",
        &anthropic_api.url,
    );
    let store = setup.store.clone();
    let serve = setup.start("1h");
    // the socket is gone (removed by hand, a tmp cleaner): serve still holds the store
    std::fs::remove_file(setup.path("state.db.sock")).unwrap();
    let kill = spendguard(&[
        "kill",
        "--scope",
        "anthropic/research",
        "--reason",
        "test",
        "--yes",
        "--store",
        store.to_str().unwrap(),
    ]);
    let said = text(&kill.stderr);
    assert!(!kill.status.success(), "{said}");
    assert!(said.contains("admin socket"), "{said}");
    assert!(said.contains("unreachable"), "{said}");
    assert!(
        said.contains(&format!("pid {}", serve.child.id())),
        "{said}"
    );
    assert!(!serve.logged("operator request"));
    assert_eq!(anthropic.active("apikey_r1"), Some(true));
    assert_eq!(serve.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_outbox_row_is_set_aside_and_later_alerts_still_reach_slack() {
    logs::capture();
    let anthropic = Arc::new(ProviderState::default());
    anthropic.add("apikey_r1", true);
    let anthropic_api = anthropic_standin(anthropic.clone()).await;
    let slack = slack_standin().await;
    let setup = Setup::new(
        &format!("{}/services/T0/B0/hook", slack.url),
        &anthropic_api.url,
    );
    let store = setup.store.clone();
    drop(spendguard_local::outbox::Outbox::open(&store).unwrap());
    // written by Python's sqlite3: the CLI's crates reach SQLite only through the local
    // adapter (deny.toml)
    let python =
        std::env::var("SPENDGUARD_PYTHON").expect("SPENDGUARD_PYTHON is set by scripts/test");
    let inserted = Command::new(python)
        .args([
            "-c",
            "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.execute(\"INSERT INTO outbox (subscriber, doc) VALUES ('alert-fanout', '{}')\")\nc.commit()",
            store.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(inserted.success(), "the undecodable row was not written");
    let serve = setup.start("1h");
    let usage_secret = setup.usage_secret();
    let http = reqwest::Client::new();
    let crossing = signed_by_python(&usage_secret, "msg_crossing", &[record("r1", "150")]);
    let (code, body) = post_usage(&http, &serve.url(""), &crossing).await.unwrap();
    assert_eq!(
        (code, body["alerts_published"].clone()),
        (200, json!(1)),
        "{body}"
    );
    let metrics = http
        .get(serve.ops_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"spendguard_outbox_dead_lettered_total{subscriber="alert-fanout"} 1"#),
        "{metrics}"
    );
    assert!(serve.logged("set aside"));
    assert_eq!(serve.terminate(), Some(0));
    let messages = slack
        .received()
        .into_iter()
        .filter(|r| r.accepted())
        .count();
    assert_eq!(messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_key_guard_delivery_shows_on_health_and_the_pending_gauge() {
    logs::capture();
    // Anthropic's documented error shape for a server error, to every request
    let anthropic_api = StandIn::start(|_, _| {
        Reply::json(
            500,
            json!({"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}),
        )
    })
    .await;
    let slack = slack_standin().await;
    let setup = Setup::new(
        &format!("{}/services/T0/B0/hook", slack.url),
        &anthropic_api.url,
    );
    let serve = setup.start("1h");
    let usage_secret = setup.usage_secret();
    let http = reqwest::Client::new();
    let crossing = signed_by_python(&usage_secret, "msg_crossing", &[record("r1", "150")]);
    let (code, _) = post_usage(&http, &serve.url(""), &crossing).await.unwrap();
    assert_eq!(code, 200);
    let health = http.get(serve.ops_url("/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 503);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["outbox"]["key_guard_failing"], true, "{health}");
    let metrics = http
        .get(serve.ops_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"spendguard_outbox_pending{subscriber="key-guard"} 1"#),
        "{metrics}"
    );
    drop(serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_failing_for_an_hour_is_given_up_and_shows_on_health() {
    logs::capture();
    let anthropic = Arc::new(ProviderState::default());
    anthropic.add("apikey_r1", true);
    let anthropic_api = anthropic_standin(anthropic.clone()).await;
    // Slack's answer when it cannot take a message, to every request
    let slack = StandIn::start(|_, _| Reply {
        status: 500,
        body: "internal_error".into(),
        ..Default::default()
    })
    .await;
    let setup = Setup::new(
        &format!("{}/services/T0/B0/hook", slack.url),
        &anthropic_api.url,
    );
    let serve = setup.start("1h");
    let usage_secret = setup.usage_secret();
    let http = reqwest::Client::new();
    let crossing = signed_by_python(&usage_secret, "msg_crossing", &[record("r1", "150")]);
    let (code, _) = post_usage(&http, &serve.url(""), &crossing).await.unwrap();
    assert_eq!(code, 200);
    for _ in 0..600 {
        if serve.logged("alert delivery failed; retried") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(serve.logged("alert delivery failed; retried"));
    // one delivery: the Slack channel's own attempts (it retries a 5xx)
    let per_delivery = slack.received().len();
    assert!(per_delivery >= 1);
    // an hour and a bit later the last attempt (serve's drain on the way out) fails too
    setup.set_clock_offset(3700);
    let lines = serve.lines.clone();
    assert_eq!(serve.terminate(), Some(0));
    assert_eq!(
        slack.received().len(),
        2 * per_delivery,
        "tried again when due"
    );
    let given_up = lines
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("alert delivery given up"))
        .cloned();
    let given_up = given_up.expect("the give-up is logged");
    assert!(
        given_up.contains("gave up after 2 failed deliveries"),
        "{given_up}"
    );

    let serve = setup.start("1h");
    let health = http.get(serve.ops_url("/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 503);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["outbox"]["dead_lettered"], 1, "{health}");
    assert_eq!(health["outbox"]["pending"]["alert-fanout"], 0, "{health}");
    assert_eq!(serve.terminate(), Some(0));
    assert_eq!(
        slack.received().len(),
        2 * per_delivery,
        "a row given up is not delivered again"
    );
    assert_eq!(
        anthropic.active("apikey_r1"),
        Some(false),
        "key-guard's own delivery went"
    );
}

/// Records of the scope the store counted this month.
async fn records_counted(store: &Path) -> u64 {
    let sqlite = SqliteStore::open(store).unwrap();
    let now = Utc::now();
    let key = CounterKey {
        scope: Scope::parse("anthropic/research/key-r1").unwrap(),
        zone: Zone::UTC,
        month: YearMonth {
            year: now.year(),
            month: now.month(),
        },
    };
    let counters = sqlite
        .read_counters(std::slice::from_ref(&key))
        .await
        .unwrap();
    counters
        .get(&key)
        .map(|m| {
            m.days
                .values()
                .filter_map(|t| t.0.get(&Metric::Records))
                .map(|d| rust_decimal::prelude::ToPrimitive::to_u64(d).unwrap())
                .sum()
        })
        .unwrap_or(0)
}

const QUIET_BUDGETS: &str = r#"
version = 1
[[budget]]
id = "anthropic-research"
scope = "anthropic/research"
[[budget.window]]
period = "monthly"
limit = "1000000"
tiers = [{ name = "warning", percent = 90 }]
"#;

/// A temporary directory holding [`QUIET_BUDGETS`] and a store: what serve's own tests start on.
struct Quiet {
    dir: tempfile::TempDir,
    store: PathBuf,
    budgets: PathBuf,
}

impl Quiet {
    fn new() -> Quiet {
        let dir = tempfile::tempdir().unwrap();
        let budgets = dir.path().join("budgets.toml");
        std::fs::write(&budgets, QUIET_BUDGETS).unwrap();
        Quiet {
            store: dir.path().join("state.db"),
            budgets,
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `--budgets` and `--store` for this directory, then `more`.
    fn args<'a>(&'a self, more: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "--budgets",
            self.budgets.to_str().unwrap(),
            "--store",
            self.store.to_str().unwrap(),
        ];
        args.extend_from_slice(more);
        args
    }

    /// Starts serve on this directory with `more` arguments.
    fn start(&self, more: &[&str]) -> Serve {
        Serve::start(&self.args(more), &[])
    }

    /// Runs `spendguard serve` on this directory to its end (for starts that must fail).
    fn run_serve(&self, store: &Path) -> Output {
        spendguard(&[
            "serve",
            "--budgets",
            self.budgets.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_stream_loses_no_acknowledged_record_and_counts_none_twice() {
    logs::capture();
    let quiet = Quiet::new();
    let serve = quiet.start(&["--check-every", "1h"]);
    let secret = read_secret(&quiet.path("secrets/usage-webhook"));
    let signer = WebhookSecret::parse_list(&secret).unwrap()[0].clone();
    const BATCHES: usize = 300;
    const PER_BATCH: usize = 5;
    let batches: Vec<(String, String)> = (0..BATCHES)
        .map(|b| {
            let records: Vec<Value> = (0..PER_BATCH)
                .map(|i| record(&format!("b{b}-r{i}"), "0.01"))
                .collect();
            (
                format!("msg_stream_{b}"),
                json!({ "records": records }).to_string(),
            )
        })
        .collect();
    let sign = move |id: &str, body: &str| {
        let timestamp = Utc::now().timestamp();
        Signed {
            id: id.into(),
            body: body.into(),
            timestamp,
            signature: signer.sign(id, timestamp, body.as_bytes()),
        }
    };

    // a stream on four connections; serve is killed once 40 batches were acknowledged
    let http = reqwest::Client::new();
    let acknowledged = Arc::new(Mutex::new(Vec::<usize>::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = serve.url("");
    let mut senders = Vec::new();
    for _ in 0..4 {
        let (http, acknowledged, next, url, batches) = (
            http.clone(),
            acknowledged.clone(),
            next.clone(),
            url.clone(),
            batches.clone(),
        );
        let sign = sign.clone();
        senders.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if b >= BATCHES {
                    return;
                }
                match post_usage(&http, &url, &sign(&batches[b].0, &batches[b].1)).await {
                    Ok((200, _)) => acknowledged.lock().unwrap().push(b),
                    Ok((code, body)) => panic!("batch {b}: {code} {body}"),
                    Err(_) => return, // serve is gone
                }
            }
        }));
    }
    let mut serve = serve;
    while acknowledged.lock().unwrap().len() < 40 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    serve.child.kill().unwrap(); // SIGKILL
    serve.child.wait().unwrap();
    for s in senders {
        s.await.unwrap();
    }
    drop(serve);
    let acked = acknowledged.lock().unwrap().clone();
    assert!(
        acked.len() >= 40 && acked.len() < BATCHES,
        "{} acknowledged",
        acked.len()
    );
    let counted = records_counted(&quiet.store).await;
    assert!(
        counted >= (acked.len() * PER_BATCH) as u64,
        "{counted} counted, {} acknowledged",
        acked.len()
    );

    // restarted on the same store (the dead one's lock went with it); everything is sent again
    let serve = quiet.start(&["--check-every", "1h"]);
    let mut accepted_now = 0;
    for (b, (id, body)) in batches.iter().enumerate() {
        let (code, answer) = post_usage(&http, &serve.url(""), &sign(id, body))
            .await
            .unwrap();
        assert_eq!(code, 200, "{answer}");
        if acked.contains(&b) {
            assert_eq!(
                answer["accepted"], 0,
                "acknowledged batch {b} counted again: {answer}"
            );
        }
        accepted_now += answer["accepted"].as_u64().unwrap();
    }
    assert_eq!(serve.terminate(), Some(0));
    assert_eq!(counted + accepted_now, (BATCHES * PER_BATCH) as u64);
    assert_eq!(
        records_counted(&quiet.store).await,
        (BATCHES * PER_BATCH) as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_the_same_store_refuses_to_start_naming_the_first() {
    logs::capture();
    let quiet = Quiet::new();
    let first = quiet.start(&[]);
    let second = quiet.run_serve(&quiet.store);
    assert_eq!(second.status.code(), Some(2), "{}", text(&second.stderr));
    let said = text(&second.stderr);
    assert!(
        said.contains(&format!("pid {}", first.child.id())),
        "{said}"
    );
    assert!(said.contains(quiet.store.to_str().unwrap()), "{said}");
    assert_eq!(first.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_on_a_store_serve_holds_is_refused_naming_serve_and_changes_nothing() {
    logs::capture();
    let quiet = Quiet::new();
    let serve = quiet.start(&["--check-every", "1h"]);
    let usage = quiet.path("usage.jsonl");
    let now = Utc::now().to_rfc3339();
    std::fs::write(
        &usage,
        format!(
            "{{\"id\":\"u1\",\"scope\":\"anthropic/research/key-r1\",\"cost\":{{\"amount\":\"5\",\"currency\":\"USD\"}},\"timestamp\":\"{now}\"}}\n"
        ),
    )
    .unwrap();
    let check = spendguard(&[
        "check",
        "--budgets",
        quiet.budgets.to_str().unwrap(),
        "--store",
        quiet.store.to_str().unwrap(),
        "--usage",
        usage.to_str().unwrap(),
    ]);
    assert_eq!(check.status.code(), Some(2), "{}", text(&check.stderr));
    let said = text(&check.stderr);
    assert!(
        said.contains(&format!("pid {}", serve.child.id())),
        "{said}"
    );
    assert!(said.contains(quiet.store.to_str().unwrap()), "{said}");
    assert_eq!(records_counted(&quiet.store).await, 0);
    assert_eq!(serve.terminate(), Some(0));
}

#[test]
fn a_budget_whose_action_needs_aws_is_refused_at_start_naming_it() {
    let quiet = Quiet::new();
    let store = quiet.path("store/state.db");
    std::fs::write(
        &quiet.budgets,
        QUIET_BUDGETS.replace(
            r#"{ name = "warning", percent = 90 }"#,
            r#"{ name = "emergency", percent = 100, actions = ["notify", "shutdown"] }"#,
        ),
    )
    .unwrap();
    let serve = quiet.run_serve(&store);
    let said = text(&serve.stderr);
    assert_eq!(serve.status.code(), Some(2), "{said}");
    assert!(said.contains("anthropic-research"), "{said}");
    assert!(said.contains("shutdown"), "{said}");
    assert!(!store.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_through_a_symlink_to_the_store_refuses_too() {
    logs::capture();
    let quiet = Quiet::new();
    let first = quiet.start(&[]);
    let alias = quiet.path("alias.db");
    std::os::unix::fs::symlink(&quiet.store, &alias).unwrap();
    let second = quiet.run_serve(&alias);
    let said = text(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{said}");
    assert!(
        said.contains(&format!("pid {}", first.child.id())),
        "{said}"
    );
    assert_eq!(first.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_request_over_the_limit_is_refused_naming_the_limit() {
    logs::capture();
    let quiet = Quiet::new();
    let serve = quiet.start(&[]);
    let mut socket = std::os::unix::net::UnixStream::connect(quiet.path("state.db.sock")).unwrap();
    // one byte over the limit and no newline; the writer stays open (serve reads exactly
    // this much: with bytes left unread its close would reset the connection before the reply)
    socket.write_all(&vec![b'x'; 64 * 1024 + 1]).unwrap();
    let mut reply = String::new();
    socket.read_to_string(&mut reply).unwrap();
    assert!(reply.contains("64 KiB"), "{reply}");
    assert_eq!(serve.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_body_never_comes_is_answered_408_and_sigterm_still_exits() {
    logs::capture();
    let quiet = Quiet::new();
    let serve = quiet.start(&[]);
    let mut stalled = std::net::TcpStream::connect(&serve.address).unwrap();
    stalled
        .write_all(b"POST /usage HTTP/1.1\r\nHost: serve\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    stalled.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 408", "{}", text(&head));
    assert_eq!(serve.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_are_on_their_own_listener_not_the_webhooks() {
    logs::capture();
    let quiet = Quiet::new();
    let serve = quiet.start(&[]);
    let http = reqwest::Client::new();
    for path in ["/metrics", "/health"] {
        let public = http.get(serve.url(path)).send().await.unwrap();
        assert_eq!(
            public.status().as_u16(),
            404,
            "{path} on the webhook's listener"
        );
        let ops = http.get(serve.ops_url(path)).send().await.unwrap();
        assert_eq!(ops.status().as_u16(), 200, "{path} on --metrics-listen");
    }
    assert_eq!(serve.terminate(), Some(0));
}

/// The README's next step after the demo: `serve --budgets examples/serve.toml` starts, its
/// first check evaluates every budget, and it reports itself healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_serve_example_starts_and_is_healthy() {
    logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state.db");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/serve.toml");
    let serve = Serve::start(
        &["--budgets", example, "--store", store.to_str().unwrap()],
        &[],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !serve.logged("budget check finished") {
        assert!(
            std::time::Instant::now() < deadline,
            "no check finished: {:?}",
            serve.lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = reqwest::get(serve.ops_url("/health")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["last_check"]["error"], Value::Null, "{health}");
    assert_eq!(serve.terminate(), Some(0));
}

#[test]
fn a_secrets_file_others_may_read_is_refused_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store/state.db");
    let budgets = dir.path().join("budgets.toml");
    std::fs::write(&budgets, QUIET_BUDGETS).unwrap();
    let secrets = dir.path().join("secrets.toml");
    private_file(
        &secrets,
        "ops-slack = \"https://hooks.example/services/T/B/x\"\n",
        0o644,
    );
    let run = spendguard(&[
        "serve",
        "--budgets",
        budgets.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--secrets",
        secrets.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(run.status.code(), Some(2), "{}", text(&run.stderr));
    let said = text(&run.stderr);
    assert!(
        said.contains(secrets.to_str().unwrap()) && said.contains("0644"),
        "{said}"
    );
    assert!(!said.contains("hooks.example"), "{said}");
    assert!(!store.exists() && !store.parent().unwrap().exists());
}

#[test]
fn sigterm_as_soon_as_serve_says_it_started_stops_it_gracefully() {
    let quiet = Quiet::new();
    // the line clients wait for is the moment a supervisor may stop serve: every time, a
    // graceful exit 0 (it was killed by the signal when the handler came after the line)
    for attempt in 0..10 {
        let serve = quiet.start(&[]);
        assert_eq!(serve.terminate(), Some(0), "attempt {attempt}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_and_exits_0() {
    logs::capture();
    let quiet = Quiet::new();
    let serve = quiet.start(&[]);
    let secret = read_secret(&quiet.path("secrets/usage-webhook"));
    let signer = WebhookSecret::parse_list(&secret).unwrap()[0].clone();
    let body = json!({"records": [record("inflight-1", "0.5")]}).to_string();
    let timestamp = Utc::now().timestamp();
    let signature = signer.sign("msg_inflight", timestamp, body.as_bytes());

    // the request's head and half its body are sent; SIGTERM comes before the rest
    let mut connection = std::net::TcpStream::connect(&serve.address).unwrap();
    write!(
        connection,
        "POST /usage HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nwebhook-id: msg_inflight\r\nwebhook-timestamp: {timestamp}\r\nwebhook-signature: {signature}\r\nconnection: close\r\n\r\n",
        serve.address,
        body.len()
    )
    .unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    connection.write_all(first.as_bytes()).unwrap();
    connection.flush().unwrap();
    // serve is reading that request's body when the signal comes
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !serve.logged("request started") {
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not take the request"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = serve.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    while !serve.logged("stopping") {
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not begin to stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    connection.write_all(rest.as_bytes()).unwrap();
    let mut answer = String::new();
    connection.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""accepted":1"#), "{answer}");
    // new connections are refused while it stops, and it exits 0
    let mut serve = serve;
    let code = serve.child.wait().unwrap().code();
    assert_eq!(code, Some(0));
    assert_eq!(records_counted(&quiet.store).await, 1);
}

/// The packaging (Docker and systemd cannot run here): every flag the systemd unit and the
/// container pass to `spendguard serve` is one it takes, and the hardening is there.
#[test]
fn the_unit_and_the_container_pass_flags_serve_takes() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let help = text(&spendguard(&["serve", "--help"]).stdout);
    let flags_in = |line: &str| -> Vec<String> {
        line.split(|c: char| c.is_whitespace() || c == '"' || c == ',')
            .filter(|w| w.starts_with("--"))
            .map(String::from)
            .collect()
    };
    let unit = std::fs::read_to_string(repo.join("deploy/spendguard.service")).unwrap();
    let exec = unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("an ExecStart");
    assert!(exec.contains("spendguard serve"), "{exec}");
    let container = std::fs::read_to_string(repo.join("deploy/Containerfile")).unwrap();
    let cmd = container
        .lines()
        .find(|l| l.starts_with("CMD "))
        .expect("a CMD");
    assert!(cmd.contains(r#"["serve","#), "{cmd}");
    for flag in flags_in(exec).into_iter().chain(flags_in(cmd)) {
        assert!(
            help.contains(&format!("{flag} ")),
            "{flag} is not a flag of serve:\n{help}"
        );
    }
    for hardening in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=spendguard",
        "LoadCredential=secrets.toml:",
        "KillSignal=SIGTERM",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(hardening)),
            "{hardening}"
        );
    }
    assert_eq!(
        container.lines().filter(|l| l.starts_with("FROM ")).count(),
        2,
        "a build stage and a runtime stage"
    );
    let user = container
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
}
