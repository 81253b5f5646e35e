//! The conformance suite on the embedded SQLite store (a fresh file per test).

use std::sync::Arc;

use spendguard_local::sqlite::SqliteStore;
use spendguard_tests::conformance::Store;

async fn fresh() -> Store {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.db");
    // keep the directory for the life of the test process
    std::mem::forget(dir);
    Arc::new(SqliteStore::open(&path).expect("open sqlite store"))
}

spendguard_tests::conformance_suite!(fresh());
spendguard_tests::detection_suite!(fresh());

// The incident lifecycle against its reference model (tests/src/incidents.rs): 2,000 cases.
spendguard_tests::incident_model!(
    incident_lifecycle_matches_its_model,
    Arc::new(SqliteStore::in_memory().expect("in-memory sqlite")) as Store,
    2_000
);
