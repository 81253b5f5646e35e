//! The whole suite's logs, searched for its secrets. When `SPENDGUARD_TEST_LOGS` names a folder
//! (`scripts/test` sets it), every test binary that uses this crate writes all its log lines
//! (spendguard's at TRACE, its dependencies' at DEBUG) to `<folder>/<binary>-<pid>.log`, and
//! every secret value
//! a test hands to the code under test to `<folder>/secrets-<pid>.txt`. After the suite,
//! `tests/python/scan_logs.py` searches every line for every secret.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

fn folder() -> Option<PathBuf> {
    std::env::var_os("SPENDGUARD_TEST_LOGS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Installs this binary's log file writer once. A binary that installed its own subscriber
/// first (tests/tests/secrets_in_logs.rs searches its logs in memory) keeps it.
pub fn capture() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let Some(folder) = folder() else { return };
        let binary = std::env::current_exe()
            .ok()
            .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "tests".into());
        let path = folder.join(format!("{binary}-{}.log", std::process::id()));
        let file = File::create(&path).expect("create the test log file");
        // TRACE for spendguard's code, DEBUG for its dependencies (at TRACE, HTTP and TLS
        // libraries log every frame, slowing the suite; the demo test searches those too)
        let filter = tracing_subscriber::EnvFilter::new(
            "debug,spendguard_domain=trace,spendguard_app=trace,spendguard_aws=trace,spendguard_http=trace,spendguard_local=trace,spendguard_tests=trace,budget_check=trace,\
             alert_fanout=trace,key_guard=trace,budget_webhook=trace,daily_aggregate=trace",
        );
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(Mutex::new(file))
            .with_ansi(false)
            .try_init();
    });
}

/// Records a secret value the code under test is given, for the search after the suite.
pub fn secret_used(value: &str) {
    static FILE: OnceLock<Option<Mutex<File>>> = OnceLock::new();
    let file = FILE.get_or_init(|| {
        let path = folder()?.join(format!("secrets-{}.txt", std::process::id()));
        Some(Mutex::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open the secrets list"),
        ))
    });
    if let Some(file) = file {
        // one JSON string per line: values may hold newlines (PEM keys, JSON)
        let line = serde_json::to_string(value).expect("a string serialises");
        writeln!(file.lock().unwrap(), "{line}").expect("append to the secrets list");
    }
}
