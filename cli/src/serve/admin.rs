//! The admin socket: `<store>.sock`, owner-only. Operator commands given `--store` of a store
//! a `serve` holds send their key-guard action here, and serve runs it with its own key-guard
//! (the provider admin keys are where serve runs, never on a command line). One JSON line in,
//! one JSON line out: `{"function": "key-guard", "event": {...}}` ->
//! `{"ok": report}` or `{"error": {"errorType": ..., "errorMessage": ...}}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::Failure;
use crate::local::Invocation;

pub fn socket_path(store: &Path) -> PathBuf {
    let mut name = super::lock::canonical(store).into_os_string();
    name.push(".sock");
    PathBuf::from(name)
}

/// Binds the socket (a stale one from a dead serve is replaced: the store lock says none
/// runs) with mode 0600.
pub fn bind(store: &Path) -> Result<UnixListener, Failure> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(store);
    let fail = |e: std::io::Error| Failure::Run(format!("admin socket {}: {e}", path.display()));
    if path.exists() {
        std::fs::remove_file(&path).map_err(fail)?;
    }
    let listener = UnixListener::bind(&path).map_err(fail)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    Ok(listener)
}

pub async fn serve(
    listener: UnixListener,
    guard: Arc<key_guard::handler::Handler>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => { warn!(error = %e, "admin socket accept failed"); continue; }
            },
            _ = shutdown.changed() => return,
        };
        let guard = guard.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &guard).await {
                warn!(error = %e, "admin request failed");
            }
        });
    }
}

/// The longest request line serve reads; a key-guard event is a few hundred bytes.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// How long serve waits for a request line (a client that connects and says nothing).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a command waits for serve's answer: key-guard's provider calls included.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

fn refusal(message: &str) -> Value {
    json!({"error": {"errorType": "InvalidRequest", "errorMessage": message}})
}

async fn answer(stream: UnixStream, guard: &key_guard::handler::Handler) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut limited = BufReader::new(read.take(MAX_REQUEST_BYTES + 1));
    let reply = match tokio::time::timeout(REQUEST_TIMEOUT, limited.read_line(&mut line)).await {
        Err(_) => refusal("no request line within 10 s"),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(read)) if read as u64 > MAX_REQUEST_BYTES => {
            refusal("the request line is longer than 64 KiB")
        }
        Ok(Ok(_)) => request(&line, guard).await,
    };
    write.write_all(format!("{reply}\n").as_bytes()).await?;
    write.shutdown().await
}

async fn request(line: &str, guard: &key_guard::handler::Handler) -> Value {
    match serde_json::from_str::<Value>(line) {
        Ok(request) if request["function"] == "key-guard" => {
            let event = request["event"].clone();
            info!(
                action = event["action"].as_str().unwrap_or_default(),
                scope = event["scope"].as_str().unwrap_or_default(),
                actor = event["actor"].as_str().unwrap_or_default(),
                "operator request"
            );
            match guard.handle(event).await {
                Ok(report) => json!({"ok": report}),
                Err(e) => json!({"error": Invocation::from(e)}),
            }
        }
        _ => refusal("expected {\"function\": \"key-guard\", \"event\": {...}}"),
    }
}

/// Runs a key-guard event in the `serve` holding `store`, if one does: `None` when no serve
/// holds the store (the caller runs it in-process). A serve that holds it but cannot be
/// reached is an error: running the action here, without serve's admin keys, would half-do it.
pub async fn key_guard(
    store: &Path,
    event: &Value,
) -> Option<Result<Result<Value, Invocation>, Failure>> {
    let path = socket_path(store);
    match UnixStream::connect(&path).await {
        Ok(stream) => Some(exchange(stream, event, &path).await),
        Err(e) => match super::lock::holder(store) {
            Ok(None) => None,
            Ok(Some(pid)) => Some(Err(Failure::Run(format!(
                "spendguard serve holds {} (pid {pid}) but its admin socket {} is unreachable: {e}; nothing was done. Restart serve to recreate the socket",
                store.display(),
                path.display()
            )))),
            Err(failure) => Some(Err(failure)),
        },
    }
}

async fn exchange(
    stream: UnixStream,
    event: &Value,
    path: &Path,
) -> Result<Result<Value, Invocation>, Failure> {
    let fail = |e: std::io::Error| {
        Failure::Run(format!(
            "the running spendguard serve ({}): {e}",
            path.display()
        ))
    };
    let (read, mut write) = stream.into_split();
    let request = json!({"function": "key-guard", "event": event});
    write
        .write_all(format!("{request}\n").as_bytes())
        .await
        .map_err(fail)?;
    let mut line = String::new();
    let mut limited = BufReader::new(read.take(MAX_REQUEST_BYTES));
    tokio::time::timeout(ANSWER_TIMEOUT, limited.read_line(&mut line))
        .await
        .map_err(|_| {
            Failure::Run(format!(
                "the running spendguard serve ({}) did not answer within 120 s; what it did is in its log",
                path.display()
            ))
        })?
        .map_err(fail)?;
    let reply: Value = serde_json::from_str(&line).map_err(|e| {
        Failure::Run(format!(
            "the running spendguard serve ({}) answered: {e}",
            path.display()
        ))
    })?;
    Ok(match reply.get("ok") {
        Some(v) => Ok(v.clone()),
        None => Err(Invocation {
            error_type: reply["error"]["errorType"]
                .as_str()
                .unwrap_or("Error")
                .into(),
            error_message: reply["error"]["errorMessage"]
                .as_str()
                .unwrap_or_default()
                .into(),
        }),
    })
}
