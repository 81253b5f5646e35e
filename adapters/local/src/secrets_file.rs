//! Named secrets for `spendguard serve`: a TOML file of `name = "value"` that only its owner
//! may read, then the environment by the same name. Budgets files and the functions' variables
//! refer to them as `local:<name>`; `file:<path>` references still read a file.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use spendguard_app::ports::secrets::{SecretError, SecretVault};
use spendguard_domain::secret::Secret;

use crate::file_vault::FileVault;

/// A secrets file, read once at start.
#[derive(Default)]
pub struct SecretsFile {
    path: Option<PathBuf>,
    values: BTreeMap<String, Secret>,
}

impl SecretsFile {
    /// Reads `path`, refusing a file its group or others may read (or write): the error names
    /// the file and its mode. Values are never part of an error.
    pub fn load(path: &Path) -> Result<SecretsFile, String> {
        SecretsFile::load_with(path, std::env::var_os("CREDENTIALS_DIRECTORY").as_deref())
    }

    /// As `load`, with systemd's credentials directory of this service, if any.
    fn load_with(path: &Path, credentials: Option<&OsStr>) -> Result<SecretsFile, String> {
        let shown = path.display();
        let systemd_credential = credentials.is_some_and(|dir| in_directory(path, Path::new(dir)));
        let text = read_private(path, systemd_credential)
            .map_err(|e| format!("--secrets {shown}: {e}"))?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            // the parser's message quotes the line, which may hold a secret: keep its position only
            let at = e
                .span()
                .map(|s| format!(" at byte {}", s.start))
                .unwrap_or_default();
            format!("--secrets {shown}: not a TOML file of name = \"value\"{at}")
        })?;
        let mut values = BTreeMap::new();
        for (name, value) in table {
            match value {
                toml::Value::String(v) if !v.trim().is_empty() => {
                    values.insert(name, Secret::new(v.trim()));
                }
                _ => {
                    return Err(format!(
                        "--secrets {shown}: `{name}` must be a non-empty string (name = \"value\")"
                    ));
                }
            }
        }
        Ok(SecretsFile {
            path: Some(path.to_path_buf()),
            values,
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }
}

/// Whether `path` is a file directly in `dir` (both resolved).
fn in_directory(path: &Path, dir: &Path) -> bool {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    match (
        parent.unwrap_or(Path::new(".")).canonicalize(),
        dir.canonicalize(),
    ) {
        (Ok(parent), Ok(dir)) => parent == dir,
        _ => false,
    }
}

/// Opens `path` once — not through a symbolic link — and checks that very file (mode: its owner
/// only; owner: the running user) before reading it, so nothing can be swapped in between. A
/// systemd credential is root's, mode 0400 plus an ACL entry for the service's user (shown as
/// 0440): systemd keeps its directory private to the service, so its mode and owner are taken.
fn read_private(path: &Path, systemd_credential: bool) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => "a symbolic link; name the file itself".to_string(),
            _ => e.to_string(),
        })?;
    if !systemd_credential {
        let meta = file.metadata().map_err(|e| e.to_string())?;
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "mode {mode:04o} lets others read it; only its owner may (chmod 600 {})",
                path.display()
            ));
        }
        // SAFETY: geteuid has no preconditions and cannot fail
        let user = unsafe { libc::geteuid() };
        if meta.uid() != user {
            return Err(format!(
                "owned by uid {}, not by the user serve runs as (uid {user})",
                meta.uid()
            ));
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

/// Reads `local:<name>` from the secrets file, then the environment variable `<name>`;
/// `file:<path>` from the file.
pub struct LocalVault {
    pub secrets: SecretsFile,
}

#[async_trait]
impl SecretVault for LocalVault {
    async fn read(&self, reference: &str) -> Result<Secret, SecretError> {
        if reference.starts_with("arn:") {
            return Err(SecretError {
                reference: reference.to_string(),
                message: "a Secrets Manager ARN needs the AWS deployment; here name the secret local:<name> (the secrets file or the environment) or file:<path>".into(),
            });
        }
        let Some(name) = reference.strip_prefix("local:") else {
            return FileVault.read(reference).await;
        };
        if let Some(value) = self.secrets.values.get(name) {
            return Ok(value.clone());
        }
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim())),
            _ => Err(SecretError {
                reference: reference.to_string(),
                message: format!(
                    "no secret `{name}` in {} nor in the environment",
                    self.secrets
                        .path
                        .as_ref()
                        .map(|p| format!("the secrets file {}", p.display()))
                        .unwrap_or_else(|| "a secrets file (none given)".into())
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(mode: u32, text: &str) -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[test]
    fn a_symlink_to_a_private_file_is_refused() {
        let (dir, path) = file(0o600, "ops-slack = \"https://hooks.example/x\"\n");
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = SecretsFile::load(&link).err().unwrap();
        assert!(err.contains("link.toml"), "{err}");
        assert!(err.contains("symbolic link"), "{err}");
    }

    /// systemd hands `LoadCredential=` files over root-owned, mode 0400, with an ACL entry for
    /// the service's user: `stat` shows the ACL's mask as group bits (0440). Its credentials
    /// directory is private to the service, so such a file is taken there, and only there.
    #[test]
    fn a_systemd_credential_is_taken_from_the_credentials_directory_only() {
        let (dir, path) = file(0o440, "slack = \"https://hooks.example/x\"\n");
        let loaded = SecretsFile::load_with(&path, Some(dir.path().as_os_str())).unwrap();
        assert_eq!(loaded.names().collect::<Vec<_>>(), ["slack"]);
        let elsewhere = tempfile::tempdir().unwrap();
        let e = SecretsFile::load_with(&path, Some(elsewhere.path().as_os_str()))
            .err()
            .unwrap();
        assert!(e.contains("0440"), "{e}");
        assert!(SecretsFile::load_with(&path, None).is_err());
    }

    #[test]
    fn a_file_others_may_read_is_refused_naming_file_and_mode() {
        let (_d, path) = file(0o644, "slack = \"https://hooks.example/x\"\n");
        let e = SecretsFile::load(&path).err().unwrap();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("0644"), "{e}");
        assert!(!e.contains("hooks.example"), "{e}");
    }

    #[tokio::test]
    async fn names_come_from_the_file_then_the_environment() {
        let (_d, path) = file(0o600, "slack = \"https://hooks.example/x\"\n");
        let vault = LocalVault {
            secrets: SecretsFile::load(&path).unwrap(),
        };
        assert_eq!(
            vault.read("local:slack").await.unwrap().expose(),
            "https://hooks.example/x"
        );
        let missing = vault
            .read("local:SPENDGUARD_TEST_NO_SUCH_SECRET")
            .await
            .unwrap_err();
        assert!(
            missing.message.contains("nor in the environment"),
            "{missing:?}"
        );
    }

    #[test]
    fn a_malformed_file_does_not_echo_its_lines() {
        let (_d, path) = file(0o600, "slack = https://hooks.example/x\n");
        let e = SecretsFile::load(&path).err().unwrap();
        assert!(!e.contains("hooks.example"), "{e}");
    }
}
