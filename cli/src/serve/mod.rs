//! `spendguard serve`: the whole guard as one long-lived process on the embedded store — the
//! webhook's routes on a real HTTP server, budget-check and the other schedules on timers,
//! alerts through an outbox-backed in-process topic to fan-out and key-guard, operator
//! actions through an admin socket. The handlers are the Lambda functions' own, built by
//! `crate::local` from the same configuration (ADR 030, docs/serve.md).

mod admin;
mod bus;
mod http;
mod lock;
mod metrics;
mod schedule;

pub use admin::key_guard as key_guard_in_serve;

/// Refuses a command that would write to a store a running `serve` holds: its alerts would go
/// to the command's own bus, not serve's subscribers, and its claims would keep serve's away.
pub fn refuse_if_served(store: &std::path::Path) -> Result<(), Failure> {
    match lock::holder(store)? {
        Some(pid) => Err(Failure::Invalid(format!(
            "--store {}: a spendguard serve (pid {pid}) holds it; its alerts go to serve's subscribers only, so this command does not write to it. Send usage to serve over HTTP, or stop serve first",
            store.display()
        ))),
        None => Ok(()),
    }
}

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveTime;
use spendguard_app::ports::clock::{Clock, SystemClock};
use spendguard_local::outbox::Outbox;
use spendguard_local::secrets_file::{LocalVault, SecretsFile};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tracing::{error, info};

use crate::Failure;
use crate::local::{Local, Target};
use crate::operate::run_err;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The budgets file (TOML, see docs/budgets.md); loaded into the store at start.
    #[arg(long, value_name = "FILE")]
    pub budgets: PathBuf,
    /// The embedded store (a SQLite file, created if missing). One serve per store.
    #[arg(long, value_name = "PATH", default_value = ".spendguard/state.db")]
    pub store: PathBuf,
    /// Where the HTTP server listens; port 0 picks a free port (the JSON log line with
    /// `listening` says which).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Where `/health` and `/metrics` are served, apart from the webhook's routes so they need
    /// not be public; port 0 picks a free port (`metrics_listening` in the first log line).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9187")]
    pub metrics_listen: SocketAddr,
    /// Channel and provider secrets: a TOML file of `name = "value"` only its owner may read,
    /// referred to as `local:<name>` (a name not in it is read from the environment).
    #[arg(long, value_name = "FILE")]
    pub secrets: Option<PathBuf>,
    /// How often budget-check runs (seconds `30s`, minutes `5m`, hours `1h`); it also runs
    /// for the budgets each accepted signal touches, at once.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_every)]
    pub check_every: Duration,
    /// When daily-aggregate summarises yesterday, HH:MM UTC (the deployment's NightlySchedule).
    #[arg(long, value_name = "HH:MM", default_value = "01:15", value_parser = parse_hour)]
    pub nightly_at: NaiveTime,
    /// When key-guard's stop-path drill runs, HH:MM UTC (the deployment's DrillSchedule).
    #[arg(long, value_name = "HH:MM", default_value = "08:00", value_parser = parse_hour)]
    pub drill_at: NaiveTime,
    /// Tests only: a file holding seconds added to serve's clock, read at every reading (so a
    /// test can move serve's own schedule past a restore step without waiting for it).
    #[arg(long, value_name = "FILE", hide = true)]
    pub clock_offset_file: Option<PathBuf>,
}

/// The system clock moved by the seconds a file holds (missing or unreadable: not moved).
struct OffsetClock(PathBuf);

impl Clock for OffsetClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let seconds = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        chrono::Utc::now() + chrono::Duration::seconds(seconds)
    }
}

fn parse_every(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: a whole number and a unit, e.g. 30s, 5m, 1h"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("`{text}`: the unit is s, m or h, e.g. 5m")),
    };
    if seconds == 0 {
        return Err(format!("`{text}`: must be at least 1s"));
    }
    Ok(Duration::from_secs(seconds))
}

fn parse_hour(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text, "%H:%M")
        .map_err(|_| format!("`{text}`: expected HH:MM (UTC), e.g. 01:15"))
}

/// How long requests in flight may take to finish once shutdown began.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// SIGTERM and SIGINT, listened for from before serve says it started: a signal sent as soon
/// as the line is read stops serve gracefully instead of killing it.
struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl StopSignals {
    fn listen() -> Result<StopSignals, Failure> {
        let listen = |kind, name| {
            signal(kind).map_err(|e| Failure::Run(format!("cannot listen for {name}: {e}")))
        };
        Ok(StopSignals {
            terminate: listen(SignalKind::terminate(), "SIGTERM")?,
            interrupt: listen(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    /// Resolves on the first of them.
    async fn received(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Tier actions serve cannot carry out: `shutdown` stops tagged AWS resources, and serve
/// runs without an AWS account.
const NEEDS_AWS: [&str; 1] = ["shutdown"];

/// Refuses budgets with an action serve could only fail at, when it matters most.
fn refuse_what_needs_aws(policy: &spendguard_domain::settings::PolicySet) -> Result<(), Failure> {
    for budget in &policy.budgets {
        for window in &budget.windows {
            for tier in &window.tiers {
                if let Some(action) = tier
                    .actions
                    .iter()
                    .map(|a| a.name())
                    .find(|a| NEEDS_AWS.contains(a))
                {
                    return Err(Failure::Invalid(format!(
                        "budget `{}`, tier `{}`: action `{action}` needs AWS (it stops tagged AWS resources) and serve runs without it; remove the action, or deploy to AWS (docs/serve.md)",
                        budget.id, tier.name
                    )));
                }
            }
        }
    }
    Ok(())
}

pub async fn run(args: ServeArgs) -> Result<(), Failure> {
    let policy = crate::check::load(&args.budgets)?;
    refuse_what_needs_aws(&policy)?;
    // the secrets file is checked before anything is created or locked
    let secrets = match &args.secrets {
        Some(path) => SecretsFile::load(path).map_err(Failure::Invalid)?,
        None => SecretsFile::default(),
    };
    if let Some(dir) = args.store.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::Run(format!("{}: {e}", dir.display())))?;
    }
    let _lock = lock::hold(&args.store)?;
    let metrics = Arc::new(metrics::Metrics::default());
    let clock: Arc<dyn Clock> = match &args.clock_offset_file {
        Some(file) => Arc::new(OffsetClock(file.clone())),
        None => Arc::new(SystemClock),
    };
    let outbox = Outbox::open(&args.store).map_err(run_err)?;
    let bus = Arc::new(bus::OutboxBus::new(outbox, metrics.clone(), clock.clone()));
    let mut local = Local::new(
        &Target::Embedded {
            store: args.store.clone(),
        },
        clock,
        BTreeMap::new(),
    )
    .await?;
    local.backends.vault = Arc::new(LocalVault { secrets });
    local.bus = bus.clone();
    local.published = None;
    local.store().put_policy(&policy).await.map_err(run_err)?;

    let webhook = Arc::new(local.webhook().await?);
    let checker = Arc::new(local.checker().await?);
    let mut guard = local.key_guard().await?;
    // the drill's problems are alerts, as deployed
    guard.alerts = Some(bus.clone());
    let guard = Arc::new(guard);
    let nightly = Arc::new(local.nightly(Arc::new(metrics::EmfGauges(metrics.clone()))));
    bus.wire(bus::Subscribers {
        fanout: local.fanout()?,
        guard: guard.clone(),
    });
    let digests = Arc::new(local.fanout()?);
    let health = Arc::new(schedule::Health::default());

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::Run(format!("--listen {}: {e}", args.listen)))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::Run(format!("--listen {}: {e}", args.listen)))?;
    let ops_listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .map_err(|e| Failure::Run(format!("--metrics-listen {}: {e}", args.metrics_listen)))?;
    let ops_bound = ops_listener
        .local_addr()
        .map_err(|e| Failure::Run(format!("--metrics-listen {}: {e}", args.metrics_listen)))?;
    let admin = admin::bind(&args.store)?;
    let (stop, stopping) = watch::channel(false);
    let signals = StopSignals::listen()?;
    // the first line: clients started with --listen 127.0.0.1:0 read the port from it
    info!(
        listening = %bound,
        metrics_listening = %ops_bound,
        store = %args.store.display(),
        admin_socket = %admin::socket_path(&args.store).display(),
        check_every_seconds = args.check_every.as_secs(),
        "spendguard serve started"
    );

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(bus.clone().run(stopping.clone()));
    tasks.spawn(admin::serve(admin, guard.clone(), stopping.clone()));
    {
        let (checker, metrics, health) = (checker.clone(), metrics.clone(), health.clone());
        tasks.spawn(schedule::every(
            args.check_every,
            stopping.clone(),
            move || {
                let (checker, metrics, health) = (checker.clone(), metrics.clone(), health.clone());
                async move { schedule::check(&checker, &metrics, &health).await }
            },
        ));
    }
    {
        let digests = digests.clone();
        tasks.spawn(schedule::every(
            schedule::DIGEST_FLUSH_EVERY,
            stopping.clone(),
            move || {
                let digests = digests.clone();
                async move { schedule::flush_digests(&digests).await }
            },
        ));
    }
    {
        let (nightly, at, stopping) = (nightly.clone(), args.nightly_at, stopping.clone());
        let store = local.embedded_store();
        tasks.spawn(async move {
            schedule::catch_up_nightly(&nightly, at).await;
            schedule::daily(at, stopping, move || {
                let (nightly, store) = (nightly.clone(), store.clone());
                async move {
                    schedule::nightly(&nightly).await;
                    if let Some(store) = store {
                        schedule::prune(&store, nightly.clock.now()).await;
                    }
                }
            })
            .await
        });
    }
    {
        let guard = guard.clone();
        tasks.spawn(schedule::daily(
            args.drill_at,
            stopping.clone(),
            move || {
                let guard = guard.clone();
                async move { schedule::drill(&guard).await }
            },
        ));
    }

    let routes = http::Routes {
        webhook,
        store: local.store(),
        metrics,
        health,
        bus,
        in_flight: Arc::new(tokio::sync::Semaphore::new(http::MAX_IN_FLIGHT)),
    };
    {
        let mut stopping = stopping.clone();
        let ops = axum::serve(ops_listener, http::ops_router(routes.clone()))
            .with_graceful_shutdown(async move {
                let _ = stopping.wait_for(|s| *s).await;
            });
        tasks.spawn(async move {
            if let Err(e) = ops.await {
                error!(error = %e, "metrics listener failed");
            }
        });
    }
    let app = http::router(routes);
    let server = axum::serve(listener, app);
    let (stopped, stop_now) = watch::channel(false);
    let server = server.with_graceful_shutdown(async move {
        signals.received().await;
        info!("stopping: no new connections; in-flight requests finish");
        let _ = stopped.send(true);
    });
    let served = async move {
        let mut stop_now = stop_now;
        let server = server.into_future();
        tokio::pin!(server);
        tokio::select! {
            served = &mut server => Some(served),
            _ = async {
                let _ = stop_now.wait_for(|s| *s).await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => None,
        }
    }
    .await;
    let Some(served) = served else {
        error!(
            grace_seconds = SHUTDOWN_GRACE.as_secs(),
            "requests still in flight after the grace period; exiting without them"
        );
        return Err(Failure::Run(format!(
            "shutdown: requests still in flight after {} s",
            SHUTDOWN_GRACE.as_secs()
        )));
    };
    // the timers stop (a check in progress finishes), the outbox is drained once more
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    let _ = std::fs::remove_file(admin::socket_path(&args.store));
    served.map_err(|e| Failure::Run(format!("http server: {e}")))?;
    info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_take_a_unit_and_refuse_zero() {
        assert_eq!(parse_every("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_every("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_every("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_every("0s").is_err());
        assert!(parse_every("5").unwrap_err().contains("unit"));
        assert!(parse_every("m").is_err());
    }
}
