//! spendguard's benchmarks, one program: `spendguard-bench <command>`. They print figures and
//! assert nothing; `bench/run` runs them all and writes bench/results/latest.md.

mod commands;

const USAGE: &str =
    "usage: spendguard-bench <coldstart|scale|verify|keyguard|nightly|authorize|serve> [options]
  coldstart --python PATH [--rounds 15] [--warm 10] [--only FUNCTION]
            each function's release binary vs the Python baseline, hosted as Lambda hosts them
  scale [--max-budgets 10000]   budget-check over 10..10,000 budgets; usage ingest per batch
  verify                        webhook verification cost per message
  keyguard                      emergency stop latency
  nightly [--scopes 10000]      one nightly aggregation
  authorize [--calls 2000]      one /authorize decision: latency in process, DynamoDB requests
  serve [--binary target/release/spendguard] [--clients 4] [--seconds 10]
                                `spendguard serve` over loopback HTTP: ingest rate and latency,
                                crossing to engaged, peak RSS";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first().cloned() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let mut runtime = if command == "verify" {
        // verification is measured on one thread, as a warm Lambda runs it
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = runtime.enable_all().build().expect("a tokio runtime");
    let rest = &args[1..];
    runtime.block_on(async {
        match command.as_str() {
            "coldstart" => commands::coldstart::run(rest).await,
            "scale" => commands::scale::run(rest).await,
            "hotitem" => commands::hotitem::run(rest).await,
            "verify" => commands::verify::run(rest).await,
            "keyguard" => commands::keyguard::run(rest).await,
            "nightly" => commands::nightly::run(rest).await,
            "authorize" => commands::authorize::run(rest).await,
            "serve" => commands::serve::run(rest).await,
            other => {
                eprintln!("no such benchmark: {other}\n{USAGE}");
                std::process::exit(2);
            }
        }
    });
}
