//! `spendguard demo`: a month of spend on the embedded store, hour by hour, driving the real
//! handlers. Applications report usage through the webhook's `/usage` route (signed) and read
//! the kill switch from its `/status` route; budget-check runs on its schedule; alerts go
//! through alert-fanout to a Slack stand-in and the console, and those that order key actions
//! to key-guard, which stops the key at an Anthropic admin API stand-in; daily-aggregate runs
//! nightly. On day 18 a loop runs away on one key. The demo is seeded: the same seed gives
//! the same month, the same alerts and the same report.

mod standins;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use spendguard_app::flows::nightly::MemoryMetrics;
use spendguard_app::ports::clock::{Clock, FixedClock};
use spendguard_app::ports::secrets::SecretVault;
use spendguard_domain::alert::{AlertEvent, AlertKind};
use spendguard_domain::budgets_file::parse_budgets;
use spendguard_domain::period::{Period, YearMonth};
use spendguard_domain::scope::Scope;
use spendguard_domain::standard_webhooks::WebhookSecret;
use spendguard_local::file_vault::FileVault;

use crate::Failure;
use crate::local::{Local, Target, key_guard_subscribes, sns_event, write_private};
use crate::output::{err, errln, json_line, outln};
use crate::report::{self, Section};

const BUDGETS: &str = include_str!("budgets.toml");
/// The scope whose month the report draws, and the key that runs away.
pub const RUNAWAY_SCOPE: &str = "anthropic/research";
const RUNAWAY_KEY_SCOPE: &str = "anthropic/research/key-r1";
const RUNAWAY_KEY_ID: &str = "apikey_demo_research_r1";
const DAYS: i64 = 30;
const LOOP_STARTS: (u32, u32) = (18, 1); // day, hour (UTC)
const RESTORE_AT: (u32, u32) = (19, 10);

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the demo writes its store, budgets file, secrets and report.html.
    #[arg(long, value_name = "DIR", default_value = "spendguard-demo")]
    pub out: PathBuf,
    /// Seed of the simulated usage (the same seed gives the same month).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Print the timeline as JSON lines instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A small deterministic generator (xorshift64*), enough for plausible noise.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A multiplier in [1 - spread, 1 + spread], in thousandths.
    fn around(&mut self, spread_permille: u64) -> Decimal {
        let r = self.next() % (2 * spread_permille + 1);
        Decimal::new(1000 + r as i64 - spread_permille as i64, 3)
    }
}

/// One application's steady usage.
struct Stream {
    id: &'static str,
    scope: &'static str,
    provider: &'static str,
    model: &'static str,
    /// Average cost per day, USD cents.
    cents_per_day: i64,
    requests_per_day: i64,
    /// Reads the kill switch before calling its provider.
    guarded: bool,
}

const STREAMS: [Stream; 3] = [
    Stream {
        id: "chat",
        scope: "openai/prod/key-app1",
        provider: "openai",
        model: "gpt-4o",
        cents_per_day: 6_000,
        requests_per_day: 9_000,
        guarded: false,
    },
    Stream {
        id: "research",
        scope: RUNAWAY_KEY_SCOPE,
        provider: "anthropic",
        model: "claude-sonnet-4",
        cents_per_day: 2_200,
        requests_per_day: 1_400,
        guarded: true,
    },
    Stream {
        id: "lambda",
        scope: "aws/123456789012/lambda",
        provider: "aws",
        model: "lambda",
        cents_per_day: 4_500,
        requests_per_day: 2_000_000,
        guarded: false,
    },
];

/// Business hours carry most of the traffic; the weights average 1 over a day.
fn hour_weight(hour: u32) -> Decimal {
    if (8..20).contains(&hour) {
        Decimal::new(15, 1)
    } else {
        Decimal::new(5, 1)
    }
}

/// What happened, for the console and the report.
#[derive(Clone, serde::Serialize)]
struct Moment {
    at: DateTime<Utc>,
    what: String,
}

struct Timeline {
    moments: Vec<Moment>,
    json: bool,
    progress: bool,
}

impl Timeline {
    fn say(&mut self, at: DateTime<Utc>, what: impl Into<String>) {
        let m = Moment {
            at,
            what: what.into(),
        };
        if self.progress {
            err!("\r\x1b[2K");
        }
        if self.json {
            outln!("{}", json_line(&m));
        } else {
            outln!("{}  {}", m.at.format("%b %d %H:%M"), m.what);
        }
        self.moments.push(m);
    }

    fn progress(&self, day: i64, spent: Decimal) {
        if !self.progress {
            return;
        }
        let done = (day * 30 / DAYS) as usize;
        err!(
            "\r\x1b[2K[{}{}] day {day:>2}/{DAYS} · spent {} USD",
            "█".repeat(done),
            "░".repeat(30 - done),
            spent.round_dp(2)
        );
        let _ = std::io::stderr().flush();
    }
}

fn http_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> budget_webhook::http::HttpRequest {
    budget_webhook::http::HttpRequest {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        body,
    }
}

fn percent(v: &Decimal) -> String {
    format!("{}%", (v * Decimal::ONE_HUNDRED).round_dp(0))
}

fn describe(alert: &AlertEvent) -> String {
    match alert.kind {
        AlertKind::Budget => format!(
            "{} {} {} {}: {} of {} {} ({}%)",
            alert.severity.as_str().to_uppercase(),
            alert.budget_id,
            alert.window,
            Period::label_of_key(&alert.period_key),
            alert.spend.amount.round_dp(2),
            alert.limit.amount.normalize(),
            alert.limit.currency,
            alert.percent.round_dp(1)
        ),
        AlertKind::Recovery => format!(
            "recovered: {} {} {} (the {} tier is re-armed)",
            alert.budget_id,
            alert.window,
            Period::label_of_key(&alert.period_key),
            alert.tier
        ),
        _ => alert.summary.clone(),
    }
}

pub async fn run(args: DemoArgs) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let out = prepare(&args.out)?;
    let secrets = out.join("secrets");
    let (slack, inbox) = standins::slack().await?;
    let (anthropic, keys) = standins::anthropic().await?;
    keys.add(RUNAWAY_KEY_ID);
    write_private(
        &secrets.join("slack-webhook-url"),
        &format!("{}/services/demo", slack.url),
    )?;
    write_private(
        &secrets.join("anthropic-admin-key"),
        standins::ANTHROPIC_ADMIN_KEY,
    )?;
    let text = BUDGETS.replace("{secrets}", &secrets.display().to_string());
    let budgets_file = out.join("budgets.toml");
    std::fs::write(&budgets_file, &text)
        .map_err(|e| Failure::Run(format!("{}: {e}", budgets_file.display())))?;
    let policy = parse_budgets(&budgets_file.display().to_string(), &text)
        .map_err(|e| Failure::Run(format!("the demo's budgets: {e}")))?;

    let start = Utc
        .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    let clock = Arc::new(FixedClock::new(start));
    let overrides = BTreeMap::from([
        (
            "SPENDGUARD_ANTHROPIC_ADMIN_KEY_ARN".to_string(),
            format!("file:{}", secrets.join("anthropic-admin-key").display()),
        ),
        (
            "SPENDGUARD_ANTHROPIC_API_URL".to_string(),
            anthropic.url.clone(),
        ),
        ("SPENDGUARD_OPENAI_ADMIN_KEY_ARN".to_string(), String::new()),
        ("SPENDGUARD_SNS_TOPIC_ARNS".to_string(), String::new()),
        ("SPENDGUARD_GCP_PUSH_AUDIENCE".to_string(), String::new()),
        (
            "SPENDGUARD_GCP_PUSH_SERVICE_ACCOUNT".to_string(),
            String::new(),
        ),
    ]);
    let local = Local::new(
        &Target::Embedded {
            store: out.join("state.db"),
        },
        clock.clone(),
        overrides,
    )
    .await?;
    let store = local.store();
    store
        .put_policy(&policy)
        .await
        .map_err(|e| Failure::Run(e.to_string()))?;
    let webhook = local.webhook().await?;
    let checker = local.checker().await?;
    let fanout = local.fanout()?;
    let guard = local.key_guard().await?;
    let metrics = Arc::new(MemoryMetrics::default());
    let nightly = local.nightly(metrics.clone());
    let env = local.env();
    let usage_secret = FileVault
        .read(
            &env.required("SPENDGUARD_USAGE_SECRET_ARN", "usage secret")
                .map_err(|e| Failure::Run(e.to_string()))?,
        )
        .await
        .map_err(|e| Failure::Run(e.to_string()))?;
    let signer = WebhookSecret::parse_list(usage_secret.expose()).map_err(Failure::Run)?[0].clone();
    let status_token = FileVault
        .read(
            &env.required("SPENDGUARD_STATUS_TOKEN_ARN", "status token")
                .map_err(|e| Failure::Run(e.to_string()))?,
        )
        .await
        .map_err(|e| Failure::Run(e.to_string()))?;

    let mut timeline = Timeline {
        moments: Vec::new(),
        json: args.json,
        progress: std::io::stderr().is_terminal() && !args.json,
    };
    timeline.say(
        start,
        format!(
            "a month of usage: OpenAI, Anthropic and an AWS account; {} budgets; seed {}",
            policy.budgets.len(),
            args.seed
        ),
    );
    let mut noise = Noise(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut delivered = 0usize;
    // what Slack received, and when
    let mut slack_received: Vec<(DateTime<Utc>, String)> = Vec::new();
    let mut spent = Decimal::ZERO;
    let mut runaway_on = false;
    let mut last_seen = (String::from("open"), Decimal::ONE);
    let mut refused_calls = 0u64;
    let mut reports = 0usize;
    let mut alerts = 0usize;
    // what the guarded application reported, and when its keys were stopped
    let mut guarded_spent = Decimal::ZERO;
    let mut stopped_at: Option<(DateTime<Utc>, Decimal)> = None;

    // one hour past the month: the last night's roll-up and its deliveries
    for hour in 0..=DAYS * 24 {
        let t = start + Duration::hours(hour);
        let month_over = hour == DAYS * 24;
        let (day, hour_of_day) = (hour / 24 + 1, (hour % 24) as u32);
        clock.set(t);

        // the nightly roll-up of yesterday, half an hour after midnight
        if hour_of_day == 0 && day > 1 {
            clock.set(t + Duration::minutes(30));
            daily_aggregate::handler::handle(&nightly, json!({}))
                .await
                .map_err(|e| Failure::Run(format!("daily-aggregate: {e}")))?;
            clock.set(t);
        }

        if !month_over {
            // the operator restores the scope the morning after
            if (day as u32, hour_of_day) == RESTORE_AT {
                if let Some((at, before)) = stopped_at {
                    timeline.say(
                        t,
                        format!(
                            "the spend curve is flat: {RUNAWAY_KEY_SCOPE} reported {} USD in the {} hours since its keys were stopped (the loop was spending ~30 USD an hour)",
                            (guarded_spent - before).round_dp(2),
                            (t - at).num_hours()
                        ),
                    );
                }
                let report = guard
                .handle(json!({"action": "restore", "scope": RUNAWAY_KEY_SCOPE, "actor": "operator (demo)"}))
                .await
                .map_err(|e| Failure::Run(format!("key-guard restore: {e}")))?;
                timeline.say(
                t,
                format!(
                    "operator restores {RUNAWAY_KEY_SCOPE}: key re-enabled at Anthropic ({}), limit factor {}",
                    if keys.active(RUNAWAY_KEY_ID) { "active" } else { "still inactive" },
                    report["limit_factor"].as_str().unwrap_or("?")
                ),
            );
            }
            if (day as u32, hour_of_day) == LOOP_STARTS {
                runaway_on = true;
                timeline.say(
                    t,
                    format!("a retry loop runs away on {RUNAWAY_KEY_SCOPE}: about 30 USD an hour"),
                );
            }

            // the applications: each reads its kill switch, then calls its provider and reports usage
            let mut records = Vec::new();
            for s in &STREAMS {
                let mut factor = Decimal::ONE;
                if s.guarded {
                    let status = webhook
                        .http(http_request(
                            "GET",
                            "/status",
                            &format!("scope={}", s.scope),
                            &[("authorization", format!("Bearer {}", status_token.expose()))],
                            Vec::new(),
                        ))
                        .await;
                    let state = status.body["state"].as_str().unwrap_or("open").to_string();
                    factor = status.body["limit_factor"]
                        .as_str()
                        .and_then(|f| f.parse().ok())
                        .unwrap_or(Decimal::ONE);
                    if (state.clone(), factor) != last_seen {
                        let what = match state.as_str() {
                            "engaged" => {
                                "the application reads the kill switch: engaged — it stops calling"
                                    .to_string()
                            }
                            "restoring" => format!(
                                "the application ramps up: limit factor {}",
                                percent(&factor)
                            ),
                            _ => "the kill switch is open again: full traffic".to_string(),
                        };
                        timeline.say(t, what);
                        last_seen = (state.clone(), factor);
                    }
                    if !keys.active(RUNAWAY_KEY_ID) {
                        // the provider refuses a disabled key, whatever the application does
                        if state != "engaged" {
                            refused_calls += 1;
                        }
                        continue;
                    }
                    if state == "engaged" {
                        continue;
                    }
                }
                let weight = hour_weight(hour_of_day) * noise.around(250) * factor;
                let cents = Decimal::from(s.cents_per_day) * weight / Decimal::from(24);
                let cost = (cents / Decimal::ONE_HUNDRED).round_dp(4);
                let requests = (Decimal::from(s.requests_per_day) * weight / Decimal::from(24))
                    .round()
                    .max(Decimal::ONE);
                records.push(usage_record(
                    s,
                    &format!("{}-{hour}", s.id),
                    t,
                    cost,
                    requests,
                ));
                spent += cost;
                if s.guarded {
                    guarded_spent += cost;
                }
                if s.guarded && runaway_on {
                    let cost = (Decimal::from(30) * noise.around(100)).round_dp(4);
                    records.push(usage_record(
                        s,
                        &format!("loop-{hour}"),
                        t,
                        cost,
                        Decimal::from(1_800),
                    ));
                    spent += cost;
                    guarded_spent += cost;
                }
            }
            if runaway_on && !keys.active(RUNAWAY_KEY_ID) {
                runaway_on = false; // the loop died with its key; the developers fix it before restore
            }

            // the batch is reported at the end of the hour, signed as Standard Webhooks
            let sent_at = t + Duration::hours(1) - Duration::seconds(1);
            clock.set(sent_at);
            let body = serde_json::to_vec(&json!({ "records": records })).unwrap_or_default();
            let id = format!("msg_demo_{hour}");
            let signature = signer.sign(&id, sent_at.timestamp(), &body);
            let response = webhook
                .http(http_request(
                    "POST",
                    "/usage",
                    "",
                    &[
                        ("content-type", "application/json".into()),
                        ("webhook-id", id),
                        ("webhook-timestamp", sent_at.timestamp().to_string()),
                        ("webhook-signature", signature),
                    ],
                    body,
                ))
                .await;
            if !response.is_success() {
                return Err(Failure::Run(format!(
                    "budget-webhook refused the demo's usage ({}): {}",
                    response.status, response.body
                )));
            }

            // the scheduled check
            clock.set(t + Duration::hours(1));
            budget_check::handler::handle(&checker, json!({"source": "spendguard.schedule"}))
                .await
                .map_err(|e| Failure::Run(format!("budget-check: {e}")))?;
        }
        // everything published goes to its subscribers
        for alert in local.events().into_iter().skip(delivered) {
            delivered += 1;
            let seen = inbox.messages().len();
            let result = fanout
                .handle(sns_event(&alert))
                .await
                .map_err(|e| Failure::Run(format!("alert-fanout: {e}")))?;
            slack_received.extend(inbox.messages().iter().skip(seen).map(|m| {
                (
                    clock.now(),
                    m["text"].as_str().unwrap_or_default().to_string(),
                )
            }));
            if alert.kind == AlertKind::Report {
                reports += 1;
                continue;
            }
            alerts += 1;
            let channels = channels_sent(&result);
            timeline.say(
                alert.raised_at,
                format!("{} → {channels}", describe(&alert)),
            );
            if key_guard_subscribes(&alert) {
                let report = guard
                    .handle(sns_event(&alert))
                    .await
                    .map_err(|e| Failure::Run(format!("key-guard: {e}")))?;
                for r in report["alerts"].as_array().into_iter().flatten() {
                    if r.get("switch").is_some() {
                        stopped_at.get_or_insert((clock.now(), guarded_spent));
                        timeline.say(
                            alert.raised_at,
                            format!(
                                "key-guard: kill switch on {} {}; {}",
                                r["scope"].as_str().unwrap_or_default(),
                                r["switch"].as_str().unwrap_or_default(),
                                keys_summary(r, &keys)
                            ),
                        );
                    }
                }
            }
        }
        timeline.progress(day.min(DAYS), spent);
    }
    if timeline.progress {
        errln!();
    }

    let scope = Scope::parse(RUNAWAY_SCOPE).map_err(|e| Failure::Run(e.to_string()))?;
    let month = report::gather(
        store.as_ref(),
        &scope,
        YearMonth {
            year: 2026,
            month: 11,
        },
    )
    .await
    .map_err(|e| Failure::Run(e.to_string()))?;
    let slack_rows = slack_received
        .into_iter()
        .map(|(at, text)| (at.format("%b %d %H:%M UTC").to_string(), text))
        .collect();
    let page = report::html(
        &month,
        &format!(
            "spendguard demo (seed {}): a month of simulated usage on the embedded store, with a runaway loop on {RUNAWAY_KEY_SCOPE} on day {}. Every figure below was computed by spendguard's own handlers.",
            args.seed, LOOP_STARTS.0
        ),
        &[
            Section {
                title: "Timeline".into(),
                rows: timeline
                    .moments
                    .iter()
                    .map(|m| (m.at.format("%b %d %H:%M UTC").to_string(), m.what.clone()))
                    .collect(),
            },
            Section {
                title: "What Slack received".into(),
                rows: slack_rows,
            },
        ],
    );
    let report_path = out.join("report.html");
    std::fs::write(&report_path, page)
        .map_err(|e| Failure::Run(format!("{}: {e}", report_path.display())))?;
    let summary = json!({
        "spent": spent.round_dp(2).to_string(),
        "alerts": alerts,
        "daily_reports": reports,
        "slack_messages": inbox.messages().len(),
        "calls_refused_by_provider": refused_calls,
        "metrics_lines": metrics.0.lock().map(|m| m.len()).unwrap_or(0),
        "report": report_path.display().to_string(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    if args.json {
        outln!("{summary}");
    } else {
        outln!(
            "\n{} USD spent in November; {} alerts, {} Slack messages, {} daily reports; {:.1} s.",
            summary["spent"].as_str().unwrap_or_default(),
            summary["alerts"],
            summary["slack_messages"],
            reports,
            started.elapsed().as_secs_f64()
        );
        outln!("Report: {}", report_path.display());
        outln!(
            "Store: {} (try `spendguard status --store {0}`)",
            out.join("state.db").display()
        );
    }
    Ok(())
}

fn usage_record(s: &Stream, id: &str, t: DateTime<Utc>, cost: Decimal, requests: Decimal) -> Value {
    json!({
        "id": id,
        "scope": s.scope,
        "provider": s.provider,
        "model": s.model,
        "requests": requests.to_string().parse::<i64>().unwrap_or(1),
        "cost": {"amount": cost.to_string(), "currency": "USD"},
        "timestamp": (t + Duration::minutes(30)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "feature": s.id,
    })
}

fn channels_sent(result: &Value) -> String {
    let list: Vec<String> = result["delivered"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["channels"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| {
            let pair = c.as_array()?;
            Some(format!(
                "{} {}",
                pair.first()?.as_str()?,
                pair.get(1)?["outcome"].as_str().unwrap_or("?")
            ))
        })
        .collect();
    if list.is_empty() {
        result.to_string()
    } else {
        list.join(", ")
    }
}

fn keys_summary(report: &Value, keys: &standins::AnthropicKeys) -> String {
    let stopped: Vec<String> = report["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| {
            format!(
                "key {} {}",
                k["key_id"].as_str().unwrap_or_default(),
                k["outcome"].as_str().unwrap_or("handled").replace('_', " ")
            )
        })
        .collect();
    format!(
        "{} (Anthropic now reports the key {})",
        if stopped.is_empty() {
            "no keys".to_string()
        } else {
            stopped.join(", ")
        },
        if keys.active(RUNAWAY_KEY_ID) {
            "active"
        } else {
            "inactive"
        }
    )
}

/// A fresh output folder: the previous demo's store is removed, nothing else.
fn prepare(out: &Path) -> Result<PathBuf, Failure> {
    std::fs::create_dir_all(out.join("secrets"))
        .map_err(|e| Failure::Run(format!("{}: {e}", out.display())))?;
    let out = out
        .canonicalize()
        .map_err(|e| Failure::Run(format!("{}: {e}", out.display())))?;
    crate::serve::refuse_if_served(&out.join("state.db"))?;
    for name in ["state.db", "state.db-wal", "state.db-shm", "report.html"] {
        let path = out.join(name);
        if path.exists() {
            std::fs::remove_file(&path)
                .map_err(|e| Failure::Run(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(out)
}
