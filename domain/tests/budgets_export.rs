//! `budgets export`: a policy written back as a file reads back as the same policy.

use std::path::Path;

use spendguard_domain::budgets_export::to_budgets_file;
use spendguard_domain::budgets_file::{load_budgets_file, parse_budgets};

#[test]
fn the_example_written_back_reads_as_the_same_policy() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/budgets.toml");
    let policy = load_budgets_file(&example).unwrap_or_else(|e| panic!("{e}"));
    let written = to_budgets_file(&policy);
    let again =
        parse_budgets("exported.toml", &written).unwrap_or_else(|e| panic!("{e}\n{written}"));
    assert_eq!(again, policy, "{written}");
    // and the scale of each amount survives (a plan compares the stored documents)
    assert_eq!(
        serde_json::to_value(&again).unwrap(),
        serde_json::to_value(&policy).unwrap()
    );
    // the example's non-default parts are there to be compared
    assert!(!policy.settings.escalation.levels.is_empty());
    assert!(!policy.keys.is_empty());
}

#[test]
fn a_budget_routed_apart_from_the_defaults_keeps_only_its_own_routes() {
    let text = r#"version = 1
[channels]
ops = { kind = "slack", secret = "file:/run/ops" }
team = { kind = "slack", secret = "file:/run/team" }
[routing]
warning = ["ops"]
critical = ["ops"]
[[budget]]
id = "a"
scope = "openai/a"
[[budget.window]]
period = "daily"
limit = "10.50"
tiers = [{ name = "critical", amount = "7.25", basis = "forecast" }]
[budget.routing]
critical = ["team", "log"]
[[budget]]
id = "b"
scope = "openai/b"
[[budget.window]]
period = "weekly"
limit = "100"
tiers = [{ name = "warning", percent = 50, actions = ["notify", { reduce_limits = 0.5 }] }]
[[budget]]
id = "c"
scope = "openai/c"
source = { kind = "openai", project_id = "proj_c" }
[[budget.window]]
period = "monthly"
limit = "500"
provider_cap = true
tiers = [{ name = "emergency", percent = 100, actions = ["notify", "disable_keys"] }]
"#;
    let policy = parse_budgets("r.toml", text).unwrap_or_else(|e| panic!("{e}"));
    let written = to_budgets_file(&policy);
    let again =
        parse_budgets("exported.toml", &written).unwrap_or_else(|e| panic!("{e}\n{written}"));
    assert_eq!(again, policy, "{written}");
    assert_eq!(
        serde_json::to_value(&again).unwrap(),
        serde_json::to_value(&policy).unwrap()
    );
    assert!(again.budgets[2].windows[0].provider_cap, "{written}");
}
