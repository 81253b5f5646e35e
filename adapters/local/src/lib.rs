//! spendguard-local: the adapters that need no cloud — the embedded SQLite store, secrets in
//! local files, and an alert bus in memory. The CLI, the demo and the tests run the functions
//! on them; no deployed function links them.

pub mod file_vault;
pub mod memory_bus;
pub mod outbox;
pub mod secrets_file;
pub mod sqlite;
