//! `budgets plan`, `apply` and `export` on an embedded store (issue 25 item 3): terraform's
//! detailed exit codes, an audited apply, and an export that reads back as what was applied.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};
use spendguard_app::ports::store::{AuditLog, PolicyStore};
use spendguard_domain::budgets_file::load_budgets_file;
use spendguard_domain::period::YearMonth;
use spendguard_domain::settings::PolicySet;
use spendguard_local::sqlite::SqliteStore;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A policy in the order the store keeps it: budgets and keys by id.
fn by_id(path: &Path) -> PolicySet {
    let mut policy = load_budgets_file(path).unwrap_or_else(|e| panic!("{e}"));
    policy.budgets.sort_by(|a, b| a.id.cmp(&b.id));
    policy.keys.sort_by(|a, b| a.id.cmp(&b.id));
    policy
}

/// Runs `spendguard` in `dir` as a script would: no terminal, `USER` set.
fn spendguard(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .current_dir(dir)
        .args(args)
        .env("USER", "alice")
        .env_remove("SPENDGUARD_TABLE")
        .stdin(Stdio::null())
        .output()
        .expect("run spendguard")
}

/// A directory with an embedded store holding the example's policy, and the example itself
/// as `budgets.toml` and, with the prod monthly limit raised, as `raised.toml`.
fn deployed() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(repo().join("examples/budgets.toml")).unwrap();
    std::fs::write(dir.path().join("budgets.toml"), &example).unwrap();
    let raised = example.replacen("limit = \"2000\"", "limit = \"2500\"", 1);
    assert_ne!(raised, example);
    std::fs::write(dir.path().join("raised.toml"), raised).unwrap();
    let out = spendguard(
        dir.path(),
        &["check", "--budgets", "budgets.toml", "--store", "st.db"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    dir
}

#[test]
fn plan_exits_0_without_changes_2_with_changes_and_1_on_any_error() {
    let dir = deployed();
    let d = dir.path();

    let same = spendguard(d, &["budgets", "plan", "budgets.toml", "--store", "st.db"]);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same.stderr));
    assert!(
        text(&same.stdout).contains("no changes"),
        "{}",
        text(&same.stdout)
    );

    let raised = spendguard(d, &["budgets", "plan", "raised.toml", "--store", "st.db"]);
    assert_eq!(raised.status.code(), Some(2), "{}", text(&raised.stderr));
    assert!(
        text(&raised.stdout)
            .contains("~ budget.openai-prod.windows[0].limit: \"2000\" -> \"2500\""),
        "{}",
        text(&raised.stdout)
    );
    assert!(text(&raised.stderr).contains("1 change(s) to apply"));
    // a plan writes nothing: the same plan again still has the change
    let again = spendguard(d, &["budgets", "plan", "raised.toml", "--store", "st.db"]);
    assert_eq!(again.status.code(), Some(2));

    std::fs::write(d.join("broken.toml"), "version = 1\n[default]\n").unwrap();
    let broken = spendguard(d, &["budgets", "plan", "broken.toml", "--store", "st.db"]);
    assert_eq!(broken.status.code(), Some(1), "an invalid file is an error");
    assert!(
        text(&broken.stderr).contains("broken.toml:2:2: default: unknown field `default`"),
        "{}",
        text(&broken.stderr)
    );
    let missing = spendguard(d, &["budgets", "plan", "none.toml", "--store", "st.db"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).starts_with("error: cannot read none.toml: No such file"),
        "{}",
        text(&missing.stderr)
    );
    let no_store = spendguard(d, &["budgets", "plan", "budgets.toml", "--store", "no.db"]);
    assert_eq!(
        no_store.status.code(),
        Some(1),
        "{}",
        text(&no_store.stderr)
    );
}

#[tokio::test]
async fn apply_is_audited_with_the_operator_the_files_hash_and_the_change_count() {
    let dir = deployed();
    let d = dir.path();
    // without a terminal and without --yes: nothing written, exit 2 (documented)
    let unconfirmed = spendguard(d, &["budgets", "apply", "raised.toml", "--store", "st.db"]);
    assert_eq!(unconfirmed.status.code(), Some(2));
    let missing = spendguard(
        d,
        &["budgets", "apply", "none.toml", "--store", "st.db", "--yes"],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).starts_with("error: cannot read none.toml"));

    let applied = spendguard(
        d,
        &[
            "budgets",
            "apply",
            "raised.toml",
            "--store",
            "st.db",
            "--yes",
        ],
    );
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied.stderr));

    let store = SqliteStore::open(&d.join("st.db")).unwrap();
    let month = YearMonth::of(chrono::Utc::now().date_naive());
    let log = store.audit_log(month, 100).await.unwrap();
    let applies: Vec<_> = log.iter().filter(|e| e.action == "budgets_apply").collect();
    assert_eq!(
        applies.len(),
        1,
        "the unconfirmed apply is not audited: {log:#?}"
    );
    let entry = applies[0];
    assert_eq!(entry.actor, "cli:alice");
    let file = std::fs::read(d.join("raised.toml")).unwrap();
    assert_eq!(entry.detail["sha256"], hex::encode(Sha256::digest(&file)));
    assert_eq!(entry.detail["changes"], 1);
    assert_eq!(entry.detail["file"], "raised.toml");
    assert!(store.load_policy().await.unwrap() == by_id(&d.join("raised.toml")));
}

#[test]
fn export_writes_the_deployed_policy_as_a_file_that_validates_and_plans_no_change() {
    let dir = deployed();
    let d = dir.path();
    let applied = spendguard(
        d,
        &[
            "budgets",
            "apply",
            "raised.toml",
            "--store",
            "st.db",
            "--yes",
        ],
    );
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied.stderr));

    let export = spendguard(
        d,
        &[
            "budgets",
            "export",
            "--store",
            "st.db",
            "--out",
            "exported.toml",
        ],
    );
    assert_eq!(export.status.code(), Some(0), "{}", text(&export.stderr));
    assert!(by_id(&d.join("exported.toml")) == by_id(&d.join("raised.toml")));
    let validate = spendguard(d, &["validate", "--budgets", "exported.toml"]);
    assert_eq!(
        validate.status.code(),
        Some(0),
        "{}",
        text(&validate.stderr)
    );
    let plan = spendguard(d, &["budgets", "plan", "exported.toml", "--store", "st.db"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stdout));

    // without --out, the same file on stdout
    let stdout = spendguard(d, &["budgets", "export", "--store", "st.db"]);
    assert_eq!(stdout.status.code(), Some(0));
    assert_eq!(
        text(&stdout.stdout).trim_end(),
        std::fs::read_to_string(d.join("exported.toml"))
            .unwrap()
            .trim_end()
    );
}

#[test]
fn apply_says_a_file_cannot_be_read_before_asking_for_a_target() {
    // the file is the operator's first mistake to hear about, whatever the target
    let dir = tempfile::tempdir().unwrap();
    let out = spendguard(dir.path(), &["budgets", "apply", "missing.toml", "--yes"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot read missing.toml"), "{err}");
}

#[tokio::test]
async fn audit_until_finds_older_entries_behind_newer_ones_of_the_same_month() {
    use spendguard_app::ports::store::AuditLog as _;
    use spendguard_domain::records::AuditEntry;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("st.db");
    let store = SqliteStore::open(&path).unwrap();
    let entry = |n: usize, at: &str| AuditEntry {
        id: format!("e-{n}"),
        at: chrono::DateTime::parse_from_rfc3339(at).unwrap().to_utc(),
        actor: "cli:alice".into(),
        action: "test_entry".into(),
        scope: None,
        detail: serde_json::json!({}),
    };
    // 60 entries on 20 Nov hide 5 on 5 Nov from a reader that fetches only the newest 50
    for n in 0..60 {
        store
            .append_audit(&entry(n, "2026-11-20T12:00:00Z"))
            .await
            .unwrap();
    }
    for n in 60..65 {
        store
            .append_audit(&entry(n, "2026-11-05T12:00:00Z"))
            .await
            .unwrap();
    }
    let audit = |until: &str| {
        let out = spendguard(
            dir.path(),
            &["audit", "--until", until, "--store", "st.db", "--json"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["entries"].as_array().unwrap().len()
    };
    assert_eq!(audit("2026-11-10"), 5);
    // an `--until` at the start of a month reads the month before it
    assert_eq!(audit("2026-11-01"), 0);
}
