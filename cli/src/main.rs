//! `spendguard`: the demo, local runs of every function (embedded store or `--aws`), and the
//! operator's commands against a deployment. See docs/cli.md.
//!
//! Exit codes: 0 done; 1 the run failed (store, AWS or handler error, a budget window that
//! cannot be evaluated); 2 invalid input, no target or an unconfirmed change (nothing
//! written); 3 `--fail-on` reached; 4 a kill or shutdown that stopped nothing; 5 the drill found a
//! stop that would fail. `budgets plan` alone: 0 no changes, 2 changes, 1 any error
//! (terraform's -detailed-exitcode). Output goes through `output`: a closed pipe on stdout or
//! stderr is quiet and keeps these codes.

#![deny(clippy::print_stdout, clippy::print_stderr)]

mod aws;
mod budgets;
mod check;
mod demo;
mod invoke;
mod local;
mod operate;
mod output;
mod report;
mod serve;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::output::errln;

/// The commands by what they are for (clap lists subcommands under one heading only).
const HELP_TEMPLATE: &str = "\
{about-with-newline}
{usage-heading} {usage}

Try it (on an embedded store, nothing deployed):
  demo         Simulate a month of spend with a runaway loop and write a report
  check        Ingest usage and check every budget
  validate     Validate a budgets file
  report       Write a scope's month report (HTML, or --json)
  serve        Run the whole guard as one process on the embedded store (HTTP, schedules)

Operate a deployment (--table NAME or SPENDGUARD_TABLE; --store FILE for an embedded store):
  status       Kill switches, keys, budgets at risk and open paging alerts
  kill         Engage a scope's kill switch and stop its keys
  shutdown     Stop a scope's keys and the resources that opted in
  restore      Re-enable what spendguard stopped under a scope
  ack          Acknowledge a paging alert
  drill        Prove every configured stop could be carried out now
  budgets      Plan, apply or export the budgets file a deployment holds
  audit        Read the audit log: who did what, when

Tools:
  invoke       Run one function's handler with an event file
  completions  Print a shell completion script
  help         Print this message or the help of a command

Options:
{options}{after-help}";

/// What `--scope` accepts, for every command that takes one.
const SCOPE_HELP: &str = "The scope: a provider and the path under it, e.g. `openai/prod`, `anthropic/<workspace>`, `aws/<account>/<name>`, `gcp/billing/<account>`; `*` is everything. A scope covers everything under it";

#[derive(Parser)]
#[command(
    name = "spendguard",
    version,
    about = "Stop runaway API and cloud spend.",
    help_template = HELP_TEMPLATE,
    after_help = "Examples:\n  spendguard demo\n  spendguard check --budgets budgets.toml --usage usage.jsonl\n  spendguard status --table spendguard-state\n  spendguard kill --scope openai/prod --reason \"leaked key\" --table spendguard-state\n\nExit codes: 0 done, 1 run failed (or a budget window cannot be evaluated), 2 invalid input, no target or an unconfirmed change (nothing written), 3 --fail-on severity reached, 4 a kill or shutdown stopped nothing, 5 a drill found a stop that would fail. `budgets plan`: 0 no changes, 2 changes, 1 any error.\nAWS: the SDK's usual credentials and region, or --profile and --region; SPENDGUARD_LOG=debug shows the SDK's own messages.\nMore: https://github.com/spendguard/spendguard/blob/main/docs/cli.md"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How problems in a budgets file are shown: `short` (one `file:line:col:` line each) or
    /// `human` (cargo-like, with the source line); default human on a terminal, else short.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    message_format: Option<budgets::MessageFormat>,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate a month of spend with a runaway loop on the real handlers, and write a report.
    Demo(demo::DemoArgs),
    /// Run the whole guard as one long-lived process on the embedded store: the webhook's
    /// routes over HTTP, budget-check on a schedule, alerts to fan-out and key-guard.
    #[command(
        after_help = "Examples:\n  spendguard serve --budgets budgets.toml\n  spendguard serve --budgets budgets.toml --store /var/lib/spendguard/state.db --listen 0.0.0.0:8787 --secrets /etc/spendguard/secrets.toml\n\nLogs are JSON lines on stderr; the first says where it listens (`listening`). Operator commands given --store of this store run through serve. See docs/serve.md."
    )]
    Serve(serve::ServeArgs),
    /// Ingest usage (optional) and check every budget on the embedded store.
    #[command(
        after_help = "Examples:\n  spendguard check --budgets examples/budgets.toml --usage examples/usage.jsonl --now 2026-11-20T18:00:00Z\n  spendguard check --budgets budgets.toml --fail-on critical     # exit 3 from cron when a critical tier is reached"
    )]
    Check(CheckArgs),
    /// Validate a budgets file and print a summary.
    Validate {
        /// The budgets file (TOML, see docs/budgets.md).
        #[arg(long, value_name = "FILE")]
        budgets: PathBuf,
        /// Print the result as JSON on stdout: `valid`, a summary and the parsed policy, or
        /// `valid: false` and the errors with their positions (exit 2).
        #[arg(long)]
        json: bool,
    },
    /// Run one function's handler with an event file, on the embedded store or against AWS.
    Invoke(invoke::InvokeArgs),
    /// Kill switches not open, keys, budgets at risk and open paging alerts (with their age).
    #[command(
        after_help = "Examples:\n  spendguard status --table spendguard-state\n  spendguard status --scope openai/prod --json --table spendguard-state"
    )]
    Status {
        /// Only what is under (or above) this scope, e.g. `openai/prod` (`*` is everything).
        #[arg(long)]
        scope: Option<String>,
        /// Print JSON (with `schema_version`) instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        on: operate::On,
    },
    /// Prove every configured stop could be carried out now, changing nothing: each admin key
    /// against what it would write, each key at its provider, each secret to withhold, each
    /// opted-in resource and provider limit. Exits 5 when a stop would fail.
    Drill {
        /// Print the drill's report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        on: operate::On,
    },
    /// Engage a scope's kill switch and stop its keys at their providers (key-guard's code).
    #[command(
        after_help = "Examples:\n  spendguard kill --scope openai/prod --reason \"leaked key\" --table spendguard-state\n  spendguard kill --scope anthropic/research --reason \"runaway loop\" --yes --json --table spendguard-state"
    )]
    Kill {
        #[arg(long, help = SCOPE_HELP)]
        scope: String,
        /// Why, for the audit log and the alert.
        #[arg(long)]
        reason: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Print key-guard's full report as JSON instead of a summary.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        on: operate::On,
    },
    /// Stop a scope's keys and the resources that opted in (the `shutdown` action): lists what
    /// would be stopped, then asks before doing it. Against a deployment (--table), AWS
    /// resources tagged `spendguard:shutdown` too; an embedded store has keys only.
    #[command(
        after_help = "Examples:\n  spendguard shutdown --scope aws/123456789012/batch --reason \"runaway jobs\" --dry-run --table spendguard-state\n  spendguard shutdown --scope aws/123456789012/batch --reason \"runaway jobs\" --yes --table spendguard-state"
    )]
    Shutdown {
        #[arg(long, help = SCOPE_HELP)]
        scope: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
        /// Only list what would be stopped.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Print the plan (with --dry-run) or key-guard's full report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        on: operate::On,
    },
    /// Re-enable the keys (and resources) spendguard stopped under a scope and start the limit ramp.
    #[command(
        after_help = "Example:\n  spendguard restore --scope openai/prod --table spendguard-state"
    )]
    Restore {
        #[arg(long, help = SCOPE_HELP)]
        scope: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Print key-guard's full report as JSON instead of a summary.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        on: operate::On,
    },
    /// Acknowledge a paging alert: its escalation stops. For a security finding: mark its
    /// pattern as expected, so it does not fire again for that key that day. Audited.
    #[command(
        after_help = "Example:\n  spendguard ack 3f9c2a7e51b04d6a --reason \"planned re-index\" --table spendguard-state\n(`spendguard status` lists the open alerts and their ids.)"
    )]
    Ack {
        /// The alert's id, as `spendguard status` and the alert itself show it.
        alert_id: String,
        /// Why (kept in the audit log), e.g. "planned re-index".
        #[arg(long)]
        reason: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        on: operate::On,
    },
    /// Manage the budgets a deployment (or the embedded store) holds.
    Budgets {
        #[command(subcommand)]
        command: BudgetsCommand,
    },
    /// Read the audit log (newest first): every stop, restore, acknowledgement and change.
    #[command(
        after_help = "Examples:\n  spendguard audit --table spendguard-state\n  spendguard audit --scope openai/prod --since 2026-11-01 --actor cli: --table spendguard-state"
    )]
    Audit(operate::AuditArgs),
    /// Write a scope's month report (HTML with an SVG chart) from the stored summaries.
    Report {
        #[arg(long, help = SCOPE_HELP)]
        scope: String,
        /// The month, YYYY-MM.
        #[arg(long)]
        month: String,
        /// Where to write the page.
        #[arg(long, value_name = "FILE", default_value = "spendguard-report.html")]
        out: PathBuf,
        /// Print the report's figures as JSON instead of writing the page.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        on: operate::On,
    },
    /// Print a shell completion script, e.g. `spendguard completions bash > /etc/bash_completion.d/spendguard`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum BudgetsCommand {
    /// Show what `apply` would change, writing nothing. Exit codes as terraform's
    /// -detailed-exitcode: 0 no changes, 2 changes to apply, 1 any error (an invalid file too).
    Plan {
        /// The budgets file (TOML, see docs/budgets.md).
        file: PathBuf,
        #[command(flatten)]
        on: operate::On,
    },
    /// Validate a budgets file, show what changes, and write it after confirmation (without a
    /// terminal, only with --yes: exit 2 and nothing written otherwise). Audited.
    Apply {
        /// The budgets file (TOML, see docs/budgets.md).
        file: PathBuf,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        on: operate::On,
    },
    /// Write the deployed policy back as a budgets file (it validates, and plans no changes).
    Export {
        /// Where to write it; stdout when not given.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        on: operate::On,
    },
}

#[derive(Args)]
pub struct CheckArgs {
    /// The budgets file (TOML, see docs/budgets.md).
    #[arg(long, value_name = "FILE")]
    pub budgets: PathBuf,
    /// The embedded store (a SQLite file, created if missing).
    #[arg(long, value_name = "PATH", default_value = ".spendguard/state.db")]
    pub store: PathBuf,
    /// Usage records to ingest first, one JSON object per line (replays count once).
    #[arg(long, value_name = "JSONL")]
    pub usage: Option<PathBuf>,
    /// Evaluate as of this instant (RFC 3339) instead of now, e.g. to replay a usage file.
    #[arg(long, value_name = "TIME")]
    pub now: Option<String>,
    /// Only this budget.
    #[arg(long = "budget", value_name = "ID")]
    pub budget_id: Option<String>,
    /// Report what would be alerted without recording or raising anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the full report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Exit with 3 when a tier of at least this severity is reached (for cron jobs).
    #[arg(long, value_name = "SEVERITY", value_parser = ["info", "warning", "critical", "emergency"])]
    pub fail_on: Option<String>,
    /// Read `aws_budgets` sources from this account (AWS credentials from the environment).
    #[arg(long, value_name = "ACCOUNT_ID")]
    pub aws_account_id: Option<String>,
    /// Read `openai` sources with the admin key in this file.
    #[arg(long, value_name = "FILE")]
    pub openai_admin_key_file: Option<PathBuf>,
    /// Read `anthropic` sources with the admin key in this file.
    #[arg(long, value_name = "FILE")]
    pub anthropic_admin_key_file: Option<PathBuf>,
}

/// How a command ended: the exit code and what to tell the user.
pub enum Failure {
    /// Bad input: exit 2.
    Invalid(String),
    /// The run failed: exit 1.
    Run(String),
    /// `--fail-on` reached: exit 3.
    ThresholdReached(String),
    /// A kill or shutdown that stopped no key and no resource: exit 4.
    NothingStopped(String),
    /// The drill found a stop that could not be carried out now: exit 5.
    StopsBroken(String),
    /// `budgets plan`'s terraform-style end: 2 changes to apply, 1 any error (the message is
    /// printed as it is).
    Plan { code: u8, message: String },
}

/// What the CLI logs unless SPENDGUARD_LOG says otherwise: warnings, but not the AWS SDK's
/// (its credential-chain warnings dump whole HTTP responses; the CLI says what failed in one
/// line, and SPENDGUARD_LOG=debug shows the SDK's own account).
const DEFAULT_LOG: &str = "warn,aws_config=error,aws_smithy_runtime=error";
/// `serve` logs what it does (requests, checks, deliveries) as well.
const SERVE_LOG: &str = "info,aws_config=error,aws_smithy_runtime=error";

fn main() -> ExitCode {
    let cli = Cli::parse();
    budgets::set_message_format(cli.message_format);
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr);
    if matches!(cli.command, Command::Serve(_)) {
        // a service's logs: JSON lines, what it does at info
        logs.json()
            .flatten_event(true)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("SPENDGUARD_LOG")
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(SERVE_LOG)),
            )
            .init();
    } else {
        logs.with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPENDGUARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            errln!("error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Check(args) => check::run(args).await,
            Command::Validate { budgets, json } => budgets::validate(&budgets, json),
            Command::Invoke(args) => invoke::run(args).await,
            Command::Drill { json, on } => operate::drill(&on, json).await,
            Command::Status { scope, json, on } => {
                operate::status(&on, scope.as_deref(), json).await
            }
            Command::Kill {
                scope,
                reason,
                yes,
                json,
                on,
            } => operate::kill(&on, &scope, &reason, yes, json).await,
            Command::Shutdown {
                scope,
                reason,
                dry_run,
                yes,
                json,
                on,
            } => operate::shutdown(&on, &scope, &reason, dry_run, yes, json).await,
            Command::Restore {
                scope,
                yes,
                json,
                on,
            } => operate::restore(&on, &scope, yes, json).await,
            Command::Ack {
                alert_id,
                reason,
                json,
                on,
            } => operate::ack(&on, &alert_id, reason.as_deref(), json).await,
            Command::Audit(args) => operate::audit(&args).await,
            Command::Budgets { command } => match command {
                BudgetsCommand::Plan { file, on } => budgets::plan(&on, &file).await,
                BudgetsCommand::Apply { file, yes, on } => budgets::apply(&on, &file, yes).await,
                BudgetsCommand::Export { out, on } => budgets::export(&on, out.as_deref()).await,
            },
            Command::Report {
                scope,
                month,
                out,
                json,
                on,
            } => operate::month_report(&on, &scope, &month, &out, json).await,
            Command::Completions { shell } => {
                clap_complete::generate(
                    shell,
                    &mut <Cli as clap::CommandFactory>::command(),
                    "spendguard",
                    &mut std::io::stdout(),
                );
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Run(m)) => {
            errln!("error: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Invalid(m)) => {
            errln!("{m}");
            ExitCode::from(2)
        }
        Err(Failure::ThresholdReached(m)) => {
            errln!("{m}");
            ExitCode::from(3)
        }
        Err(Failure::NothingStopped(m)) => {
            errln!("{m}");
            ExitCode::from(4)
        }
        Err(Failure::StopsBroken(m)) => {
            errln!("{m}");
            ExitCode::from(5)
        }
        Err(Failure::Plan { code, message }) => {
            errln!("{message}");
            ExitCode::from(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument of every command says what it is for in `--help`.
    #[test]
    fn every_argument_has_help_text() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "spendguard", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }

    /// The grouped list in `--help` is written by hand: it names every command.
    #[test]
    fn the_grouped_help_names_every_command() {
        for sub in Cli::command().get_subcommands() {
            let name = sub.get_name();
            assert!(
                HELP_TEMPLATE.contains(&format!("\n  {name} ")),
                "--help does not list {name}"
            );
        }
        let shutdown = Cli::command()
            .find_subcommand_mut("shutdown")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(!shutdown.contains("--aws"), "{shutdown}");
        assert!(shutdown.contains("anthropic/<workspace>"), "{shutdown}");
    }
}
