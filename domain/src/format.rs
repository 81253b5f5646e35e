//! What each channel receives, built from an alert by pure functions (golden-tested in
//! `functions/alert-fanout/tests/golden/`). Every text a person reads says what happened,
//! how far along the budget is, what was ordered, and where the runbook is.

use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::alert::AlarmState;
use crate::alert::{AlertDetails, AlertEvent, AlertKind, UNEVALUABLE_TIER};
use crate::budget::Severity;
use crate::daily::DailyReport;
use crate::forecast::Forecast;
use crate::message::Message;
use crate::money::{Money, display_amount};
use crate::period::Period;

/// `1234567.891` -> `1,234,567.89`.
pub fn grouped(amount: Decimal) -> String {
    let text = display_amount(amount);
    let (sign, digits) = text
        .strip_prefix('-')
        .map_or(("", text.as_str()), |d| ("-", d));
    let (int, frac) = digits.split_once('.').unwrap_or((digits, "00"));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}.{frac}")
}

/// `H#2026-11-23T03` -> `23 Nov 2026 03:00 UTC` (any other key as it is).
fn hour_label(key: &str) -> String {
    let hour = key.trim_start_matches("H#");
    chrono::NaiveDateTime::parse_from_str(&format!("{hour}:00"), "%Y-%m-%dT%H:%M").map_or_else(
        |_| hour.to_string(),
        |h| h.format("%-d %b %Y %H:%M UTC").to_string(),
    )
}

pub fn money(m: &Money) -> String {
    format!("{} {}", grouped(m.amount), m.currency)
}

fn forecast(e: &AlertEvent) -> String {
    match e.forecast {
        Forecast::Projected(f) => money(&Money::new(f, e.spend.currency)),
        Forecast::TooEarly => "too early to tell".into(),
        Forecast::Implausible(f) => format!(
            "implausible ({}), not acted on",
            money(&Money::new(f, e.spend.currency))
        ),
    }
}

fn actions(e: &AlertEvent) -> String {
    if e.kind == AlertKind::Recovery {
        return "none (recovered)".into();
    }
    if e.actions.is_empty() {
        "none".into()
    } else {
        e.actions
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The alarm an [`AlertKind::Alarm`] alert is about, and its new state.
fn alarm(e: &AlertEvent) -> Option<(&str, AlarmState)> {
    match &e.details {
        AlertDetails::Alarm { alarm, state, .. } => Some((alarm, *state)),
        _ => None,
    }
}

fn marker(e: &AlertEvent) -> &'static str {
    match (e.kind, e.severity) {
        (AlertKind::Alarm, _) => match alarm(e).map(|(_, state)| state) {
            Some(AlarmState::Ok) => "✅",
            Some(AlarmState::InsufficientData) => "❔",
            _ => "🔔",
        },
        (AlertKind::Recovery, _) => "✅",
        (AlertKind::Escalation, _) => "⏫",
        (AlertKind::Anomaly, _) => "📈",
        (AlertKind::Report, _) => "📊",
        (AlertKind::Security, _) => "🚨",
        (AlertKind::Unevaluable, _) => "⚠️",
        (AlertKind::Drill, _) => "🧯",
        (_, Severity::Emergency) => "🔴",
        (_, Severity::Critical) => "🟠",
        (_, Severity::Warning) => "🟡",
        (_, Severity::Info) => "ℹ️",
    }
}

/// One line that says it all: `🔴 EMERGENCY: openai-dev-key daily budget at 112.0 % (tier emergency)`.
pub fn headline(e: &AlertEvent) -> String {
    let what = match e.kind {
        AlertKind::Budget => format!(
            "{}: {} {} budget at {} % (tier {})",
            e.severity.as_str().to_uppercase(),
            e.budget_id,
            e.window,
            e.percent,
            e.tier
        ),
        AlertKind::Recovery if e.tier.starts_with("security-") => format!(
            "RECOVERED: {} is back to its usual use; the {} throttle is lifted",
            e.scope, e.tier
        ),
        AlertKind::Recovery if e.tier == UNEVALUABLE_TIER => format!(
            "RECOVERED: {} {} budget can be evaluated again",
            e.budget_id, e.window
        ),
        AlertKind::Unevaluable => format!(
            "CANNOT EVALUATE: {} {} budget ({}): {}",
            e.budget_id,
            e.window,
            Period::label_of_key(&e.period_key),
            unevaluable_reason(e)
        ),
        AlertKind::Recovery => format!(
            "RECOVERED: {} {} budget, tier {} is over",
            e.budget_id, e.window, e.tier
        ),
        AlertKind::Escalation => format!(
            "ESCALATED to level {}: {} {} budget at {} % (tier {}), not acknowledged",
            e.escalation_level.unwrap_or(1),
            e.budget_id,
            e.window,
            e.percent,
            e.tier
        ),
        AlertKind::Anomaly => format!(
            "ANOMALY: {} spent {} on {}, {} % of its usual day ({})",
            e.scope,
            money(&e.spend),
            e.period_key.trim_start_matches("D#"),
            e.percent,
            money(&e.limit)
        ),
        AlertKind::Security => format!(
            "SECURITY {}: key {} ({}) in the hour from {}",
            e.tier.trim_start_matches("security-").to_uppercase(),
            finding_key(e).unwrap_or("?"),
            e.scope,
            hour_label(&e.period_key)
        ),
        AlertKind::Report => format!(
            "Daily spend {}: {}",
            e.period_key.trim_start_matches("D#"),
            money(&e.spend)
        ),
        AlertKind::Drill => {
            // critical: a stop would fail; a warning: a provider cap was changed by hand
            let what = if e.severity >= Severity::Critical {
                "STOP PATH BROKEN"
            } else {
                "NOT AS CONFIGURED"
            };
            match &e.details {
                AlertDetails::Drill {
                    subject, problem, ..
                } => format!("{what}: {subject}: {problem}"),
                _ => format!("{what} under {}", e.scope),
            }
        }
        AlertKind::Alarm => match alarm(e) {
            Some((name, AlarmState::Alarm)) => format!("ALARM: {name}"),
            Some((name, AlarmState::Ok)) => format!("RESOLVED: {name} is OK again"),
            Some((name, AlarmState::InsufficientData)) => {
                format!("INSUFFICIENT DATA: {name} cannot tell")
            }
            None => "ALARM".into(),
        },
    };
    format!("{} {what}", marker(e))
}

/// A report list rendered one entry at a time by `render` ("none" when empty).
fn listing<T>(entries: &[T], render: impl Fn(&T) -> String) -> String {
    if entries.is_empty() {
        "none".into()
    } else {
        entries.iter().map(render).collect::<Vec<_>>().join(", ")
    }
}

fn unevaluable_reason(e: &AlertEvent) -> &str {
    match &e.details {
        AlertDetails::Unevaluable { error } => error,
        _ => "see the budget check's report",
    }
}

/// The key a security finding (or its recovery) is about.
fn finding_key(e: &AlertEvent) -> Option<&str> {
    match &e.details {
        AlertDetails::Security { key, .. } => Some(key),
        _ => None,
    }
}

/// The facts every rendering shows, in order.
fn facts(e: &AlertEvent, kill_switch: &str) -> Vec<(&'static str, String)> {
    // the recovery of a security finding shows the finding's facts
    let kind = match e.kind {
        AlertKind::Recovery if e.tier.starts_with("security-") => AlertKind::Security,
        other => other,
    };
    match kind {
        AlertKind::Alarm => {
            let AlertDetails::Alarm {
                alarm,
                state,
                previous,
                reason,
                description,
                account,
                region,
                changed_at,
            } = &e.details
            else {
                return vec![("Alert", e.incident_key().to_string())];
            };
            let state = match previous {
                Some(previous) => format!("{} (was {})", state.as_str(), previous.as_str()),
                None => state.as_str().to_string(),
            };
            let mut facts = vec![("Alarm", alarm.clone()), ("State", state)];
            if let Some(description) = description {
                facts.push(("Means", description.clone()));
            }
            facts.extend([
                ("Why", reason.clone()),
                ("Since", changed_at.to_rfc3339()),
                ("Account", format!("{account} ({region})")),
                ("Kill switch", kill_switch.to_string()),
                ("Alert", e.incident_key().to_string()),
            ]);
            return facts;
        }
        AlertKind::Drill => {
            let (subject, problem, fix) = match &e.details {
                AlertDetails::Drill {
                    subject,
                    problem,
                    fix,
                } => (subject.clone(), problem.clone(), fix.clone()),
                _ => Default::default(),
            };
            return vec![
                ("Scope", e.scope.to_string()),
                ("What", subject),
                ("Problem", problem),
                ("Fix", fix),
                ("Day", e.period_key.trim_start_matches("D#").to_string()),
                ("Alert", e.incident_key().to_string()),
            ];
        }
        AlertKind::Unevaluable => {
            return vec![
                ("Budget", e.budget_id.clone()),
                ("Scope", e.scope.to_string()),
                (
                    "Window",
                    format!("{} {}", e.window, Period::label_of_key(&e.period_key)),
                ),
                ("Why", unevaluable_reason(e).to_string()),
                ("Limit", money(&e.limit)),
                ("Alert", e.incident_key().to_string()),
            ];
        }
        AlertKind::Anomaly => {
            let (spikes, source): (Vec<String>, Option<&String>) = match &e.details {
                AlertDetails::Anomaly { spikes, source, .. } => (
                    spikes
                        .iter()
                        .map(|s| format!("{} {} (usual {})", s.metric, s.value, s.expected))
                        .collect(),
                    source.as_ref(),
                ),
                _ => (Vec::new(), None),
            };
            let scope = match source {
                Some(source) => format!("{} (as {source} reports it)", e.scope),
                None => e.scope.to_string(),
            };
            return vec![
                ("Scope", scope),
                ("Day", e.period_key.trim_start_matches("D#").to_string()),
                ("Spend", money(&e.spend)),
                ("Usual day", money(&e.limit)),
                ("Of usual", format!("{} %", e.percent)),
                ("Spikes", spikes.join("; ")),
                ("Kill switch", kill_switch.to_string()),
                ("Alert", e.incident_key().to_string()),
            ];
        }
        AlertKind::Security => {
            let signals: Vec<String> = match &e.details {
                AlertDetails::Security { signals, .. } => signals
                    .iter()
                    .map(|s| {
                        format!(
                            "{} ({}): {}",
                            s.detector.as_str(),
                            s.level.as_str(),
                            s.evidence
                        )
                    })
                    .collect(),
                _ => Vec::new(),
            };
            return vec![
                ("Scope", e.scope.to_string()),
                ("Hour", hour_label(&e.period_key)),
                ("Spend", money(&e.spend)),
                ("Signals", signals.join("; ")),
                ("Actions ordered", actions(e)),
                ("Kill switch", kill_switch.to_string()),
                ("Alert", e.incident_key().to_string()),
            ];
        }
        AlertKind::Report => {
            let empty = DailyReport::empty();
            let r = match &e.details {
                AlertDetails::Report(r) => r,
                _ => &empty,
            };
            return vec![
                ("Day", e.period_key.trim_start_matches("D#").to_string()),
                ("Total", money(&e.spend)),
                (
                    "Top scopes",
                    listing(&r.top_scopes, |(scope, cost)| format!("{scope} {cost}")),
                ),
                (
                    "Top models",
                    listing(&r.top_models, |(model, cost)| format!("{model} {cost}")),
                ),
                (
                    "Biggest movers",
                    listing(&r.movers, |(scope, day, usual)| {
                        format!("{scope} {day} (usual {usual})")
                    }),
                ),
                (
                    "Budgets at risk",
                    listing(&r.at_risk, |(budget, percent)| {
                        format!("{budget} forecast at {percent} %")
                    }),
                ),
                ("Anomalies", r.anomalies.to_string()),
                ("Alert", e.incident_key().to_string()),
            ];
        }
        _ => {}
    }
    vec![
        ("Budget", format!("{} ({})", e.budget_id, e.scope)),
        (
            "Window",
            format!("{} {}", e.window, Period::label_of_key(&e.period_key)),
        ),
        ("Spend", money(&e.spend)),
        ("Limit", money(&e.limit)),
        ("Used", format!("{} %", e.percent)),
        ("Forecast", forecast(e)),
        (
            "Tier",
            format!("{} at {} ({})", e.tier, money(&e.threshold), e.basis),
        ),
        ("Actions ordered", actions(e)),
        ("Kill switch", kill_switch.to_string()),
        ("Alert", e.incident_key().to_string()),
    ]
}

/// Slack for anomalies and reports: the facts as fields.
fn slack_facts(e: &AlertEvent, kill_switch: &str) -> Value {
    let facts = facts(e, kill_switch);
    let fields: Vec<Value> = facts[..facts.len() - 1]
        .iter()
        .filter(|(k, _)| *k != "Kill switch")
        .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}*\n{v}")}))
        .collect();
    let mut context = format!("alert `{}`", e.incident_key());
    // an alarm's row of the runbook (the other kinds here carry the budgets file's runbook,
    // shown by the other channels)
    if let (AlertKind::Alarm, Some(url)) = (e.kind, &e.runbook_url) {
        context.push_str(&format!(" · <{url}|Runbook>"));
    }
    json!({
        "text": headline(e),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": headline(e), "emoji": true}},
            {"type": "section", "fields": fields},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]}
        ]
    })
}

fn digest_lines(events: &[AlertEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{} {}", marker(e), e.summary))
        .collect()
}

fn digest_title(channel: &str, events: &[AlertEvent]) -> String {
    format!(
        "🟡 spendguard digest for {channel}: {} warnings",
        events.len()
    )
}

/// Slack incoming webhook: Block Kit with a `text` fallback.
pub fn slack(message: &Message) -> Value {
    match message {
        Message::Alert {
            event: e,
            kill_switch,
        } if matches!(
            e.kind,
            AlertKind::Anomaly
                | AlertKind::Report
                | AlertKind::Security
                | AlertKind::Unevaluable
                | AlertKind::Drill
                | AlertKind::Alarm
        ) =>
        {
            slack_facts(e, kill_switch)
        }
        Message::Alert {
            event: e,
            kill_switch,
        } => {
            let facts = facts(e, kill_switch);
            // a budget's facts after its budget and scope (in the section above), at most six
            let fields: Vec<Value> = facts
                .iter()
                .skip(2)
                .take(6)
                .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}*\n{v}")}))
                .collect();
            let mut context = format!("alert `{}` · kill switch: {kill_switch}", e.incident_key());
            if let Some(url) = &e.runbook_url {
                context.push_str(&format!(" · <{url}|Runbook>"));
            }
            json!({
                "text": headline(e),
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": headline(e), "emoji": true}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": format!("*Budget* `{}` ({})\n*Window* {} · {}", e.budget_id, e.scope, e.window, Period::label_of_key(&e.period_key))}},
                    {"type": "section", "fields": fields},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]}
                ]
            })
        }
        Message::Digest { channel, events } => json!({
            "text": digest_title(channel, events),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": digest_title(channel, events), "emoji": true}},
                {"type": "section", "text": {"type": "mrkdwn", "text": digest_lines(events).join("\n")}}
            ]
        }),
    }
}

/// PagerDuty Events v2. Severity: emergency -> critical, critical -> error; a recovery resolves
/// the incident opened under the same `dedup_key` (the original alert id).
pub fn pagerduty(e: &AlertEvent, routing_key: &str) -> Value {
    let resolves = match e.kind {
        AlertKind::Recovery => true,
        // an alarm back to OK resolves the incident its ALARM opened (one per alarm)
        AlertKind::Alarm => matches!(alarm(e), Some((_, AlarmState::Ok))),
        _ => false,
    };
    if resolves {
        return json!({"routing_key": routing_key, "event_action": "resolve", "dedup_key": e.incident_key()});
    }
    let severity = match e.severity {
        Severity::Emergency => "critical",
        Severity::Critical => "error",
        Severity::Warning => "warning",
        Severity::Info => "info",
    };
    let mut summary = headline(e);
    summary.truncate(
        summary
            .char_indices()
            .nth(1024)
            .map_or(summary.len(), |(i, _)| i),
    );
    // a security finding names its key where a budget alert names its budget
    let (group, class) = if e.kind == AlertKind::Security {
        let key = finding_key(e);
        (key.unwrap_or_default().to_string(), e.tier.clone())
    } else {
        (e.budget_id.clone(), format!("budget-{}", e.window))
    };
    let mut body = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": e.incident_key(),
        "payload": {
            "summary": summary,
            "source": format!("spendguard/{group}"),
            "severity": severity,
            "component": e.scope,
            "group": group,
            "class": class,
            "custom_details": {
                "spend": money(&e.spend), "limit": money(&e.limit), "percent": e.percent.to_string(),
                "forecast": forecast(e), "tier": e.tier, "period": e.period_key, "actions": actions(e),
            }
        },
        "client": "spendguard",
    });
    if let AlertDetails::Alarm {
        alarm,
        state,
        reason,
        account,
        region,
        changed_at,
        ..
    } = &e.details
    {
        body["payload"]["source"] = json!(format!("spendguard/{alarm}"));
        body["payload"]["component"] = json!("deployment");
        body["payload"]["group"] = json!(alarm);
        body["payload"]["class"] = json!("cloudwatch-alarm");
        body["payload"]["custom_details"] = json!({
            "state": state.as_str(), "reason": reason, "since": changed_at.to_rfc3339(),
            "account": account, "region": region,
        });
    }
    if let Some(url) = &e.runbook_url {
        body["links"] = json!([{"href": url, "text": "Runbook"}]);
    }
    body
}

/// Microsoft Teams Workflows: a message with one Adaptive Card.
pub fn teams(message: &Message) -> Value {
    let (title, body_blocks, runbook) = match message {
        Message::Alert {
            event: e,
            kill_switch,
        } => {
            let facts: Vec<Value> = facts(e, kill_switch)
                .into_iter()
                .map(|(k, v)| json!({"title": k, "value": v}))
                .collect();
            (
                headline(e),
                vec![json!({"type": "FactSet", "facts": facts})],
                e.runbook_url.clone(),
            )
        }
        Message::Digest { channel, events } => (
            digest_title(channel, events),
            digest_lines(events)
                .into_iter()
                .map(|l| json!({"type": "TextBlock", "text": l, "wrap": true}))
                .collect(),
            None,
        ),
    };
    let mut card_body = vec![
        json!({"type": "TextBlock", "size": "Large", "weight": "Bolder", "text": title, "wrap": true}),
    ];
    card_body.extend(body_blocks);
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": card_body,
    });
    if let Some(url) = runbook {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": "Runbook", "url": url}]);
    }
    json!({
        "type": "message",
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": card}]
    })
}

fn discord_color(e: &AlertEvent) -> u32 {
    match (e.kind, e.severity) {
        (AlertKind::Recovery, _) => 0x2e_b8_86,
        (AlertKind::Alarm, _) if matches!(alarm(e), Some((_, AlarmState::Ok))) => 0x2e_b8_86,
        (_, Severity::Emergency) => 0xd0_02_1b,
        (_, Severity::Critical) => 0xf5_7c_00,
        (_, Severity::Warning) => 0xf2_c7_44,
        (_, Severity::Info) => 0x4a_90_e2,
    }
}

fn cut(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Discord webhook: `content` (at most 2,000 characters) and one embed; no mentions parsed,
/// so a budget named `@everyone` pings no one.
pub fn discord(message: &Message) -> Value {
    match message {
        Message::Alert {
            event: e,
            kill_switch,
        } => {
            let fields: Vec<Value> = facts(e, kill_switch)
                .into_iter()
                .map(|(k, v)| json!({"name": k, "value": cut(&v, 1024), "inline": !matches!(k, "Budget" | "Actions ordered" | "Alert")}))
                .collect();
            let mut embed = json!({
                "title": cut(&headline(e), 256),
                "description": cut(&e.summary, 4096),
                "color": discord_color(e),
                "fields": fields,
                "timestamp": e.raised_at.to_rfc3339(),
            });
            if let Some(url) = &e.runbook_url {
                embed["url"] = json!(url);
            }
            json!({"content": cut(&headline(e), 2000), "embeds": [embed], "allowed_mentions": {"parse": []}})
        }
        Message::Digest { channel, events } => json!({
            "content": cut(&format!("{}\n{}", digest_title(channel, events), digest_lines(events).join("\n")), 2000),
            "allowed_mentions": {"parse": []}
        }),
    }
}

/// The generic webhook body: the alert itself (the same JSON the alerts topic carries).
pub fn webhook(message: &Message) -> Value {
    match message {
        Message::Alert { event, kill_switch } => {
            let mut v = serde_json::to_value(event).unwrap_or_default();
            v["kill_switch"] = json!(kill_switch);
            v
        }
        Message::Digest { channel, events } => {
            json!({"kind": "digest", "channel": channel, "alerts": events})
        }
    }
}

/// An e-mail: subject, plain text and HTML (every value HTML-escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailContent {
    pub subject: String,
    pub text: String,
    pub html: String,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub fn email(message: &Message) -> EmailContent {
    match message {
        Message::Alert {
            event: e,
            kill_switch,
        } => {
            let facts = facts(e, kill_switch);
            let width = facts.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            let mut text = format!("{}\n\n{}\n\n", headline(e), e.summary);
            for (k, v) in &facts {
                text.push_str(&format!("{k:<width$}  {v}\n"));
            }
            let rows: String = facts
                .iter()
                .map(|(k, v)| {
                    format!(
                        "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                        escape(k),
                        escape(v)
                    )
                })
                .collect();
            let mut html = format!(
                "<html><body><h2>{}</h2><p>{}</p><table cellpadding=\"4\">{rows}</table>",
                escape(&headline(e)),
                escape(&e.summary)
            );
            if let Some(url) = &e.runbook_url {
                text.push_str(&format!("\nRunbook: {url}\n"));
                html.push_str(&format!("<p><a href=\"{}\">Runbook</a></p>", escape(url)));
            }
            html.push_str("</body></html>");
            EmailContent {
                subject: e.subject(),
                text,
                html,
            }
        }
        Message::Digest { channel, events } => {
            let lines = digest_lines(events);
            let items: String = lines
                .iter()
                .map(|l| format!("<li>{}</li>", escape(l)))
                .collect();
            EmailContent {
                subject: format!("[spendguard] digest: {} warnings", events.len()),
                text: format!(
                    "{}\n\n{}\n",
                    digest_title(channel, events),
                    lines.join("\n")
                ),
                html: format!(
                    "<html><body><h2>{}</h2><ul>{items}</ul></body></html>",
                    escape(&digest_title(channel, events))
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn amounts_are_grouped_by_thousands() {
        assert_eq!(grouped(dec!(1234567.891)), "1,234,567.89");
        assert_eq!(grouped(dec!(999)), "999.00");
        assert_eq!(grouped(dec!(-1000)), "-1,000.00");
        assert_eq!(grouped(dec!(0.5)), "0.50");
    }

    #[test]
    fn a_security_finding_names_its_key_and_evidence_everywhere() {
        use crate::key_hours::{HourFigures, Signal};
        use crate::security::Finding;
        use crate::settings::{Detector, ThreatLevel};
        let hour = chrono::DateTime::parse_from_rfc3339("2026-11-23T03:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let finding = Finding {
            key_id: "search-key".into(),
            scope: crate::scope::Scope::parse("anthropic/search/key-7").unwrap(),
            hour,
            level: ThreatLevel::Critical,
            figures: HourFigures {
                spend: dec!(30),
                requests: dec!(600),
                busiest_minute: dec!(600),
                tokens: dec!(0),
                aggregated: false,
                provider_spend: dec!(0),
            },
            signals: vec![Signal {
                detector: Detector::Spike,
                level: ThreatLevel::High,
                evidence: "03:00 UTC: spend 30.00 USD (20x the usual 1.50 USD)".into(),
            }],
        };
        let e = finding.event(&crate::settings::Settings::default(), hour);
        assert_eq!(
            headline(&e),
            "🚨 SECURITY CRITICAL: key search-key (anthropic/search/key-7) in the hour from 23 Nov 2026 03:00 UTC",
            "the hour as people read it, not the store's key"
        );
        let pd = pagerduty(&e, "rk");
        assert_eq!(pd["payload"]["group"], "search-key");
        assert_eq!(pd["payload"]["class"], "security-critical");
        assert_eq!(pd["payload"]["severity"], "critical");
        let slack_text = slack(&Message::Alert {
            event: Box::new(e.clone()),
            kill_switch: "engaged".into(),
        })
        .to_string();
        assert!(
            slack_text.contains("spike (high): 03:00 UTC: spend 30.00 USD (20x"),
            "{slack_text}"
        );
        let recovery = e.recovery("", hour);
        assert_eq!(
            headline(&recovery),
            "✅ RECOVERED: anthropic/search/key-7 is back to its usual use; the security-critical throttle is lifted"
        );
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape("<b>\"x\" & 'y'</b>"),
            "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/b&gt;"
        );
    }
}
