//! `spendguard serve` under load, over loopback HTTP: sustained signed `/usage` ingest at
//! batches of 1 and 100 records (records per second, p50/p99 latency per request), the time
//! from sending the request that crosses an emergency tier to `/status` reading engaged, and
//! the serve process's peak RSS (`VmHWM`).
//!
//!     cargo build --release -p spendguard -p spendguard-bench
//!     target/release/spendguard-bench serve [--binary target/release/spendguard]
//!         [--clients 4] [--seconds 10]
//!
//! Each client is one keep-alive connection sending its next request when the last is
//! answered; requests are signed before the clock starts.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use spendguard_bench::ms;
use spendguard_domain::standard_webhooks::WebhookSecret;

const EMERGENCY_SCOPES: usize = 10;

fn budgets() -> String {
    let mut text = String::from(
        "version = 1\n[routing]\nwarning = [\"log\"]\nemergency = [\"log\"]\n\n\
         [[budget]]\nid = \"load\"\nscope = \"openai/load\"\n[[budget.window]]\nperiod = \"monthly\"\n\
         limit = \"100000000\"\ntiers = [{ name = \"warning\", percent = 80 }]\n",
    );
    for i in 0..EMERGENCY_SCOPES {
        text.push_str(&format!(
            "\n[[budget]]\nid = \"runaway-{i}\"\nscope = \"anthropic/runaway-{i}\"\n[[budget.window]]\n\
             period = \"monthly\"\nlimit = \"10\"\n\
             tiers = [{{ name = \"emergency\", percent = 100, actions = [\"notify\", \"disable_keys\"] }}]\n"
        ));
    }
    text
}

fn record(id: &str, scope: &str, cost: &str) -> Value {
    json!({
        "id": id, "scope": scope, "provider": scope.split('/').next(), "model": "gpt-4o", "requests": 1,
        "tokens_in": 1200, "tokens_out": 300,
        "cost": {"amount": cost, "currency": "USD"},
        "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

struct Signed {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

fn sign(signer: &WebhookSecret, id: String, records: Vec<Value>) -> Signed {
    let body = serde_json::to_vec(&json!({ "records": records })).unwrap();
    let timestamp = Utc::now().timestamp();
    Signed {
        signature: signer.sign(&id, timestamp, &body),
        timestamp: timestamp.to_string(),
        id,
        body,
    }
}

async fn post(http: &reqwest::Client, url: &str, s: &Signed) -> u16 {
    http.post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &s.id)
        .header("webhook-timestamp", &s.timestamp)
        .header("webhook-signature", &s.signature)
        .body(s.body.clone())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The longest run whose pre-signed requests stay inside the webhook's 300 s tolerance.
const MAX_SECONDS: u64 = 240;

/// Sends batches of `batch` records from `clients` connections for `seconds`, closed-loop:
/// each client sends its next request when the previous one was answered.
async fn sustained(
    url: &str,
    signer: &WebhookSecret,
    batch: usize,
    clients: usize,
    seconds: u64,
) -> (usize, Duration, Vec<Duration>, usize) {
    // enough signed requests for the run at ~10x the target rate, made before the clock starts
    let per_client = if batch == 1 { 20_000 } else { 1_500 };
    let mut work = Vec::new();
    for _ in 0..clients {
        let run = uuid::Uuid::new_v4().simple().to_string();
        work.push(Arc::new(
            (0..per_client)
                .map(|n| {
                    let records = (0..batch)
                        .map(|r| record(&format!("{run}-{n}-{r}"), "openai/load/app", "0.0001"))
                        .collect();
                    sign(signer, format!("msg_{run}_{n}"), records)
                })
                .collect::<Vec<_>>(),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for requests in work {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut latencies = Vec::new();
            let (mut accepted, mut refused) = (0, 0);
            for s in requests.iter() {
                if Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                let status = post(&http, &url, s).await;
                latencies.push(t.elapsed());
                if (200..300).contains(&status) {
                    accepted += 1;
                } else {
                    refused += 1;
                }
            }
            (latencies, accepted, refused)
        }));
    }
    let mut latencies = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for t in tasks {
        let (l, a, r) = t.await.unwrap();
        latencies.extend(l);
        accepted += a;
        refused += r;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    // only records of requests answered 2xx count as ingested
    (accepted * batch, elapsed, latencies, refused)
}

pub async fn run(args: &[String]) {
    let binary = flag(args, "--binary").unwrap_or_else(|| "target/release/spendguard".into());
    let clients: usize = flag(args, "--clients").map_or(4, |c| c.parse().expect("--clients N"));
    let seconds: u64 = flag(args, "--seconds").map_or(10, |s| s.parse().expect("--seconds N"));
    // requests are signed before the timed window; the webhook refuses signatures more than
    // 300 s old, so a longer run would measure refusals
    assert!(
        seconds <= MAX_SECONDS,
        "--seconds {seconds}: at most {MAX_SECONDS} (requests are signed before the run and expire after 300 s)"
    );
    let dir = tempfile::tempdir().unwrap();
    let budgets_file = dir.path().join("budgets.toml");
    std::fs::write(&budgets_file, budgets()).unwrap();
    let store = dir.path().join("state.db");
    let mut child = Command::new(&binary)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--budgets",
        ])
        .arg(&budgets_file)
        .arg("--store")
        .arg(&store)
        .env("SPENDGUARD_LOG", "warn,spendguard::serve=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{binary}: {e} (cargo build --release -p spendguard)"));
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        if let Some(a) = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v["listening"].as_str().map(String::from))
        {
            break a;
        }
    };
    // keep reading its stderr so that it never blocks on a full pipe
    std::thread::spawn(move || for _ in lines {});
    let secret = std::fs::read_to_string(dir.path().join("secrets/usage-webhook")).unwrap();
    let token = std::fs::read_to_string(dir.path().join("secrets/status-token")).unwrap();
    let signer = WebhookSecret::parse_list(secret.trim()).unwrap()[0].clone();
    let usage = format!("http://{address}/usage");

    println!(
        "closed loop: {clients} clients, each sending its next request once the last was answered; records/s counts 2xx answers only\n"
    );
    println!(
        "| batch | clients | requests | records/s (2xx) | p50 | p99 | refused |\n|---:|---:|---:|---:|---:|---:|---:|"
    );
    for batch in [1, 100] {
        let (records, elapsed, latencies, refused) =
            sustained(&usage, &signer, batch, clients, seconds).await;
        println!(
            "| {batch} | {clients} | {} | {:.0} | {} ms | {} ms | {refused} |",
            latencies.len(),
            records as f64 / elapsed.as_secs_f64(),
            ms(percentile(&latencies, 50.0)),
            ms(percentile(&latencies, 99.0)),
        );
    }

    // the crossing: one request takes a budget past its emergency tier; the time until an
    // application reading /status sees engaged (serve answers the crossing request only after
    // key-guard engaged the switch, so this is that request plus one /status read)
    let http = reqwest::Client::new();
    let mut crossings = Vec::new();
    for i in 0..EMERGENCY_SCOPES {
        let scope = format!("anthropic/runaway-{i}/key");
        let request = sign(
            &signer,
            format!("msg_cross_{i}"),
            vec![record(&format!("cross-{i}"), &scope, "11")],
        );
        let t = Instant::now();
        assert_eq!(post(&http, &usage, &request).await, 200);
        let state: Value = http
            .get(format!("http://{address}/status?scope={scope}"))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let took = t.elapsed();
        assert_eq!(state["state"], "engaged", "{state}");
        crossings.push(took);
    }
    crossings.sort();
    println!(
        "\ncrossing request to `/status` engaged ({} budgets; no [[key]]: no provider disable call included): median {} ms, max {} ms",
        crossings.len(),
        ms(percentile(&crossings, 50.0)),
        ms(*crossings.last().unwrap())
    );
    println!(
        "serve's peak RSS (VmHWM) after all of the above: {:.1} MB",
        peak_rss_kib(child.id()) as f64 / 1024.0
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
