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
        "SECURITY CRITICAL: key anthropic-research-r1 (anthropic/research/key-r1) in the hour from 18 Nov 2026 01:00 UTC",
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
            "--window-size=1000,800",
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
        ("spend per day bars", "#a5d8ff"),
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

/// The `<svg>` element of a report page, parsed.
fn chart(page: &str) -> String {
    let start = page.find("<svg").expect("an <svg> in the page");
    let end = page.find("</svg>").expect("a closed <svg>") + "</svg>".len();
    page[start..end].to_string()
}

fn number(node: roxmltree::Node, attribute: &str) -> f64 {
    node.attribute(attribute)
        .unwrap_or_else(|| panic!("{node:?} has no {attribute}"))
        .parse()
        .unwrap()
}

fn instant(text: &str) -> chrono::DateTime<chrono::Utc> {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// A drawn area: x, y, width, height.
fn area(node: roxmltree::Node) -> (f64, f64, f64, f64) {
    (
        number(node, "x"),
        number(node, "y"),
        number(node, "width"),
        number(node, "height"),
    )
}

fn intersect(a: (f64, f64, f64, f64), b: (f64, f64, f64, f64)) -> bool {
    a.0 < b.0 + b.2 && b.0 < a.0 + a.2 && a.1 < b.1 + b.3 && b.1 < a.1 + a.3
}

/// Issue 25 §5: one time axis for the days and the moments keys were stopped and restored,
/// ticks at midnights named by date, the legend beside the data instead of on it, the daily
/// window's bars and limit, the money axis in the currency, the days as a table, and no
/// store key on the page.
#[test]
fn the_report_draws_days_and_key_stops_on_one_time_axis_with_the_legend_outside_the_plot() {
    let dir = tempfile::tempdir().unwrap();
    demo(dir.path());
    let page = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    let svg = chart(&page);
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let by_id = |id: &str| {
        doc.descendants()
            .find(|n| n.attribute("id") == Some(id))
            .unwrap_or_else(|| panic!("no #{id} in the chart"))
    };
    let with_class = |class: &str| -> Vec<roxmltree::Node> {
        doc.descendants()
            .filter(|n| {
                n.attribute("class")
                    .is_some_and(|c| c.split(' ').any(|c| c == class))
            })
            .collect()
    };
    // the axis: the plot's left edge is its `from` instant, its right edge its `to`
    let plot = by_id("plot");
    let (left, width) = (number(plot, "x"), number(plot, "width"));
    let from = instant(plot.attribute("data-from").unwrap());
    let to = instant(plot.attribute("data-to").unwrap());
    assert_eq!(
        (from.to_rfc3339(), to.to_rfc3339()),
        (
            "2026-11-01T00:00:00+00:00".into(),
            "2026-12-01T00:00:00+00:00".into()
        )
    );
    let x_of = |at: chrono::DateTime<chrono::Utc>| {
        left + (at - from).num_seconds() as f64 / (to - from).num_seconds() as f64 * width
    };

    let kill = with_class("marker-kill");
    let kill = kill
        .iter()
        .find(|n| n.tag_name().name() == "line")
        .expect("a kill marker line");
    let stopped_at = instant(kill.attribute("data-at").unwrap());
    assert_eq!(stopped_at, instant("2026-11-18T02:00:00Z"));
    assert!(
        (number(*kill, "x1") - x_of(stopped_at)).abs() < 0.06,
        "the kill marker is drawn at its instant: x {} vs {}",
        number(*kill, "x1"),
        x_of(stopped_at)
    );
    let tick_labels = with_class("tick-label");
    let nov_18 = tick_labels
        .iter()
        .find(|n| n.text() == Some("Nov 18"))
        .unwrap_or_else(|| panic!("no tick labelled Nov 18: {tick_labels:?}"));
    let midnight = x_of(instant("2026-11-18T00:00:00Z"));
    assert!(
        (number(*nov_18, "x") - midnight).abs() < 0.06,
        "the Nov 18 tick is at midnight: {} vs {midnight}",
        number(*nov_18, "x")
    );
    assert!(
        number(*kill, "x1") > midnight
            && number(*kill, "x1") < x_of(instant("2026-11-19T00:00:00Z")),
        "the kill lies just right of the Nov 18 tick"
    );
    for label in &tick_labels {
        let at = instant(label.attribute("data-at").unwrap());
        assert_eq!(at.time(), chrono::NaiveTime::MIN, "ticks at midnights");
        assert_eq!(
            label.text().unwrap(),
            at.format("%b %-d").to_string(),
            "ticks named by date"
        );
    }
    // day d: a bar across the day, its month to date at the midnight after it
    let bars = with_class("day-bar");
    assert_eq!(bars.len(), 30, "a bar per day");
    let runaway_day = bars
        .iter()
        .find(|b| b.attribute("data-day") == Some("2026-11-18"))
        .expect("a bar for Nov 18");
    assert!((number(*runaway_day, "x") - midnight).abs() < 0.06);
    assert!(
        (number(*runaway_day, "x") + number(*runaway_day, "width")
            - x_of(instant("2026-11-19T00:00:00Z")))
        .abs()
            < 0.06
    );
    let spend = with_class("spend")[0];
    let points: Vec<(f64, f64)> = spend
        .attribute("points")
        .unwrap()
        .split(' ')
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect();
    assert_eq!(
        points.len(),
        31,
        "the 1st's midnight and the end of each day"
    );
    assert!((points[18].0 - x_of(instant("2026-11-19T00:00:00Z"))).abs() < 0.06);
    // the daily window's limit is drawn in the daily bars' panel
    let daily_limit = with_class("daily-limit");
    assert!(!daily_limit.is_empty(), "the daily window's limit line");
    assert!(
        with_class("daily-limit-label")
            .iter()
            .any(|t| t.text() == Some("daily limit 150"))
    );

    // the legend in its own area, naming what is drawn, in the markers' words
    let legend = area(by_id("legend-area"));
    for panel in ["plot", "daily-plot"] {
        assert!(
            !intersect(legend, area(by_id(panel))),
            "the legend {legend:?} overlaps #{panel}"
        );
    }
    let entries: Vec<&str> = with_class("legend-entry")
        .iter()
        .map(|n| n.text().unwrap())
        .collect();
    assert_eq!(
        entries,
        [
            "month to date",
            "forecast (end of month)",
            "without spendguard",
            "spend per day",
            "keys stopped",
            "restored"
        ]
    );
    for entry in with_class("legend-entry") {
        let (x, y) = (number(entry, "x"), number(entry, "y"));
        assert!(
            x >= legend.0 && x <= legend.0 + legend.2 && y >= legend.1 && y <= legend.1 + legend.3,
            "{:?} is outside the legend's area",
            entry.text()
        );
    }
    let marker_words: Vec<&str> = with_class("marker-label")
        .iter()
        .map(|n| n.text().unwrap())
        .collect();
    assert_eq!(marker_words, ["keys stopped", "restored"]);

    // the money axes name the currency; ticks are grouped by thousands
    let axis_titles: Vec<&str> = with_class("axis-title")
        .iter()
        .map(|n| n.text().unwrap())
        .collect();
    assert!(
        axis_titles.len() == 2 && axis_titles.iter().all(|t| t.contains("USD")),
        "{axis_titles:?}"
    );
    assert!(
        with_class("y-tick")
            .iter()
            .any(|t| t.text() == Some("1,000")),
        "y ticks with thousands separators"
    );

    // the page: figures in the header, the days as a table, readable instants, no store keys
    for part in [
        "% used",
        "forecast % of budget",
        "daily window",
        "<th>Day</th><th class=\"num\">Spent</th><th class=\"num\">Month to date</th><th class=\"num\">Forecast</th><th class=\"num\">% of budget</th>",
        "td.num,th.num{text-align:right",
    ] {
        assert!(page.contains(part), "the page lacks {part}");
    }
    let slack = page
        .split("<h2>What Slack received</h2>")
        .nth(1)
        .expect("a Slack section");
    assert!(
        slack.starts_with("<table><tr><td>Nov 18 02:00 UTC</td>"),
        "the time of each message first: {}",
        &slack[..200.min(slack.len())]
    );
    for key in ["M#", "W#", "D#", "H#", "2026-11-18T01"] {
        assert!(!page.contains(key), "the page shows a store key: {key}");
    }
    assert!(!page.contains("∞x"), "no infinite multiples of nothing");

    // a scope without data: an error naming the scopes that have some, nothing written
    let store = dir.path().join("state.db");
    for json in [false, true] {
        let out = dir.path().join("nothing.html");
        let mut args = vec!["report", "--scope", "openai/nothing", "--month", "2026-11"];
        if json {
            args.push("--json");
        }
        let run = Command::new(env!("CARGO_BIN_EXE_spendguard"))
            .current_dir(repo())
            .args(&args)
            .arg("--out")
            .arg(&out)
            .arg("--store")
            .arg(&store)
            .output()
            .unwrap();
        let err = text(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with(
                "error: no nightly summaries for openai/nothing in 2026-11; scopes with data: "
            ) && err.contains("anthropic/research"),
            "{err}"
        );
        assert!(run.stdout.is_empty() && !out.exists(), "nothing written");
    }
    let json = month_report(&store);
    assert_eq!(json["schema_version"], 1);
    assert_eq!(
        json["without_spendguard"]["from"], "2026-11-18T02:00:00Z",
        "the projection starts when keys were stopped"
    );
}
