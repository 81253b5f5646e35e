//! `spendguard demo` as a new user runs it: the whole month end to end on the real handlers,
//! reproducible from its seed, and a report that renders in a browser with the tier lines and
//! the moment keys were stopped.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the demo into `out` and returns its timeline (one JSON object per line) and summary.
fn demo(out: &Path) -> (Vec<Value>, Value) {
    let run = Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .current_dir(repo())
        .args(["demo", "--json", "--out"])
        .arg(out)
        .output()
        .expect("run spendguard demo");
    assert!(run.status.success(), "{}", text(&run.stderr));
    let mut lines: Vec<Value> = text(&run.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let summary = lines.pop().expect("a summary line");
    (lines, summary)
}

fn position(timeline: &[Value], needle: &str) -> usize {
    timeline
        .iter()
        .position(|m| m["what"].as_str().unwrap_or_default().contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` is not in the timeline: {timeline:#?}"))
}

fn month_report(store: &Path) -> Value {
    let run = Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .current_dir(repo())
        .args([
            "report",
            "--scope",
            "anthropic/research",
            "--month",
            "2026-11",
            "--json",
            "--store",
        ])
        .arg(store)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));
    serde_json::from_slice(&run.stdout).unwrap()
}

fn amount(v: &Value) -> f64 {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn the_demo_runs_a_month_end_to_end_and_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let (timeline, summary) = demo(&dir.path().join("a"));

    // the story, in order: the loop, the theft detector's finding at the next hourly check,
    // kill switch and key, the application stopping, restore, ramp
    let loop_starts = position(&timeline, "a retry loop runs away");
    let finding = position(
        &timeline,
        "SECURITY CRITICAL: key anthropic-research-r1 (anthropic/research/key-r1) 2026-11-18 01:00 UTC",
    );
    let kill = position(
        &timeline,
        "kill switch on anthropic/research/key-r1 engaged",
    );
    let stops = position(&timeline, "kill switch: engaged — it stops calling");
    let flat = position(
        &timeline,
        "the spend curve is flat: anthropic/research/key-r1 reported 0.00 USD",
    );
    let restore = position(&timeline, "operator restores anthropic/research/key-r1");
    let ramp = position(&timeline, "ramps up: limit factor 50%");
    let open = position(&timeline, "open again: full traffic");
    assert!(loop_starts < finding && finding < kill);
    assert!(kill < stops && stops < flat && flat < restore && restore < ramp && ramp < open);
    assert_eq!(
        (
            timeline[loop_starts]["at"].as_str(),
            timeline[kill]["at"].as_str()
        ),
        (Some("2026-11-18T01:00:00Z"), Some("2026-11-18T02:00:00Z")),
        "stopped by the first check after the loop's first hour"
    );
    let finding_text = timeline[finding]["what"].as_str().unwrap();
    assert!(
        finding_text.contains("requests in one minute") && finding_text.contains("x the usual"),
        "a burst and a spike: {finding_text}"
    );
    // caught an hour in: the research workspace's daily budget is never reached
    assert!(
        !timeline.iter().any(|m| m["what"]
            .as_str()
            .unwrap()
            .contains("anthropic-research daily")),
        "no daily tier of anthropic-research"
    );
    let kill_text = timeline[kill]["what"].as_str().unwrap();
    assert!(
        kill_text.contains("key anthropic-research-r1 disabled")
            && kill_text.contains("Anthropic now reports the key inactive"),
        "{kill_text}"
    );
    assert!(
        timeline[restore]["what"]
            .as_str()
            .unwrap()
            .contains("re-enabled at Anthropic (active)")
    );
    // every alert reached the Slack stand-in once
    assert!(
        timeline
            .iter()
            .filter(|m| m["what"].as_str().unwrap().contains("→"))
            .all(|m| m["what"].as_str().unwrap().contains("ops-slack sent"))
    );
    assert_eq!(summary["alerts"], summary["slack_messages"]);
    assert_eq!(summary["daily_reports"], 30);

    // the spend curve flattens while the keys are stopped, from the nightly summaries
    let report = month_report(&dir.path().join("a/state.db"));
    let days = report["days"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    let spend = |day: usize| amount(&days[day - 1]["spend"]);
    assert!(
        spend(18) > 30.0 && spend(18) < 40.0,
        "the runaway day: one hour of the loop (~30 USD), then nothing: {}",
        spend(18)
    );
    assert!(
        spend(19) < spend(17),
        "day 19 is stopped until 10:00 then ramps: {} vs {}",
        spend(19),
        spend(17)
    );
    let kinds: Vec<&str> = report["markers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["kill", "restore"]);
    assert!(
        report["markers"][0]["at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-18T02:00")
    );
    let page = std::fs::read_to_string(dir.path().join("a/report.html")).unwrap();
    for part in [
        "<svg",
        "tier tier-warning",
        "tier tier-critical",
        "tier tier-emergency",
        "marker marker-kill",
        "class=\"forecast\"",
        "class=\"spend\"",
    ] {
        assert!(page.contains(part), "report.html lacks {part}");
    }

    // the same seed gives the same month and the same page
    let (again, _) = demo(&dir.path().join("b"));
    assert_eq!(timeline, again);
    let page_b = std::fs::read_to_string(dir.path().join("b/report.html")).unwrap();
    assert_eq!(page, page_b);
}

/// Where Chromium is: `SPENDGUARD_CHROMIUM`, else `chromium` on the PATH (scripts/test installs
/// Debian's package).
fn chromium() -> PathBuf {
    if let Ok(path) = std::env::var("SPENDGUARD_CHROMIUM") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
                .find(|p| p.is_file())
        })
        .expect("Chromium is needed for the report screenshot: scripts/test installs it on Debian (apt-get install chromium), or set SPENDGUARD_CHROMIUM")
}

/// Pixels of exactly this colour in an RGB(A) screenshot.
fn count_colour(png_path: &Path, hex: &str) -> usize {
    let want: Vec<u8> = (1..7)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buffer).unwrap();
    let channels = match frame.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected colour type {other:?}"),
    };
    buffer[..frame.buffer_size()]
        .chunks(channels)
        .filter(|p| p[..3] == want[..])
        .count()
}

#[test]
fn the_report_renders_in_chromium_with_tier_lines_and_the_kill_moment() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    let shot = repo().join("target/spendguard-demo-report.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let run = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1000,640",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!(
            "file://{}",
            dir.path().join("report.html").display()
        ))
        .output()
        .expect("start Chromium");
    assert!(shot.is_file(), "no screenshot: {}", text(&run.stderr));
    // the chart's lines are drawn crisp, so their exact colours are on the screen
    for (what, colour) in [
        ("warning tier line", "#f2a900"),
        ("critical tier line", "#e8590c"),
        ("emergency tier line", "#b00020"),
        ("kill moment", "#d6336c"),
        ("restore moment", "#2b8a3e"),
    ] {
        let pixels = count_colour(&shot, colour);
        assert!(
            pixels > 300,
            "{what} ({colour}): {pixels} pixels in {}",
            shot.display()
        );
    }
}

/// Secrets never reach the logs: the whole demo (every function, the stand-ins, HTTP clients)
/// at TRACE level, searched for each secret it used.
#[test]
fn no_secret_reaches_the_logs_of_a_whole_demo_month() {
    let dir = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_spendguard"))
        .current_dir(repo())
        .env("SPENDGUARD_LOG", "trace")
        .args(["demo", "--out"])
        .arg(dir.path())
        .output()
        .expect("run spendguard demo");
    assert!(run.status.success(), "{}", text(&run.stderr));
    let logs = format!("{}{}", text(&run.stdout), text(&run.stderr));
    assert!(
        logs.lines().count() > 1_000,
        "TRACE logging was on: {} lines",
        logs.lines().count()
    );
    let secrets = dir.path().join("secrets");
    for name in [
        "usage-webhook",
        "status-token",
        "slack-webhook-url",
        "anthropic-admin-key",
    ] {
        let secret = std::fs::read_to_string(secrets.join(name)).unwrap();
        let secret = secret.trim();
        assert!(secret.len() >= 16, "{name}");
        // the whole value, and its distinctive part (a URL's path, a key without its prefix)
        let tail = &secret[secret.len() - 12..];
        assert!(
            !logs.contains(secret) && !logs.contains(tail),
            "{name} appears in the logs"
        );
    }
}
