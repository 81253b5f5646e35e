//! The binary as scripts and incident shells meet it: a closed pipe is quiet and keeps the exit code, and
//! AWS credential or region problems are one line with the fix.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `spendguard` with its stdout a pipe whose reader is already gone, as after
/// `| head -c1` or `| grep -q` has read what it needed: every write fails with a broken pipe.
fn into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .current_dir(repo())
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run spendguard")
}

/// Runs `spendguard` with stdout and stderr both into one pipe whose reader is gone, as after
/// `2>&1 | grep -q`. Only the exit status is left to see.
fn all_into_closed_pipe(args: &[&str]) -> std::process::ExitStatus {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .current_dir(repo())
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer.try_clone().expect("pipe"))
        .stderr(writer)
        .status()
        .expect("run spendguard")
}

#[test]
fn a_closed_pipe_on_stderr_keeps_the_exit_code_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state.db");
    let store = store.to_str().unwrap();
    let made = run(&[
        "check",
        "--budgets",
        "examples/budgets.toml",
        "--store",
        store,
    ]);
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    // a kill that stops nothing warns on stderr and exits 4; invalid input errs and exits 2
    let kill = [
        "kill",
        "--scope",
        "openai/nobody",
        "--reason",
        "x",
        "--yes",
        "--store",
        store,
    ];
    assert_eq!(all_into_closed_pipe(&kill).code(), Some(4));
    let invalid = [
        "validate",
        "--budgets",
        "domain/tests/budgets/invalid/negative-limit.toml",
    ];
    assert_eq!(all_into_closed_pipe(&invalid).code(), Some(2));
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .current_dir(repo())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run spendguard")
}

/// Issue 25 §1: every command that prints JSON, piped into a reader that stopped reading,
/// exits 0 without a panic (it aborted with exit 134 under `panic = "abort"`).
#[test]
fn every_json_output_survives_a_closed_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state.db");
    let store = store.to_str().unwrap();
    let demo = dir.path().join("demo");
    let made = run(&[
        "check",
        "--budgets",
        "examples/budgets.toml",
        "--usage",
        "examples/usage.jsonl",
        "--now",
        "2026-11-20T18:00:00Z",
        "--store",
        store,
    ]);
    assert_eq!(made.status.code(), Some(0), "{}", text(&made.stderr));
    // a month with nightly summaries for the report: the demo's store
    let month = dir.path().join("month");
    let demo_month = run(&["demo", "--out", month.to_str().unwrap()]);
    assert_eq!(
        demo_month.status.code(),
        Some(0),
        "{}",
        text(&demo_month.stderr)
    );
    let month_store = month.join("state.db");
    let month_store = month_store.to_str().unwrap();
    let status = run(&["status", "--json", "--store", store]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let alert_id = status["open_alerts"][0]["alert_id"]
        .as_str()
        .expect("the check left an open paging alert")
        .to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec![
            "check",
            "--budgets",
            "examples/budgets.toml",
            "--now",
            "2026-11-20T18:00:00Z",
            "--store",
            store,
        ],
        vec!["validate", "--budgets", "examples/budgets.toml"],
        vec!["status", "--store", store],
        vec!["drill", "--store", store],
        vec![
            "kill",
            "--scope",
            "openai/pipe-test",
            "--reason",
            "pipe test",
            "--yes",
            "--store",
            store,
        ],
        vec![
            "shutdown",
            "--scope",
            "openai/pipe-test",
            "--reason",
            "pipe test",
            "--dry-run",
            "--store",
            store,
        ],
        vec![
            "restore",
            "--scope",
            "openai/pipe-test",
            "--yes",
            "--store",
            store,
        ],
        vec!["ack", &alert_id, "--store", store],
        vec![
            "report",
            "--scope",
            "anthropic/research",
            "--month",
            "2026-11",
            "--store",
            month_store,
        ],
        vec!["audit", "--month", "2026-11", "--store", store],
        vec!["demo", "--out", demo.to_str().unwrap()],
    ];
    for mut args in commands {
        args.push("--json");
        let out = into_closed_pipe(&args);
        let err = text(&out.stderr);
        // the command's own exit code survives: a kill under a scope with no keys stops
        // nothing (4), and the drill finds stops the example's keys could not carry out (5)
        let expected = match args[0] {
            "kill" => 4,
            "drill" => 5,
            _ => 0,
        };
        assert_eq!(out.status.code(), Some(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// Runs `spendguard` with no AWS configuration at all: no credentials or region in the
/// environment, empty AWS config files, no instance metadata, a fresh home; plus `env`.
fn without_aws(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let empty = home.join("empty");
    std::fs::write(&empty, "").unwrap();
    Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .env_clear()
        .env("HOME", home)
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run spendguard")
}

/// One short line on stderr that names `fix`, and exit 1.
fn one_line_naming(out: &Output, fix: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.len() < 300, "{} bytes: {err}", err.len());
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(fix), "names the fix `{fix}`: {err}");
}

/// Issue 25 §2: missing credentials, a missing region and an unknown profile are one line
/// with the fix (the SDK's error chain printed 3.5 KB of debug dumps).
#[test]
fn aws_configuration_problems_are_one_line_with_the_fix() {
    let home = tempfile::tempdir().unwrap();
    let status = ["status", "--table", "spendguard-state"];
    let region = [("AWS_REGION", "us-east-1")];
    one_line_naming(&without_aws(home.path(), &status, &region), "aws configure");
    let keys = [
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
    ];
    one_line_naming(&without_aws(home.path(), &status, &keys), "--region");
    let mut profile = status.to_vec();
    profile.extend(["--profile", "nosuch", "--region", "eu-west-1"]);
    let out = without_aws(home.path(), &profile, &[]);
    one_line_naming(&out, "nosuch");
    assert!(text(&out.stderr).contains("aws sso login --profile nosuch"));
}

/// DynamoDB's answer to a request signed with an expired session token.
async fn expired_token_standin() -> String {
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    // DynamoDB judges a token only on a well-formed, SigV4-signed JSON call: anything else gets
    // the error it would get there, so a client that sends garbage cannot pass for "expired"
    let app = axum::Router::new().fallback(|method: Method, uri: Uri, headers: HeaderMap| async move {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        let error = |kind: &str, message: &str| {
            (
                StatusCode::BAD_REQUEST,
                [("content-type", "application/x-amz-json-1.0")],
                format!(r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{kind}","message":"{message}"}}"#),
            )
        };
        if method != Method::POST || uri.path() != "/" {
            return error("UnknownOperationException", "not a DynamoDB call");
        }
        if !header("x-amz-target").starts_with("DynamoDB_20120810.")
            || header("content-type") != "application/x-amz-json-1.0"
        {
            return error("UnknownOperationException", "no DynamoDB operation");
        }
        if !header("authorization").starts_with("AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/") {
            return error("MissingAuthenticationTokenException", "Request is missing Authentication Token");
        }
        if header("x-amz-security-token") != "expired" {
            return error("UnrecognizedClientException", "The security token included in the request is invalid.");
        }
        error("ExpiredTokenException", "The security token included in the request is expired")
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Issue 25 §2: credentials AWS refuses as expired say how to sign in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_one_line_with_the_fix() {
    let url = expired_token_standin().await;
    // the stand-in calls a token expired only on a signed DynamoDB call
    let unsigned = reqwest::Client::new()
        .post(&url)
        .header("x-amz-target", "DynamoDB_20120810.Query")
        .header("content-type", "application/x-amz-json-1.0")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 400);
    assert!(
        unsigned
            .text()
            .await
            .unwrap()
            .contains("MissingAuthenticationToken")
    );
    let home = tempfile::tempdir().unwrap();
    let out = without_aws(
        home.path(),
        &[
            "status",
            "--table",
            "spendguard-state",
            "--region",
            "us-east-1",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "expired"),
            ("AWS_ENDPOINT_URL", &url),
        ],
    );
    one_line_naming(&out, "aws sso login");
    assert!(text(&out.stderr).contains("expired"));
}
