//! What a budgets file's errors carry beyond the position: the span of the offending text, a
//! did-you-mean when a written name is close to a known one, line order, no knock-on errors,
//! and a missing file said as such.

use spendguard_domain::budgets_file::{ConfigError, LoadError, load_budgets_file, parse_budgets};

const BUDGET: &str = r#"version = 1

[channels]
ops-slack = { kind = "slack", secret = "file:/run/slack" }

[[budget]]
id = "prod"
scope = "openai/prod"
timezone = "UTC"

[[budget.window]]
period = "monthly"
limit = "2000"
tiers = [{ name = "warning", percent = 50 }, { name = "critical", percent = 90 }]

[budget.routing]
critical = ["ops-slack"]
"#;

fn errors_of(text: &str) -> Vec<ConfigError> {
    match parse_budgets("b.toml", text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.0,
    }
}

fn only_error(text: &str) -> ConfigError {
    let errors = errors_of(text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap()
}

#[test]
fn the_base_file_of_these_tests_is_valid() {
    parse_budgets("b.toml", BUDGET).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn an_unknown_field_suggests_the_known_name_closest_to_it() {
    for (from, to, suggested) in [
        ("limit = \"2000\"", "limt = \"2000\"", "limit"),
        ("percent = 50 }", "precent = 50 }", "percent"),
        ("[channels]", "[channel]", "channels"),
    ] {
        let text = BUDGET.replacen(from, to, 1);
        let e = only_error(&text);
        assert_eq!(
            e.help.as_deref(),
            Some(format!("did you mean `{suggested}`?").as_str()),
            "{to}: {e}"
        );
        // the span is the name as written, for the caret
        let written = to.split([' ', ']']).next().unwrap().trim_start_matches('[');
        assert_eq!(&text[e.span.clone()], written, "{to}");
    }
}

#[test]
fn a_top_level_table_typo_suggests_the_table() {
    let text = "version = 1\n\n[default]\ncurrency = \"EUR\"\n";
    let e = only_error(text);
    assert_eq!(e.help.as_deref(), Some("did you mean `defaults`?"), "{e}");
    assert_eq!((e.line, e.column), (3, 2));
}

#[test]
fn an_unknown_time_zone_suggests_the_closest_zone() {
    let e = only_error(&BUDGET.replace("\"UTC\"", "\"America/New_Yrok\""));
    assert!(e.message.contains("is not an IANA time zone"), "{e}");
    assert_eq!(
        e.help.as_deref(),
        Some("did you mean `America/New_York`?"),
        "{e}"
    );
    // written in the wrong case, it is still found
    let e = only_error(&BUDGET.replace("\"UTC\"", "\"europe/berlin\""));
    assert_eq!(e.help.as_deref(), Some("did you mean `Europe/Berlin`?"));
}

#[test]
fn routing_suggests_the_tiers_and_channels_the_file_defines() {
    let e = only_error(&BUDGET.replace("critical = [", "critcal = ["));
    assert!(e.message.contains("no tier named `critcal`"), "{e}");
    assert_eq!(e.help.as_deref(), Some("did you mean `critical`?"));

    let e = only_error(&BUDGET.replace("[\"ops-slack\"]", "[\"ops-slak\"]"));
    assert!(
        e.message.contains("channel `ops-slak` is not defined"),
        "{e}"
    );
    assert_eq!(e.help.as_deref(), Some("did you mean `ops-slack`?"));
}

#[test]
fn a_currency_code_one_letter_off_is_suggested() {
    let text = BUDGET.replace("timezone = \"UTC\"", "currency = \"EUE\"");
    let e = only_error(&text);
    assert_eq!(e.help.as_deref(), Some("did you mean `EUR`?"), "{e}");
}

#[test]
fn nothing_is_suggested_when_no_name_is_close() {
    let e = only_error(&BUDGET.replace("limit = \"2000\"", "colour = \"2000\""));
    assert!(e.message.contains("unknown field `colour`"), "{e}");
    assert_eq!(e.help, None, "{e}");
    let e = only_error(&BUDGET.replace("\"UTC\"", "\"Mars/Olympus\""));
    assert_eq!(e.help, None, "{e}");
    let e = only_error(&BUDGET.replace("timezone = \"UTC\"", "currency = \"DOLLARS\""));
    assert_eq!(e.help, None, "{e}");
}

/// The review's case: five mistakes in one budget. The window's invalid period must not hide
/// its limit's error, nor make the routing of a tier it defines an error.
#[test]
fn five_mistakes_in_one_budget_come_in_line_order_without_knock_on_errors() {
    let text = r#"version = 1

[channels]
ops-slack = { kind = "slack", secret = "file:/run/slack" }

[[budget]]
id = "prod"
scope = "openai//prod"
currency = "DOLLARS"
timezone = "America/New_Yrok"

[[budget.window]]
period = "fortnightly"
limit = "-5"
tiers = [{ name = "warning", percent = 50 }, { name = "critical", percent = 90 }]

[budget.routing]
critical = ["ops-slack"]
warning = ["pager"]
"#;
    let errors = errors_of(text);
    let found: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.field.as_str())).collect();
    assert_eq!(
        found,
        [
            (8, "budget[prod].scope"),
            (9, "budget[prod].currency"),
            (10, "budget[prod].timezone"),
            (13, "budget[prod].window.period"),
            (14, "budget[prod].window[fortnightly].limit"),
            (19, "budget[prod].routing.warning"),
        ],
        "{errors:#?}"
    );
}

#[test]
fn a_channel_that_failed_is_not_reported_again_where_it_is_used() {
    let text = BUDGET.replace("kind = \"slack\"", "kind = \"slak\"");
    let e = only_error(&text);
    assert_eq!(e.field, "channels.ops-slack.kind", "{e}");
    assert_eq!(e.help.as_deref(), Some("did you mean `slack`?"), "{e}");
}

#[test]
fn a_missing_file_says_it_cannot_be_read_with_no_position() {
    let err = load_budgets_file(std::path::Path::new("/nonexistent/budgets.toml")).unwrap_err();
    assert!(matches!(err, LoadError::Unreadable { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot read /nonexistent/budgets.toml: No such file or directory (os error 2)"
    );
}

#[test]
fn the_one_line_form_keeps_file_line_column_first_and_ends_with_the_help() {
    let e = only_error(&BUDGET.replacen("limit = \"2000\"", "limt = \"2000\"", 1));
    let line = e.to_string();
    assert!(
        line.starts_with("b.toml:13:1: limt: unknown field `limt`"),
        "{line}"
    );
    assert!(line.ends_with("; help: did you mean `limit`?"), "{line}");
}
