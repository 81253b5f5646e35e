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
    assert!(text(&out.stdout).contains("Dry run: 6 alerts would be raised"));
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
