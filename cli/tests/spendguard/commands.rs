//! The `spendguard` binary as a user runs it: exit codes, output, and replays.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn spendguard(args: &[&str], store: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .current_dir(repo())
        .args(args)
        .arg("--store")
        .arg(store)
        .output()
        .expect("run spendguard")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const EXAMPLE: [&str; 7] = [
    "check",
    "--budgets",
    "examples/budgets.toml",
    "--usage",
    "examples/usage.jsonl",
    "--now",
    "2026-11-20T18:00:00Z",
];

#[test]
fn quick_start_shows_budgets_over_their_tiers_and_replays_are_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state.db");
    let first = spendguard(&EXAMPLE, &store);
    let (out, err) = (text(&first.stdout), text(&first.stderr));
    assert_eq!(first.status.code(), Some(0), "{out}\n{err}");
    assert!(
        err.contains("81 records from examples/usage.jsonl: 81 counted, 0 already counted before"),
        "{err}"
    );
    let row = |budget: &str| {
        out.lines()
            .find(|l| l.starts_with(budget))
            .unwrap_or_else(|| panic!("no row for {budget}:\n{out}"))
            .to_string()
    };
    assert!(
        row("openai-prod").contains("1580.00")
            && row("openai-prod").contains("79.0%")
            && row("openai-prod").contains("critical")
    );
    assert!(
        row("openai-dev-key").contains("emergency")
            && row("openai-dev-key").contains("disable_keys")
    );
    assert!(
        row("search-feature").contains("40.00 EUR") && row("search-feature").contains("warning")
    );
    assert!(out.contains("Alerts: 6 raised now"), "{out}");
    assert_eq!(
        out.matches("▲").count(),
        6,
        "the count is of every alert listed: {out}"
    );

    let second = spendguard(&EXAMPLE, &store);
    let (out, err) = (text(&second.stdout), text(&second.stderr));
    assert_eq!(second.status.code(), Some(0));
    assert!(
        err.contains("0 counted, 81 already counted before"),
        "{err}"
    );
    assert!(
        out.contains("Alerts: 0 raised now, 6 already raised earlier in their period."),
        "{out}"
    );
    assert!(
        row("openai-prod").contains("1580.00"),
        "the replay did not double the spend"
    );
}

/// Issue 25 §4: periods as dates with when they reset (never the store's keys), the worst
/// rows first, the forecast also as a percentage of the limit; the JSON has the same.
#[test]
fn the_check_table_shows_dates_worst_first_and_the_forecast_share() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state.db");
    let first = spendguard(&EXAMPLE, &store);
    let out = text(&first.stdout);
    assert_eq!(first.status.code(), Some(0), "{out}");
    let table: Vec<&str> = out.lines().take_while(|l| !l.is_empty()).collect();
    for key in ["M#", "W#", "D#"] {
        assert!(!out.contains(key), "a store key ({key}) is shown: {out}");
    }
    let row = |budget: &str, window: &str| {
        table
            .iter()
            .find(|l| l.starts_with(budget) && l.contains(window))
            .unwrap_or_else(|| panic!("no row for {budget} {window}:\n{out}"))
            .to_string()
    };
    assert!(row("openai-prod", "monthly").contains("Nov 2026"), "{out}");
    // its budget keeps New York time
    assert!(
        row("openai-prod", "monthly").contains("1 Dec 00:00 EST"),
        "{out}"
    );
    assert!(
        row("search-feature", "weekly").contains("16–22 Nov 2026"),
        "{out}"
    );
    assert!(
        row("search-feature", "weekly").contains("23 Nov 00:00 UTC"),
        "{out}"
    );
    assert!(
        row("openai-dev-key", "daily").contains("20 Nov 2026"),
        "{out}"
    );
    // forecast 2476.76 of a 2000 limit
    assert!(row("openai-prod", "monthly").contains("123.8%"), "{out}");
    let order: Vec<&str> = table[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        &order[..3],
        ["openai-dev-key", "openai-prod", "search-feature"],
        "emergency, critical, warning first: {out}"
    );

    let json = spendguard(
        &[
            "check",
            "--budgets",
            "examples/budgets.toml",
            "--now",
            "2026-11-20T18:00:00Z",
            "--json",
        ],
        &store,
    );
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["schema_version"], 1);
    let prod = report["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["budget_id"] == "openai-prod")
        .unwrap();
    let window = &prod["windows"][0];
    assert_eq!(window["period"], "M#2026-11");
    assert_eq!(window["period_label"], "Nov 2026");
    assert_eq!(window["period_start"], "2026-11-01T04:00:00Z");
    assert_eq!(window["period_end"], "2026-12-01T05:00:00Z");
    assert_eq!(window["forecast_percent"], "123.8");
    assert_eq!(prod["timezone"], "America/New_York");
}

#[test]
fn an_invalid_budgets_file_exits_2_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = spendguard(
        &[
            "check",
            "--budgets",
            "domain/tests/budgets/invalid/negative-limit.toml",
        ],
        &dir.path().join("s.db"),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("domain/tests/budgets/invalid/negative-limit.toml:9:9: budget[prod].window[monthly].limit"), "{err}");
    assert!(
        !dir.path().join("s.db").exists(),
        "nothing is created for invalid input"
    );
}

#[test]
fn a_usage_file_with_one_bad_line_ingests_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state.db");
    let usage = dir.path().join("usage.jsonl");
    std::fs::write(
        &usage,
        concat!(
            r#"{"id":"good","scope":"openai/prod/k","cost":{"amount":"900","currency":"USD"},"timestamp":"2026-11-20T10:00:00Z"}"#,
            "\n",
            r#"{"id":"bad","scope":"openai/prod/k","tokens_out":-3,"cost":{"amount":"1","currency":"USD"},"timestamp":"2026-11-20T10:00:00Z"}"#,
            "\n"
        ),
    )
    .unwrap();
    let usage_arg = usage.display().to_string();
    let args = [
        "check",
        "--budgets",
        "examples/budgets.toml",
        "--usage",
        &usage_arg,
        "--now",
        "2026-11-20T18:00:00Z",
    ];
    let out = spendguard(&args, &store);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{usage_arg}:2: tokens_out: must not be negative (got -3)"
        )),
        "{err}"
    );
    assert!(err.contains("nothing was ingested"), "{err}");
    // the good line was not counted either: openai-prod has spent nothing
    let json = spendguard(
        &[
            "check",
            "--budgets",
            "examples/budgets.toml",
            "--now",
            "2026-11-20T18:00:00Z",
            "--json",
        ],
        &store,
    );
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let prod = report["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["budget_id"] == "openai-prod")
        .unwrap();
    assert_eq!(prod["windows"][0]["spend"]["amount"], "0");
}

#[test]
fn fail_on_and_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state.db");
    let mut dry: Vec<&str> = EXAMPLE.to_vec();
    dry.extend(["--dry-run", "--fail-on", "emergency"]);
    let out = spendguard(&dry, &store);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--fail-on emergency: reached by openai-dev-key daily"));
    assert!(
        text(&out.stdout).contains("Dry run: 6 alerts would be raised;"),
        "{}",
        text(&out.stdout)
    );
    // the dry run claimed nothing: the real run raises all six
    let real = spendguard(&EXAMPLE, &store);
    assert!(
        text(&real.stdout).contains("Alerts: 6 raised now"),
        "{}",
        text(&real.stdout)
    );
}

#[test]
fn validate_summarises_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .current_dir(repo())
        .args(["validate", "--budgets", "examples/budgets.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("valid — 6 budgets, 7 windows, 4 channels, 3 prices, 5 keys"),
        "{}",
        text(&out.stdout)
    );
    drop(dir);
}

#[test]
fn validate_json_prints_the_parsed_policy() {
    let out = Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .current_dir(repo())
        .args(["validate", "--budgets", "examples/budgets.toml", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["summary"]["budgets"], 6);
    assert_eq!(doc["summary"]["windows"], 7);
    assert_eq!(doc["policy"]["budgets"][0]["id"], "openai-prod");
}

/// Issue 25 item 3: a budget with five mistakes (the review's case) and a did-you-mean.
const FIVE_MISTAKES: &str = r#"version = 1

[channels]
ops-slack = { kind = "slack", secret = "file:/run/slack" }

[[budget]]
id = "prod"
scope = "openai//prod"
currency = "DOLLARS"
timezone = "America/New_Yrok"

[[budget.window]]
period = "fortnightly"
limit = "-5"
tiers = [{ name = "warning", percent = 50 }, { name = "critical", percent = 90 }]

[budget.routing]
critical = ["ops-slack"]
"#;

fn validate_file(contents: &str, extra: &[&str]) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("five.toml");
    std::fs::write(&file, contents).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .current_dir(dir.path())
        .args(["validate", "--budgets", "five.toml"])
        .args(extra)
        .output()
        .unwrap();
    (out, contents.to_string())
}

#[test]
fn validate_in_a_pipe_prints_one_line_per_error_in_line_order_with_the_help() {
    let (out, _) = validate_file(FIVE_MISTAKES, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines
            .iter()
            .map(|l| l.split(':').take(3).collect::<Vec<_>>().join(":"))
            .collect::<Vec<_>>(),
        [
            "five.toml:8:9",
            "five.toml:9:12",
            "five.toml:10:12",
            "five.toml:13:10",
            "five.toml:14:9"
        ],
        "{err}"
    );
    assert!(
        lines[2].ends_with("; help: did you mean `America/New_York`?"),
        "{err}"
    );
    assert!(!err.contains("no tier named"), "a knock-on error: {err}");
}

#[test]
fn validate_human_form_shows_the_line_a_caret_the_help_and_a_count() {
    let (out, _) = validate_file(
        &FIVE_MISTAKES.replace("scope = \"openai//prod\"", "scope = \"openai/prod\""),
        &["--message-format", "human"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let expected = "error: `America/New_Yrok` is not an IANA time zone (for example UTC, Europe/Berlin, America/New_York)
  --> five.toml:10:12
   |
10 | timezone = \"America/New_Yrok\"
   |            ^^^^^^^^^^^^^^^^^^ budget[prod].timezone
   |
   = help: did you mean `America/New_York`?";
    assert!(err.contains(expected), "{err}");
    assert!(
        err.starts_with("error: `DOLLARS` is not an ISO 4217"),
        "{err}"
    );
    assert!(
        err.trim_end()
            .ends_with("error: could not validate `five.toml` due to 4 previous errors"),
        "{err}"
    );
    // not on a terminal, and so no colour
    assert!(!err.contains('\u{1b}'), "{err}");
}

#[test]
fn validate_json_prints_the_errors_on_stdout_and_exits_2() {
    let (out, _) = validate_file(FIVE_MISTAKES, &["--json"]);
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["valid"], false);
    let errors = doc["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 5, "{doc:#}");
    assert_eq!(errors[2]["line"], 10);
    assert_eq!(errors[2]["column"], 12);
    assert_eq!(errors[2]["field"], "budget[prod].timezone");
    assert_eq!(errors[2]["help"], "did you mean `America/New_York`?");
    assert_eq!(errors[0]["help"], serde_json::Value::Null);
    assert!(
        text(&out.stderr).contains("could not validate `five.toml` due to 5 previous errors"),
        "{}",
        text(&out.stderr)
    );
}

/// Issue 25 item 2: a missing file is `error: cannot read FILE: …`, not `FILE:0:0:`.
#[test]
fn a_budgets_file_that_cannot_be_read_says_so_without_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state.db");
    let check = spendguard(&["check", "--budgets", "/nonexistent.toml"], &store);
    let validate = Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .args(["validate", "--budgets", "/nonexistent.toml"])
        .output()
        .unwrap();
    for out in [check, validate] {
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            text(&out.stderr).trim_end(),
            "error: cannot read /nonexistent.toml: No such file or directory (os error 2)"
        );
    }
}

/// Completion scripts know the subcommands and their flags.
#[test]
fn completions_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_spendguard"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        for word in [
            "demo", "invoke", "status", "kill", "restore", "ack", "budgets", "report", "scope",
        ] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
}

/// Every command explains itself, and a mistake says what to do.
#[test]
fn help_and_errors_guide_the_user() {
    let help = Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .arg("--help")
        .output()
        .unwrap();
    let help = text(&help.stdout);
    for command in [
        "demo",
        "check",
        "validate",
        "invoke",
        "status",
        "kill",
        "shutdown",
        "restore",
        "ack",
        "budgets",
        "report",
        "completions",
    ] {
        assert!(
            help.contains(&format!("  {command} ")),
            "--help lacks {command}:\n{help}"
        );
    }
    let wrong = Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .args(["invoke", "budget-chek", "--event", "x.json"])
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        text(&wrong.stderr).contains("budget-check"),
        "suggests the valid names: {}",
        text(&wrong.stderr)
    );
}

/// Issue 20 §2: a window that cannot be evaluated fails the check (exit 1), naming it; a GCP
/// budget with no notification yet stays a note.
#[test]
fn check_exits_1_when_a_window_cannot_be_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("budgets.toml");
    let name = format!("no-such-budget-{}", std::process::id());
    std::fs::write(
        &file,
        format!(
            r#"version = 1
[[budget]]
id = "aws-renamed"
scope = "aws/123456789012"
source = {{ kind = "aws_budgets", budget_name = "{name}" }}
[[budget.window]]
period = "monthly"
limit = 1000
tiers = [{{ name = "warning", percent = 80 }}]

[[budget]]
id = "gcp-quiet"
scope = "gcp/billing/01ABCD"
source = {{ kind = "gcp_budget", budget_id = "7c1e2d3f-aaaa-bbbb-cccc-1234567890ab" }}
[[budget.window]]
period = "monthly"
limit = 1000
tiers = [{{ name = "warning", percent = 80 }}]
"#
        ),
    )
    .unwrap();
    let store = dir.path().join("state.db");
    let out = spendguard(
        &[
            "check",
            "--budgets",
            file.to_str().unwrap(),
            "--aws-account-id",
            "123456789012",
        ],
        &store,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("aws-renamed"), "{stderr}");
    assert!(stderr.contains("cannot be evaluated"), "{stderr}");
    assert!(
        !stderr.contains("gcp-quiet"),
        "no notification yet is a note: {stderr}"
    );
}

/// Issue 20 §2: `validate` warns about a budget whose source reports a currency it has no
/// rate for (its windows could not be evaluated).
#[test]
fn validate_warns_about_a_currency_no_rate_converts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("budgets.toml");
    std::fs::write(
        &file,
        r#"version = 1
[[budget]]
id = "openai-eur"
scope = "openai"
currency = "EUR"
source = { kind = "openai" }
[[budget.window]]
period = "monthly"
limit = 1000
tiers = [{ name = "warning", percent = 80 }]
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .args(["validate", "--budgets", file.to_str().unwrap()])
        .output()
        .expect("run spendguard");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("openai-eur") && stderr.contains("USD"),
        "{stderr}"
    );
}

#[test]
fn the_quick_start_example_raises_no_security_finding() {
    // examples/usage.jsonl holds daily totals: read as one-minute bursts they looked like
    // 3,200 requests in one minute and raised a key-theft finding ordering `rotate_keys`
    let dir = tempfile::tempdir().unwrap();
    let mut args = EXAMPLE.to_vec();
    args.push("--json");
    let run = spendguard(&args, &dir.path().join("state.db"));
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON");
    let security = &report["security"];
    assert!(
        security["keys_watched"].as_u64().unwrap_or_default() > 0,
        "the example watches keys: {security}"
    );
    assert_eq!(
        security["findings"],
        serde_json::json!([]),
        "the README's own check must not cry theft"
    );
}

/// An embedded store whose current month has spend over a critical tier (status reads the
/// periods of now), with a key whose scope is longer than any fixed column was.
fn store_with_spend_now(dir: &Path) -> PathBuf {
    let scope = "openai/analytics-platform-team/eu-west-production";
    let budgets = dir.join("budgets.toml");
    std::fs::write(
        &budgets,
        format!(
            r#"version = 1
[defaults]
currency = "USD"
timezone = "UTC"

[[budget]]
id = "analytics-eu"
scope = "{scope}"
[[budget.window]]
period = "monthly"
limit = "100"
tiers = [{{ name = "warning", percent = 50 }}, {{ name = "critical", percent = 75 }}]

[[key]]
id = "analytics-eu-prod"
provider = "openai"
scope = "{scope}/key-1"
secret = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:spendguard/analytics"
project_id = "proj_analytics"
key_id = "key_analytics1"

[[key]]
id = "usage-signing"
provider = "secret_only"
scope = "spendguard/usage-signing"
secret = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:spendguard/usage-signing"
"#
        ),
    )
    .unwrap();
    let usage = dir.join("usage.jsonl");
    let at = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    std::fs::write(
        &usage,
        format!(
            r#"{{"id":"u1","scope":"{scope}/key-1","cost":{{"amount":"80","currency":"USD"}},"timestamp":"{at}"}}"#
        ),
    )
    .unwrap();
    let store = dir.join("state.db");
    let made = spendguard(
        &[
            "check",
            "--budgets",
            budgets.to_str().unwrap(),
            "--usage",
            usage.to_str().unwrap(),
        ],
        &store,
    );
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    store
}

/// Runs an operator command on an embedded store (they take `--store` like `check`).
fn operate(args: &[&str], store: &Path) -> Output {
    spendguard(args, store)
}

/// Issue 25 §4: `status` is tables whose columns fit their longest cell, with the budgets at
/// risk and the age of each open paging alert with how to acknowledge it.
#[test]
fn status_fits_long_scopes_and_shows_budgets_at_risk_and_alert_ages() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_spend_now(dir.path());
    let out = operate(&["status"], &store);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}{}", text(&out.stderr));
    let column = |line: &str, cell: &str| {
        let at = line
            .find(cell)
            .unwrap_or_else(|| panic!("{cell} in {line}"));
        line[..at].chars().count()
    };
    let header = shown
        .lines()
        .find(|l| l.contains("PROVIDER") && l.contains("STATUS"))
        .unwrap_or_else(|| panic!("a keys table with a header:\n{shown}"));
    for (key, status) in [("analytics-eu-prod", "active"), ("usage-signing", "active")] {
        let row = shown
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("{key}:\n{shown}"));
        assert_eq!(
            column(row, status),
            column(header, "STATUS"),
            "columns fit:\n{shown}"
        );
        assert_eq!(column(row, key), column(header, "ID"), "{shown}");
    }
    assert!(shown.contains("BUDGETS AT RISK"), "{shown}");
    let month = chrono::Utc::now().format("%b %Y").to_string();
    let at_risk = shown
        .lines()
        .find(|l| l.contains("analytics-eu") && l.contains("critical"))
        .unwrap_or_else(|| panic!("the budget at risk:\n{shown}"));
    assert!(
        at_risk.contains(&month) && at_risk.contains("80.0%"),
        "{at_risk}"
    );
    let alerts = operate(&["status", "--json"], &store);
    let alerts: serde_json::Value = serde_json::from_slice(&alerts.stdout).unwrap();
    let alert_id = alerts["open_alerts"][0]["alert_id"].as_str().unwrap();
    let header = shown
        .lines()
        .find(|l| l.contains("ALERT") && l.contains("OPENED"))
        .unwrap_or_else(|| panic!("open alerts with a header:\n{shown}"));
    let alert = shown
        .lines()
        .find(|l| l.contains(alert_id))
        .unwrap_or_else(|| panic!("the open alert:\n{shown}"));
    // raised by the check a moment ago
    assert_eq!(
        column(alert, "just now"),
        column(header, "OPENED"),
        "{shown}"
    );
    assert!(alert.contains("critical"), "{alert}");
    assert!(
        shown.contains("spendguard ack"),
        "how to acknowledge:\n{shown}"
    );
}

/// Issue 25 §2 and §4: acknowledging an alert is audited (actor and reason) and `audit` shows
/// it; an unknown id is invalid input (exit 2) that says where the open alerts are.
#[test]
fn an_acknowledgement_is_audited_and_an_unknown_id_is_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_spend_now(dir.path());
    let status = operate(&["status", "--json"], &store);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let alert_id = status["open_alerts"][0]["alert_id"].as_str().unwrap();

    let ack = operate(&["ack", alert_id, "--reason", "planned re-index"], &store);
    let said = text(&ack.stdout);
    assert_eq!(ack.status.code(), Some(0), "{said}{}", text(&ack.stderr));
    assert!(
        said.contains(&format!("Acknowledged alert {alert_id}")),
        "{said}"
    );

    let audit = operate(&["audit", "--json", "--actor", "cli:"], &store);
    assert_eq!(audit.status.code(), Some(0), "{}", text(&audit.stderr));
    let audit: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    assert_eq!(audit["schema_version"], 1);
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "alert_acknowledged")
        .unwrap_or_else(|| panic!("the acknowledgement is audited: {audit}"));
    assert!(entry["actor"].as_str().unwrap().starts_with("cli:"));
    assert_eq!(entry["detail"]["alert_id"], alert_id);
    assert_eq!(entry["detail"]["reason"], "planned re-index");
    assert_eq!(
        entry["scope"],
        "openai/analytics-platform-team/eu-west-production"
    );
    let table = operate(
        &[
            "audit",
            "--scope",
            "openai/analytics-platform-team",
            "--since",
            "2026-01-01",
        ],
        &store,
    );
    let shown = text(&table.stdout);
    assert_eq!(table.status.code(), Some(0), "{}", text(&table.stderr));
    assert!(
        shown
            .lines()
            .any(|l| l.contains("alert_acknowledged") && l.contains("planned re-index")),
        "{shown}"
    );
    // a second acknowledgement changes nothing, says who acknowledged, and is not audited
    let again = operate(&["ack", alert_id, "--reason", "me too"], &store);
    let said = text(&again.stdout);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{said}{}",
        text(&again.stderr)
    );
    assert!(said.contains("already acknowledged by cli:"), "{said}");
    let audit = operate(&["audit", "--json", "--actor", "cli:"], &store);
    let audit: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    let acks = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "alert_acknowledged")
        .count();
    assert_eq!(
        acks, 1,
        "only the acknowledgement that counted is audited: {audit}"
    );
    let nobody = operate(&["audit", "--json", "--actor", "nobody"], &store);
    let nobody: serde_json::Value = serde_json::from_slice(&nobody.stdout).unwrap();
    assert_eq!(nobody["entries"], serde_json::json!([]), "{nobody}");

    let unknown = operate(&["ack", "deadbeef"], &store);
    let err = text(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: no open alert with id deadbeef")
            && err.contains("spendguard status"),
        "{err}"
    );
    assert!(!err.contains("UnknownAlert"), "{err}");
}

#[test]
fn the_alert_count_includes_security_findings_and_a_one_minute_burst_is_one() {
    // the example's usage plus one record with no `covers_minutes`: 2,600 requests in one minute
    let dir = tempfile::tempdir().unwrap();
    let usage = dir.path().join("usage.jsonl");
    let mut lines = std::fs::read_to_string(repo().join("examples/usage.jsonl")).unwrap();
    lines.push_str(r#"{"id":"burst-1","scope":"openai/dev/key-dev1","model":"gpt-4o","requests":2600,"cost":{"amount":"0.50","currency":"USD"},"timestamp":"2026-11-20T17:30:00Z"}"#);
    lines.push('\n');
    std::fs::write(&usage, lines).unwrap();
    let mut args = EXAMPLE.to_vec();
    args[4] = usage.to_str().unwrap();
    let run = spendguard(&args, &dir.path().join("state.db"));
    let out = text(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{out}\n{}", text(&run.stderr));
    assert!(
        out.contains("Alerts: 7 raised now (6 budget, 1 security)"),
        "{out}"
    );
    assert_eq!(
        out.matches("▲").count(),
        7,
        "every alert listed is counted: {out}"
    );
    assert!(out.contains("2600 requests in one minute"), "{out}");
}

/// `check` with an OpenAI admin key reads the provider's own ledgers (the usage stand-in
/// here): a key whose hour OpenAI counted at 3x what its application reported is one
/// `unreported_spend` finding, and a price book at twice OpenAI's charge for gpt-4o on the
/// settled day before is one `price_book_drift` warning naming the model, in JSON and in the
/// table; `status` lists both afterwards. Dated from the wall clock: `status` looks at the
/// last seven days; the check runs 20 minutes after the key's hour ended (an hour is judged
/// once it has ended and had its grace for late reports).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_status_show_unreported_spend_and_price_book_drift() {
    use chrono::{Duration, DurationRound, Utc};
    use spendguard_tests::usage_apis::{OPENAI_ADMIN_KEY, UsageLedger, usage_standin};
    let hour = Utc::now().duration_trunc(Duration::hours(1)).unwrap() - Duration::hours(2);
    let now = hour + Duration::minutes(80);
    let dir = tempfile::tempdir().unwrap();
    let budgets = dir.path().join("budgets.toml");
    std::fs::write(
        &budgets,
        r#"version = 1

[prices."openai/gpt-4o"]
input = "5.00"
output = "20.00"

[[key]]
id = "app-key"
provider = "openai"
scope = "openai/prod/key-app"
key_id = "key_app"
project_id = "proj_app"
allow_delete = true
"#,
    )
    .unwrap();
    let usage = dir.path().join("usage.jsonl");
    std::fs::write(
        &usage,
        format!(
            r#"{{"id":"r1","scope":"openai/prod/key-app","requests":40,"cost":{{"amount":"10.00","currency":"USD"}},"timestamp":"{}"}}
"#,
            (hour + Duration::minutes(10)).to_rfc3339()
        ),
    )
    .unwrap();
    let key_file = dir.path().join("openai-admin-key");
    std::fs::write(&key_file, OPENAI_ADMIN_KEY).unwrap();
    let ledger = std::sync::Arc::new(UsageLedger::default());
    ledger.key_in_project("key_app", "proj_app");
    // at the book's 5.00 per million, 6M tokens is 30 USD: 3x the 10 USD reported
    ledger.add(
        "completions",
        "key_app",
        "gpt-4o",
        hour,
        &[("input_tokens", 6_000_000), ("num_model_requests", 40)],
        hour + Duration::minutes(5),
    );
    // the last settled day: 4M tokens, 20 USD at the book, charged 10
    let day = ((now - Duration::hours(6)).date_naive() - Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    ledger.add(
        "completions",
        "key_app",
        "gpt-4o",
        day + Duration::hours(9),
        &[("input_tokens", 4_000_000), ("num_model_requests", 10)],
        day + Duration::hours(10),
    );
    ledger.charge("proj_app", "gpt-4o, input", day, "10.0");
    ledger.set_now(now);
    let standin = usage_standin(ledger).await;
    let run = |store: &Path, json: bool| {
        let mut args = vec![
            "check".to_string(),
            "--budgets".into(),
            budgets.display().to_string(),
            "--usage".into(),
            usage.display().to_string(),
            "--openai-admin-key-file".into(),
            key_file.display().to_string(),
            "--now".into(),
            now.to_rfc3339(),
            "--store".into(),
            store.display().to_string(),
        ];
        if json {
            args.push("--json".into());
        }
        Command::new(env!("CARGO_BIN_EXE_spendguard"))
            .args(&args)
            .env("SPENDGUARD_OPENAI_API_URL", &standin.url)
            .output()
            .expect("run spendguard")
    };
    let json_store = dir.path().join("json.db");
    let json_run = run(&json_store, true);
    let (out, err) = (text(&json_run.stdout), text(&json_run.stderr));
    assert_eq!(json_run.status.code(), Some(0), "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let findings = report["security"]["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{out}");
    assert_eq!(
        findings[0]["detectors"],
        serde_json::json!(["unreported_spend"])
    );
    assert_eq!(findings[0]["key_id"], "app-key");
    let drift = report["security"]["price_book_drift"].as_array().unwrap();
    assert_eq!(drift.len(), 1, "{out}");
    assert_eq!(drift[0]["model"], "gpt-4o");
    assert_eq!(drift[0]["scope"], "proj_app");
    assert!(
        !out.contains(OPENAI_ADMIN_KEY),
        "the admin key never reaches output"
    );

    let table_run = run(&dir.path().join("table.db"), false);
    let (out, err) = (text(&table_run.stdout), text(&table_run.stderr));
    assert_eq!(table_run.status.code(), Some(0), "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "▲ SECURITY MEDIUM: key app-key (openai/prod/key-app) in the hour from {}: the provider counted 30.00 USD (completions 6000000 tokens; 3x the reported), the applications reported 10.00 USD",
            hour.format("%-d %b %Y %H:00 UTC")
        )),
        "{out}"
    );
    let drift_line = format!(
        "price book drift: gpt-4o on {} in proj_app: priced 20.00 USD at the price book, charged 10.00 USD by the provider (2x)",
        day.date_naive()
    );
    assert!(out.contains(&format!("  ! {drift_line}")), "{out}");
    assert!(!out.contains(OPENAI_ADMIN_KEY) && !err.contains(OPENAI_ADMIN_KEY));

    let status = spendguard(&["status", "--json"], &json_store);
    let (out, err) = (text(&status.stdout), text(&status.stderr));
    assert_eq!(status.status.code(), Some(0), "{out}\n{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut kinds: Vec<(&str, &str)> = status["ledgers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), l["subject"].as_str().unwrap()))
        .collect();
    // both written by the same run at the same time: in either order
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("price_book_drift", "gpt-4o"),
            ("unreported_spend", "app-key")
        ],
        "{out}"
    );
    let table = spendguard(&["status"], &json_store);
    let out = text(&table.stdout);
    assert!(out.contains("LEDGERS (last 7 days"), "{out}");
    assert!(out.contains(&drift_line), "{out}");
}

/// `check` shows hourly and rolling windows by what they cover, never by a store key, and a
/// burst over the rolling limit raises its alert once across runs.
#[test]
fn check_shows_hourly_and_rolling_windows_as_people_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let (store, budgets, usage) = (
        dir.path().join("state.db"),
        dir.path().join("budgets.toml"),
        dir.path().join("usage.jsonl"),
    );
    std::fs::write(
        &budgets,
        r#"version = 1
[[budget]]
id = "agents"
scope = "openai/agents"
[[budget.window]]
period = "hourly"
limit = 100
tiers = [{ name = "warning", percent = 80 }]
[[budget.window]]
period = "rolling"
minutes = 60
limit = 50
tiers = [{ name = "critical", percent = 100 }]
"#,
    )
    .unwrap();
    std::fs::write(
        &usage,
        concat!(
            r#"{"id":"a","scope":"openai/agents/loop","cost":{"amount":"30","currency":"USD"},"timestamp":"2026-11-20T02:50:00Z"}"#,
            "\n",
            r#"{"id":"b","scope":"openai/agents/loop","cost":{"amount":"25","currency":"USD"},"timestamp":"2026-11-20T03:10:00Z"}"#,
            "\n"
        ),
    )
    .unwrap();
    let run = |now: &str| {
        let args = [
            "check",
            "--budgets",
            budgets.to_str().unwrap(),
            "--usage",
            usage.to_str().unwrap(),
            "--now",
            now,
        ];
        spendguard(&args, &store)
    };
    let first = run("2026-11-20T03:17:00Z");
    let out = text(&first.stdout);
    assert_eq!(first.status.code(), Some(0), "{out}{}", text(&first.stderr));
    let row = |window: &str| {
        out.lines()
            .find(|l| l.starts_with("agents") && l.contains(window))
            .unwrap_or_else(|| panic!("no {window} row:\n{out}"))
            .to_string()
    };
    assert!(row("hourly").contains("the hour from 03:00 UTC"), "{out}");
    assert!(row("rolling_60m").contains("the last 60 minutes"), "{out}");
    assert!(row("rolling_60m").contains("rolls every minute"), "{out}");
    assert!(!out.contains("R60#") && !out.contains("H#"), "{out}");
    assert!(out.contains("1 raised now"), "{out}");
    // the same records again ten minutes later: the same crossing, nothing new
    let again = run("2026-11-20T03:27:00Z");
    let out = text(&again.stdout);
    assert!(out.contains("0 raised now"), "{out}");
}
