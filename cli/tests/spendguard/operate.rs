//! The operator's commands against a deployment's table in moto (through `AWS_ENDPOINT_URL`,
//! started by scripts/test), with the Anthropic admin API as a local stand-in: `budgets apply`
//! with its diff and confirmation, `kill`, `shutdown` (against resources in moto), `status`,
//! `restore` and `ack`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use serde_json::{Value, json};
use spendguard_app::flows::caps::CapOutcome;
use spendguard_app::ports::store::AlertStore;
use spendguard_app::ports::store::AuditLog;
use spendguard_app::ports::store::KeyStore;
use spendguard_app::ports::store::PolicyStore;
use spendguard_domain::alert::AlertEvent;
use spendguard_domain::records::{OpenAlert, SwitchState};
use spendguard_domain::scope::Scope;
use spendguard_tests::admin_apis::{
    ANTHROPIC_ADMIN_KEY, OPENAI_ADMIN_KEY, ProviderState, anthropic_standin, openai_standin,
};
use spendguard_tests::aws;
use spendguard_tests::aws::TopicProbe;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `spendguard` with no terminal on stdin (as a script would) and extra variables.
fn spendguard(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .current_dir(repo())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run spendguard")
}

const BUDGETS: &str = r#"
version = 1
[defaults]
currency = "USD"
timezone = "UTC"

[[budget]]
id = "anthropic-research"
scope = "anthropic/research"
[[budget.window]]
period = "monthly"
limit = "LIMIT"
tiers = [{ name = "emergency", percent = 100, actions = ["notify", "disable_keys"] }]

[[key]]
id = "anthropic-research-r1"
provider = "anthropic"
scope = "anthropic/research/key-r1"
key_id = "apikey_r1"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_apply_shows_the_diff_and_writes_only_when_confirmed() {
    let sdk = aws::sdk().await;
    let (store, table) = aws::new_store(&sdk).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("budgets.toml");
    let file_arg = file.to_str().unwrap();
    let table_args = |extra: &[&'static str]| {
        let mut a = vec!["budgets", "apply", file_arg, "--table", table.as_str()];
        a.extend_from_slice(extra);
        a
    };

    // an invalid file: exit 2, nothing written
    std::fs::write(&file, BUDGETS.replace("LIMIT", "-5")).unwrap();
    let bad = spendguard(&table_args(&["--yes"]), &[]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(store.load_policy().await.unwrap().budgets.is_empty());

    std::fs::write(&file, BUDGETS.replace("LIMIT", "1000")).unwrap();
    let first = spendguard(&table_args(&["--yes"]), &[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).contains("+ budget.anthropic-research"),
        "{}",
        text(&first.stdout)
    );
    assert!(
        text(&first.stdout).contains("+ key.anthropic-research-r1"),
        "{}",
        text(&first.stdout)
    );

    // a change without --yes and without a terminal: the diff is shown, nothing is written
    std::fs::write(&file, BUDGETS.replace("LIMIT", "1500")).unwrap();
    let unconfirmed = spendguard(&table_args(&[]), &[]);
    assert_eq!(
        unconfirmed.status.code(),
        Some(2),
        "{}",
        text(&unconfirmed.stderr)
    );
    let shown = text(&unconfirmed.stdout);
    assert!(
        shown.contains(r#"~ budget.anthropic-research.windows[0].limit: "1000" -> "1500""#),
        "{shown}"
    );
    assert_eq!(
        shown.matches("\n  ").count(),
        1,
        "exactly one change: {shown}"
    );
    assert!(text(&unconfirmed.stderr).contains("pass --yes"));
    let limit =
        |p: &spendguard_domain::settings::PolicySet| p.budgets[0].windows[0].limit.to_string();
    assert_eq!(limit(&store.load_policy().await.unwrap()), "1000");

    let confirmed = spendguard(&table_args(&["--yes"]), &[]);
    assert_eq!(
        confirmed.status.code(),
        Some(0),
        "{}",
        text(&confirmed.stderr)
    );
    assert_eq!(limit(&store.load_policy().await.unwrap()), "1500");
    // applying the same file again changes nothing
    let again = spendguard(&table_args(&[]), &[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(text(&again.stdout).contains("already holds exactly this policy"));
}

/// Caps as code (issue 22 part 3): `budgets apply` shows OpenAI's project limit in its diff and
/// sets it; a second apply changes nothing; a change by hand at OpenAI is one drift finding
/// from budget-check's runs (not one per run), and the limit is set back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_caps_are_applied_kept_and_a_hand_change_is_one_drift_finding() {
    let sdk = aws::sdk().await;
    let (_, table) = aws::new_store(&sdk).await;
    let openai = Arc::new(ProviderState::default());
    openai.add_in_project("proj_cap", "key_cap");
    let standin = openai_standin(openai.clone()).await;
    let admin = aws::secret(&sdk, "openai-admin", OPENAI_ADMIN_KEY).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("budgets.toml");
    std::fs::write(
        &file,
        r#"
version = 1
[routing]
critical = ["log"]
[[budget]]
id = "openai-cap"
scope = "openai/cap"
source = { kind = "openai", project_id = "proj_cap" }
[[budget.window]]
period = "monthly"
limit = "500"
provider_cap = true
tiers = [{ name = "critical", percent = 80 }]
"#,
    )
    .unwrap();
    let env = [
        ("SPENDGUARD_TABLE", table.as_str()),
        ("SPENDGUARD_OPENAI_ADMIN_KEY_ARN", admin.as_str()),
        ("SPENDGUARD_OPENAI_API_URL", standin.url.as_str()),
    ];
    let apply = |extra: &[&str]| {
        let mut args = vec!["budgets", "apply", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        spendguard(&args, &env)
    };
    const LIMIT: &str = "project:proj_cap";

    // the diff names the provider-side change; without --yes nothing is set
    let shown = apply(&[]);
    assert_eq!(shown.status.code(), Some(2), "{}", text(&shown.stderr));
    assert!(
        text(&shown.stdout).contains(
            "provider limit openai:project:proj_cap (budget openai-cap): none -> 500.00 USD"
        ),
        "{}",
        text(&shown.stdout)
    );
    assert_eq!(openai.spend_limit(LIMIT), None);

    let applied = apply(&["--yes"]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied.stderr));
    assert_eq!(openai.spend_limit(LIMIT), Some(50_000), "in cents");
    let writes = openai.writes_for(LIMIT).len();
    let again = apply(&[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("already holds exactly this policy"),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(
        openai.writes_for(LIMIT).len(),
        writes,
        "a second apply sets nothing"
    );

    // budget-check's runs keep it: a person raises it at OpenAI, twice the same change seen
    let probe = TopicProbe::new(&sdk).await;
    let config = budget_check::config::Config {
        table: table.clone(),
        alerts_topic_arn: probe.topic_arn.clone(),
        sources: spendguard_app::env::SourcesConfig {
            openai_admin_key_arn: Some(admin.clone()),
            openai_api_url: standin.url.clone(),
            ..Default::default()
        },
        claim_lease_seconds: 300,
        alert_signing_key_arn: None,
        role: budget_check::config::Role::Check,
    };
    let checker = budget_check::app::checker(&config, &sdk).await.unwrap();
    let check = spendguard_app::flows::check::CheckOptions::default();
    let quiet = checker.run(&check).await.unwrap();
    assert_eq!(
        quiet.provider_caps[0].outcome,
        CapOutcome::InPlace,
        "{quiet:?}"
    );
    openai.set_spend_limit_by_hand(LIMIT, Some(90_000));
    let drifted = checker.run(&check).await.unwrap();
    assert_eq!(
        drifted.provider_caps[0].outcome,
        CapOutcome::Drifted { by_hand: 90_000 }
    );
    assert_eq!(openai.spend_limit(LIMIT), Some(50_000), "set back");
    checker.run(&check).await.unwrap();
    let findings: Vec<Value> = probe
        .drain()
        .await
        .into_iter()
        .map(|m| serde_json::from_str(m["Message"].as_str().unwrap()).unwrap())
        .filter(|a: &Value| a["kind"] == "drill")
        .collect();
    assert_eq!(
        findings.len(),
        1,
        "one finding for one change: {findings:#?}"
    );
    let problem = findings[0]["details"]["problem"].as_str().unwrap();
    assert!(
        problem.contains("900.00 USD") && problem.contains("500.00 USD"),
        "{problem}"
    );
    // a second change by hand is a second finding
    openai.set_spend_limit_by_hand(LIMIT, None);
    checker.run(&check).await.unwrap();
    let second: Vec<Value> = probe.drain().await;
    assert_eq!(second.len(), 1, "{second:#?}");
    assert_eq!(openai.spend_limit(LIMIT), Some(50_000));
}

/// Caps as code on Anthropic (issue 22 part 3): a workspace's monthly spend limit is kept like
/// OpenAI's (decimal-string cents at the stand-in); an organisation without the early access
/// (403 or 404 on the spend limits) gets one finding, ever — never a failed run or apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_caps_are_kept_and_an_organisation_without_them_gets_one_finding_never_a_failure()
{
    use std::sync::atomic::Ordering;
    let sdk = aws::sdk().await;
    let (_, table) = aws::new_store(&sdk).await;
    let anthropic = Arc::new(ProviderState::default());
    let standin = anthropic_standin(anthropic.clone()).await;
    let admin = aws::secret(&sdk, "anthropic-admin", ANTHROPIC_ADMIN_KEY).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("budgets.toml");
    let budgets = |limit: &str| {
        format!(
            r#"
version = 1
[routing]
warning = ["log"]
[[budget]]
id = "anthropic-cap"
scope = "anthropic/cap"
source = {{ kind = "anthropic", workspace_id = "wrkspc_cap" }}
[[budget.window]]
period = "monthly"
limit = "{limit}"
provider_cap = true
tiers = [{{ name = "warning", percent = 80 }}]
"#
        )
    };
    std::fs::write(&file, budgets("500")).unwrap();
    let env = [
        ("SPENDGUARD_TABLE", table.as_str()),
        ("SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN", admin.as_str()),
        ("SPENDGUARD_ANTHROPIC_API_URL", standin.url.as_str()),
    ];
    let apply = |extra: &[&str]| {
        let mut args = vec!["budgets", "apply", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        spendguard(&args, &env)
    };
    const LIMIT: &str = "workspace:wrkspc_cap";

    // without the Anthropic admin key the apply names the variable and writes nothing
    let unkeyed = spendguard(
        &["budgets", "apply", file.to_str().unwrap(), "--yes"],
        &[("SPENDGUARD_TABLE", table.as_str())],
    );
    assert_eq!(unkeyed.status.code(), Some(2), "{}", text(&unkeyed.stdout));
    assert!(
        text(&unkeyed.stderr).contains("SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN"),
        "{}",
        text(&unkeyed.stderr)
    );

    let shown = apply(&[]);
    assert!(
        text(&shown.stdout).contains(
            "provider limit anthropic:workspace:wrkspc_cap (budget anthropic-cap): none -> 500.00 USD"
        ),
        "{}",
        text(&shown.stdout)
    );
    let applied = apply(&["--yes"]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied.stderr));
    assert_eq!(anthropic.spend_limit(LIMIT), Some(50_000), "in cents");
    let writes = anthropic.writes_for(LIMIT).len();
    let again = apply(&[]);
    assert!(
        text(&again.stdout).contains("already holds exactly this policy"),
        "{}",
        text(&again.stdout)
    );
    assert_eq!(
        anthropic.writes_for(LIMIT).len(),
        writes,
        "a second apply sets nothing"
    );

    let probe = TopicProbe::new(&sdk).await;
    let config = budget_check::config::Config {
        table: table.clone(),
        alerts_topic_arn: probe.topic_arn.clone(),
        sources: spendguard_app::env::SourcesConfig {
            anthropic_admin_key_arn: Some(admin.clone()),
            anthropic_api_url: standin.url.clone(),
            ..Default::default()
        },
        claim_lease_seconds: 300,
        alert_signing_key_arn: None,
        role: budget_check::config::Role::Check,
    };
    let checker = budget_check::app::checker(&config, &sdk).await.unwrap();
    let check = spendguard_app::flows::check::CheckOptions::default();
    anthropic.set_spend_limit_by_hand(LIMIT, Some(90_000));
    let drifted = checker.run(&check).await.unwrap();
    assert_eq!(
        drifted.provider_caps[0].outcome,
        CapOutcome::Drifted { by_hand: 90_000 },
        "{drifted:?}"
    );
    assert_eq!(anthropic.spend_limit(LIMIT), Some(50_000), "set back");
    checker.run(&check).await.unwrap();
    assert_eq!(probe.drain().await.len(), 1, "one finding for one change");

    // the organisation loses (or never had) the early access: 403, later 404
    for status in [403, 404] {
        anthropic
            .spend_limits_not_enabled
            .store(status, Ordering::SeqCst);
        for _ in 0..2 {
            let run = checker.run(&check).await.expect("not a failed run");
            assert_eq!(
                run.provider_caps[0].outcome,
                CapOutcome::NotEnabled,
                "{status}: {run:?}"
            );
            // (the stand-in serves no cost report: the budget's source fails, its cap must not)
            assert!(
                run.failures.iter().all(|f| !f.contains("provider cap")),
                "{status}: {:?}",
                run.failures
            );
        }
    }
    let findings: Vec<Value> = probe
        .drain()
        .await
        .into_iter()
        .map(|m| serde_json::from_str(m["Message"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(findings.len(), 1, "reported once: {findings:#?}");
    assert_eq!(findings[0]["kind"], "drill");
    let problem = findings[0]["details"]["problem"].as_str().unwrap();
    assert!(
        problem.contains("early-access") && problem.contains("anthropic-cap"),
        "{problem}"
    );
    // nor does it fail an apply: the policy is applied, the cap said to be not kept
    std::fs::write(&file, budgets("600")).unwrap();
    let applied = apply(&["--yes"]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied.stderr));
    assert!(
        text(&applied.stdout).contains("is not kept: the provider does not offer spend limits"),
        "{}",
        text(&applied.stdout)
    );
    assert_eq!(anthropic.spend_limit(LIMIT), Some(50_000), "nothing set");
}

/// `spendguard drill`: healthy, exit 0; an admin key Anthropic refuses, exit 5 with the key,
/// the problem and the fix; nothing is changed either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_names_each_stop_that_would_fail_and_changes_nothing() {
    let sdk = aws::sdk().await;
    let (store, table) = aws::new_store(&sdk).await;
    let policy =
        spendguard_domain::budgets_file::parse_budgets("b.toml", &BUDGETS.replace("LIMIT", "1000"))
            .unwrap();
    store.put_policy(&policy).await.unwrap();
    let provider = Arc::new(ProviderState::default());
    provider.add("apikey_r1", true);
    let anthropic = anthropic_standin(provider.clone()).await;
    for (admin_key, code) in [("sk-ant-admin-test", 0), ("sk-ant-admin-revoked", 5)] {
        let admin = aws::secret(&sdk, "anthropic-admin", admin_key).await;
        let env = [
            ("SPENDGUARD_TABLE", table.as_str()),
            ("SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN", admin.as_str()),
            ("SPENDGUARD_ANTHROPIC_API_URL", anthropic.url.as_str()),
        ];
        let out = spendguard(&["drill"], &env);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(code), "{stdout}{stderr}");
        if code == 0 {
            assert!(stdout.contains("0 problem(s)"), "{stdout}");
        } else {
            assert!(
                stdout.contains("error: key anthropic-research-r1:") && stdout.contains("401"),
                "{stdout}"
            );
            assert!(stdout.contains("help: check the admin key"), "{stdout}");
            assert!(
                stderr.contains("1 stop(s) could not be carried out now"),
                "{stderr}"
            );
        }
    }
    assert_eq!(provider.active("apikey_r1"), Some(true));
    assert!(
        provider.writes.lock().unwrap().is_empty(),
        "a drill writes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_status_restore_and_ack_against_a_deployment() {
    let sdk = aws::sdk().await;
    let (store, table) = aws::new_store(&sdk).await;
    let policy =
        spendguard_domain::budgets_file::parse_budgets("b.toml", &BUDGETS.replace("LIMIT", "1000"))
            .unwrap();
    store.put_policy(&policy).await.unwrap();
    let provider = Arc::new(ProviderState::default());
    provider.add("apikey_r1", true);
    let anthropic = anthropic_standin(provider.clone()).await;
    let admin = aws::secret(&sdk, "anthropic-admin", "sk-ant-admin-test").await;
    let env = [
        ("SPENDGUARD_TABLE", table.as_str()),
        ("SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN", admin.as_str()),
        ("SPENDGUARD_ANTHROPIC_API_URL", anthropic.url.as_str()),
    ];
    let scope = Scope::parse("anthropic/research").unwrap();

    // without --yes nobody confirmed: nothing happens
    let refused = spendguard(
        &["kill", "--scope", "anthropic/research", "--reason", "leak"],
        &env,
    );
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("anthropic-research-r1"),
        "names the keys it would stop"
    );
    assert!(store.kill_switch(&scope).await.unwrap().is_none());
    assert_eq!(provider.active("apikey_r1"), Some(true));

    let kill = spendguard(
        &[
            "kill",
            "--scope",
            "anthropic/research",
            "--reason",
            "leaked key",
            "--yes",
        ],
        &env,
    );
    assert_eq!(
        kill.status.code(),
        Some(0),
        "{}{}",
        text(&kill.stdout),
        text(&kill.stderr)
    );
    // a summary a person reads in an incident, naming the target and each key
    let summary = text(&kill.stdout);
    assert!(
        summary.starts_with(&format!(
            "Kill switch engaged on anthropic/research (table {table}): 1 of 1 keys and resources stopped"
        )),
        "{summary}"
    );
    assert!(
        summary
            .lines()
            .any(|l| l.contains("anthropic-research-r1") && l.contains("disabled")),
        "{summary}"
    );
    assert!(!summary.contains('{'), "no JSON without --json: {summary}");
    let switch = store.kill_switch(&scope).await.unwrap().unwrap();
    assert!(matches!(switch.value.state, SwitchState::Engaged { .. }));
    assert_eq!(
        provider.active("apikey_r1"),
        Some(false),
        "disabled at the provider"
    );
    let audit = store
        .audit_log(
            spendguard_domain::period::YearMonth::of(chrono::Utc::now().date_naive()),
            10,
        )
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "kill_switch_engaged" && e.actor.starts_with("cli:"))
    );

    let status = spendguard(
        &["status", "--scope", "anthropic/research/key-r1", "--json"],
        &env,
    );
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["kill_switches"][0]["state"]["state"], "engaged");
    assert_eq!(
        status["keys"][0]["status"]["status"],
        "disabled_by_spendguard"
    );

    let restore = spendguard(
        &[
            "restore",
            "--scope",
            "anthropic/research",
            "--yes",
            "--json",
        ],
        &env,
    );
    assert_eq!(
        restore.status.code(),
        Some(0),
        "{}{}",
        text(&restore.stdout),
        text(&restore.stderr)
    );
    let restored: Value = serde_json::from_slice(&restore.stdout).unwrap();
    assert_eq!(restored["schema_version"], 1);
    assert_eq!(restored["keys"][0]["key_id"], "anthropic-research-r1");
    assert_eq!(restored["keys"][0]["outcome"], "restored");
    assert_eq!(provider.active("apikey_r1"), Some(true), "re-enabled");
    let switch = store.kill_switch(&scope).await.unwrap().unwrap();
    assert!(matches!(switch.value.state, SwitchState::Restoring { .. }));

    // the month report from the deployment's data shows when keys were stopped and restored
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let report = spendguard(
        &[
            "report",
            "--scope",
            "anthropic/research",
            "--month",
            &month,
            "--json",
        ],
        &env,
    );
    assert_eq!(report.status.code(), Some(0), "{}", text(&report.stderr));
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["budget_id"], "anthropic-research");
    assert_eq!(report["limit"], "1000");
    let kinds: Vec<&str> = report["markers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["kill", "restore"]);

    // acknowledging an open paging alert stops its escalation
    let fixture =
        std::fs::read_to_string(repo().join("events/alert-fanout/critical.json")).unwrap();
    let fixture: Value = serde_json::from_str(&fixture).unwrap();
    let event: AlertEvent =
        serde_json::from_str(fixture["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap();
    store
        .put_open_alert(&OpenAlert {
            event: event.clone(),
            acknowledged: None,
            escalation_level: 0,
        })
        .await
        .unwrap();
    let ack = spendguard(&["ack", &event.alert_id], &env);
    assert_eq!(ack.status.code(), Some(0), "{}", text(&ack.stderr));
    let open = store.open_alerts().await.unwrap();
    assert!(
        open.iter()
            .find(|a| a.event.alert_id == event.alert_id)
            .unwrap()
            .acknowledged
            .is_some()
    );
    let audit = store
        .audit_log(
            spendguard_domain::period::YearMonth::of(chrono::Utc::now().date_naive()),
            50,
        )
        .await
        .unwrap();
    assert!(
        audit.iter().any(|e| e.action == "alert_acknowledged"
            && e.actor.starts_with("cli:")
            && e.detail["alert_id"] == json!(event.alert_id)),
        "the acknowledgement is audited in the deployment"
    );
    let unknown = spendguard(&["ack", "no-such-alert"], &env);
    assert_eq!(unknown.status.code(), Some(2), "invalid input");
    assert!(
        text(&unknown.stderr).contains("no open alert with id no-such-alert")
            && text(&unknown.stderr).contains(&table),
        "a refusal says what is wrong and names its target: {}",
        text(&unknown.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lists_what_it_would_stop_and_stops_it_only_when_confirmed() {
    let sdk = aws::sdk().await;
    let (store, table) = aws::new_store(&sdk).await;
    store
        .put_policy(&spendguard_domain::settings::PolicySet::default())
        .await
        .unwrap();
    let cloud = spendguard_tests::cloud::Cloud::new(&sdk).await;
    let scope = format!("aws/{}", aws::unique("cli"));
    let function = cloud.function(Some(&scope), Some(4)).await;
    let env = [("SPENDGUARD_TABLE", table.as_str())];
    let shutdown = |extra: &[&str]| {
        let mut args = vec!["shutdown", "--scope", &scope, "--reason", "runaway"];
        args.extend_from_slice(extra);
        spendguard(&args, &env)
    };

    let plan = shutdown(&["--dry-run", "--json"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["resources"][0]["id"], json!(function));
    assert_eq!(plan["resources"][0]["outcome"], "would_stop");
    assert_eq!(plan["target"], json!(format!("table {table}")));
    // unconfirmed (no terminal, no --yes): the plan is shown, nothing is stopped
    let refused = shutdown(&[]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stdout).contains(&function),
        "shows the plan first"
    );
    assert_eq!(cloud.reserved(&function).await, Some(4));

    let done = shutdown(&["--yes"]);
    assert_eq!(done.status.code(), Some(0), "{}", text(&done.stderr));
    assert!(
        text(&done.stdout).contains(&format!("Shut down {scope} (table {table})"))
            && text(&done.stdout).contains(&function),
        "{}",
        text(&done.stdout)
    );
    assert_eq!(cloud.reserved(&function).await, Some(0));
    let restore = spendguard(&["restore", "--scope", &scope, "--yes"], &env);
    assert_eq!(restore.status.code(), Some(0), "{}", text(&restore.stderr));
    assert_eq!(cloud.reserved(&function).await, Some(4));
}

/// Runs `spendguard` in `dir` with no deployment configured (no `SPENDGUARD_TABLE`).
fn spendguard_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .current_dir(dir)
        .args(args)
        .env_remove("SPENDGUARD_TABLE")
        .stdin(Stdio::null())
        .output()
        .expect("run spendguard")
}

/// Issue 20 §5: an operator command that would reach nothing is refused; a kill that stops
/// nothing says so with its own exit code; every result names its target.
#[test]
fn operator_commands_need_a_real_target_and_a_kill_that_stops_nothing_says_so() {
    let dir = tempfile::tempdir().unwrap();
    // a readable budgets file: `budgets apply` reads it before it looks for a target
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/budgets.toml"),
        dir.path().join("budgets.toml"),
    )
    .unwrap();
    let commands: [&[&str]; 7] = [
        &["kill", "--scope", "openai/prod", "--reason", "x", "--yes"],
        &[
            "shutdown",
            "--scope",
            "openai/prod",
            "--reason",
            "x",
            "--yes",
        ],
        &["restore", "--scope", "openai/prod", "--yes"],
        &["status"],
        &["ack", "0123456789abcdef"],
        &[
            "report", "--scope", "openai", "--month", "2026-11", "--json",
        ],
        &["budgets", "apply", "budgets.toml", "--yes"],
    ];
    for args in commands {
        let out = spendguard_in(dir.path(), args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("--table") && err.contains("--store"),
            "{args:?} says how to name a target: {err}"
        );
        assert!(
            !dir.path().join(".spendguard").exists(),
            "{args:?} created a store nobody asked for"
        );
    }
    // a store file that does not exist is not created either
    let missing = spendguard_in(dir.path(), &["status", "--store", "missing.db"]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing.stderr));
    assert!(text(&missing.stderr).contains("missing.db"));
    assert!(!dir.path().join("missing.db").exists());

    // an existing store (made by `check`) where nothing is registered under the scope
    let store = dir.path().join("state.db");
    let store_arg = store.to_str().unwrap();
    let budgets = repo().join("examples/budgets.toml");
    let made = spendguard_in(
        dir.path(),
        &[
            "check",
            "--budgets",
            budgets.to_str().unwrap(),
            "--store",
            store_arg,
            "--now",
            "2026-11-20T18:00:00Z",
        ],
    );
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    let kill = spendguard_in(
        dir.path(),
        &[
            "kill",
            "--scope",
            "nothing/here",
            "--reason",
            "drill",
            "--yes",
            "--store",
            store_arg,
        ],
    );
    let (out, err) = (text(&kill.stdout), text(&kill.stderr));
    assert_eq!(kill.status.code(), Some(4), "{out}{err}");
    assert!(
        err.contains("warning") && err.contains("stopped nothing"),
        "{err}"
    );
    assert!(
        out.contains(store_arg),
        "the result names its target: {out}"
    );
    let status = spendguard_in(dir.path(), &["status", "--json", "--store", store_arg]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        status["target"].as_str().unwrap().contains(store_arg),
        "{status}"
    );
}
