//! The Lambda Runtime API on loopback, as much of it as a function process uses: `next`
//! long-polls for an event, the process posts the answer (or an error) for it. One function
//! process at a time is hosted, started and stopped the way Lambda would, and timed from the
//! outside: init is process start to the first `next`, an invocation is the hand-over of the
//! event to the arrival of its answer.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};

const NEXT: &str = "/2018-06-01/runtime/invocation/next";
/// Longest an init or an invocation may take before the run is abandoned.
const PATIENCE: Duration = Duration::from_secs(120);

enum Signal {
    /// The process asked for its next event.
    Next(Instant),
    /// The process answered an invocation (`ok` false: through the error route).
    Answer {
        at: Instant,
        ok: bool,
        body: String,
    },
    InitError(String),
}

struct Shared {
    events: Mutex<mpsc::Receiver<(String, String)>>,
    signals: mpsc::UnboundedSender<Signal>,
}

pub struct RuntimeApi {
    /// `host:port`, what `AWS_LAMBDA_RUNTIME_API` holds.
    pub address: String,
    events: mpsc::Sender<(String, String)>,
    signals: mpsc::UnboundedReceiver<Signal>,
    server: tokio::task::JoinHandle<()>,
    invocations: u64,
}

async fn next(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let _ = shared.signals.send(Signal::Next(Instant::now()));
    let Some((request_id, body)) = shared.events.lock().await.recv().await else {
        return (StatusCode::GONE, HeaderMap::new(), String::new());
    };
    let mut headers = HeaderMap::new();
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        + Duration::from_secs(900);
    for (name, value) in [
        ("content-type", "application/json".to_string()),
        ("lambda-runtime-aws-request-id", request_id),
        (
            "lambda-runtime-deadline-ms",
            deadline.as_millis().to_string(),
        ),
        (
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:123456789012:function:bench".into(),
        ),
        (
            "lambda-runtime-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0".into(),
        ),
    ] {
        headers.insert(name, value.parse().expect("a header value"));
    }
    (StatusCode::OK, headers, body)
}

fn answer(shared: &Shared, ok: bool, body: Bytes) -> StatusCode {
    let _ = shared.signals.send(Signal::Answer {
        at: Instant::now(),
        ok,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    StatusCode::ACCEPTED
}

impl RuntimeApi {
    pub async fn start() -> RuntimeApi {
        let (events, receiver) = mpsc::channel(1);
        let (signal_sender, signals) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            events: Mutex::new(receiver),
            signals: signal_sender,
        });
        let app =
            Router::new()
                .route(NEXT, get(next))
                .route(
                    "/2018-06-01/runtime/invocation/{id}/response",
                    post(|State(s): State<Arc<Shared>>, body: Bytes| async move {
                        answer(&s, true, body)
                    }),
                )
                .route(
                    "/2018-06-01/runtime/invocation/{id}/error",
                    post(|State(s): State<Arc<Shared>>, body: Bytes| async move {
                        answer(&s, false, body)
                    }),
                )
                .route(
                    "/2018-06-01/runtime/init/error",
                    post(|State(s): State<Arc<Shared>>, body: Bytes| async move {
                        let _ = s.signals.send(Signal::InitError(
                            String::from_utf8_lossy(&body).into_owned(),
                        ));
                        StatusCode::ACCEPTED
                    }),
                )
                .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener.local_addr().expect("its address").to_string();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("runtime API server");
        });
        RuntimeApi {
            address,
            events,
            signals,
            server,
            invocations: 0,
        }
    }

    /// Waits until the process asks for its next event; returns when it asked.
    pub async fn wait_next(&mut self) -> Result<Instant, String> {
        match tokio::time::timeout(PATIENCE, self.signals.recv()).await {
            Ok(Some(Signal::Next(at))) => Ok(at),
            Ok(Some(Signal::InitError(body))) => Err(format!("init failed: {body}")),
            Ok(Some(Signal::Answer { body, .. })) => {
                Err(format!("an answer nobody asked for: {body}"))
            }
            Ok(None) => Err("the runtime API stopped".into()),
            Err(_) => Err(format!("no `next` within {PATIENCE:?}")),
        }
    }

    /// Hands one event to the waiting process; its answer and how long it took.
    pub async fn invoke(&mut self, event: &Value) -> Result<(Duration, Value), String> {
        self.invocations += 1;
        let request_id = format!("bench-{:08}", self.invocations);
        let handed_over = Instant::now();
        self.events
            .send((request_id, event.to_string()))
            .await
            .map_err(|_| "the runtime API stopped".to_string())?;
        match tokio::time::timeout(PATIENCE, self.signals.recv()).await {
            Ok(Some(Signal::Answer { at, ok: true, body })) => Ok((
                at - handed_over,
                serde_json::from_str(&body).unwrap_or(Value::String(body)),
            )),
            Ok(Some(Signal::Answer {
                ok: false, body, ..
            })) => Err(format!("the invocation failed: {body}")),
            Ok(Some(Signal::InitError(body))) => Err(format!("init failed: {body}")),
            Ok(Some(Signal::Next(_))) => Err("`next` again before answering".into()),
            Ok(None) => Err("the runtime API stopped".into()),
            Err(_) => Err(format!("no answer within {PATIENCE:?}")),
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// How a function process is started: program, arguments, working directory, environment
/// (nothing is inherited, as in Lambda).
pub struct Launch {
    pub program: std::path::PathBuf,
    pub args: Vec<String>,
    pub cwd: std::path::PathBuf,
    pub env: Vec<(String, String)>,
}

/// A started function process; its output goes to `log`.
pub struct Hosted {
    child: Child,
    pub started: Instant,
}

impl Hosted {
    pub fn spawn(launch: &Launch, api: &RuntimeApi, log: &Path) -> Result<Hosted, String> {
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(&launch.program);
        command
            .args(&launch.args)
            .current_dir(&launch.cwd)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .env("AWS_LAMBDA_RUNTIME_API", &api.address)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let started = Instant::now();
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", launch.program.display()))?;
        Ok(Hosted { child, started })
    }

    /// CPU time the process's live threads have used so far (`se.sum_exec_runtime` of each
    /// thread's `sched`, in milliseconds with nanosecond digits).
    pub fn cpu_time(&self) -> Duration {
        let tasks = format!("/proc/{}/task", self.child.id());
        let Ok(entries) = std::fs::read_dir(tasks) else {
            return Duration::ZERO;
        };
        let millis: f64 = entries
            .filter_map(Result::ok)
            .filter_map(|task| std::fs::read_to_string(task.path().join("sched")).ok())
            .filter_map(|sched| {
                sched
                    .lines()
                    .find(|l| l.starts_with("se.sum_exec_runtime"))?
                    .rsplit(':')
                    .next()?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .sum();
        Duration::from_secs_f64(millis / 1000.0)
    }

    /// Peak resident set size so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Hosted {
    fn drop(&mut self) {
        // a run abandoned half-way leaves no process behind
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
