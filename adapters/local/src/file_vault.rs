//! Secrets read from local files (`file:<path>`): how the CLI runs the functions without AWS.

use async_trait::async_trait;
use spendguard_app::ports::secrets::SecretError;
use spendguard_app::ports::secrets::SecretVault;
use spendguard_domain::secret::Secret;

/// Local files: `file:<path>` or a plain path; the whole file (trimmed) is the secret.
pub struct FileVault;

#[async_trait]
impl SecretVault for FileVault {
    async fn read(&self, reference: &str) -> Result<Secret, SecretError> {
        let path = reference.strip_prefix("file:").unwrap_or(reference);
        std::fs::read_to_string(path)
            .map(|s| Secret::new(s.trim()))
            .map_err(|e| SecretError {
                reference: reference.to_string(),
                message: e.to_string(),
            })
    }
}
