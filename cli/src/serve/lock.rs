//! One `serve` per store: an exclusive advisory lock on `<store>.lock`, held for the
//! process's life (the kernel drops it when the process dies, even by `kill -9`), with the
//! holder's pid written inside for the refusal to name.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::Failure;

pub struct StoreLock {
    _file: File,
}

/// The store's path with symlinks and `..` resolved, so every alias of one file names the same
/// lock and socket (a file not yet created: its directory resolved; neither: as typed).
pub fn canonical(store: &Path) -> PathBuf {
    store
        .canonicalize()
        .ok()
        .or_else(|| {
            let dir = match store.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            Some(dir.canonicalize().ok()?.join(store.file_name()?))
        })
        .unwrap_or_else(|| store.to_path_buf())
}

pub fn lock_path(store: &Path) -> PathBuf {
    let mut name = canonical(store).into_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// The pid of the `serve` holding `store`, if one does (the lock is tried, never kept).
pub fn holder(store: &Path) -> Result<Option<String>, Failure> {
    let path = lock_path(store);
    let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Failure::Run(format!("{}: {e}", path.display()))),
    };
    match file.try_lock() {
        Ok(()) => Ok(None),
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Ok(Some(pid.trim().to_string()))
        }
        Err(TryLockError::Error(e)) => Err(Failure::Run(format!("{}: {e}", path.display()))),
    }
}

/// Takes the store's lock, or says which process holds it.
pub fn hold(store: &Path) -> Result<StoreLock, Failure> {
    let path = lock_path(store);
    let fail = |e: std::io::Error| Failure::Run(format!("{}: {e}", path.display()));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(fail)?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0).map_err(fail)?;
            file.rewind().map_err(fail)?;
            writeln!(file, "{}", std::process::id()).map_err(fail)?;
            Ok(StoreLock { _file: file })
        }
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            Err(Failure::Invalid(format!(
                "--store {}: another spendguard serve (pid {}) holds it (lock {}); stop that one first, or serve another store",
                store.display(),
                holder.trim(),
                path.display()
            )))
        }
        Err(TryLockError::Error(e)) => Err(fail(e)),
    }
}
