//! `spendguard`: run spendguard locally on the embedded store.
//!
//! Exit codes: 0 checked; 1 the run failed (store or I/O error, a configured source
//! unavailable); 2 invalid input (budgets file, usage file, arguments); 3 `--fail-on` reached.

mod check;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "spendguard",
    version,
    about = "Stop runaway API and cloud spend: evaluate budgets, raise each alert once per crossing.",
    after_help = "Exit codes: 0 checked, 1 run failed, 2 invalid input, 3 --fail-on severity reached."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest usage (optional) and check every budget on the embedded store.
    Check(CheckArgs),
    /// Validate a budgets file and print a summary.
    Validate {
        /// The budgets file (TOML, see docs/budgets.md).
        #[arg(long, value_name = "FILE")]
        budgets: PathBuf,
    },
    /// Validate a budgets file and load it into a deployment's DynamoDB table (budgets,
    /// settings, keys; keys keep their status). AWS credentials and region from the
    /// environment; `AWS_ENDPOINT_URL` is honoured.
    Apply {
        /// The budgets file (TOML, see docs/budgets.md).
        #[arg(long, value_name = "FILE")]
        budgets: PathBuf,
        /// The table (the deployment's `StateTableName` output).
        #[arg(long, value_name = "NAME")]
        table: String,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPENDGUARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Check(args) => check::run(args).await,
            Command::Validate { budgets } => check::validate(&budgets),
            Command::Apply { budgets, table } => check::apply(&budgets, &table).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Run(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Invalid(m)) => {
            eprintln!("{m}");
            ExitCode::from(2)
        }
        Err(Failure::ThresholdReached(m)) => {
            eprintln!("{m}");
            ExitCode::from(3)
        }
    }
}
