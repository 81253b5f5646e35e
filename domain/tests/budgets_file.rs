//! The budgets file: the example parses; every invalid file in `tests/budgets/invalid/` gets
//! exactly one error naming the file, the line (marked `# expect: <field> | <message>`) and
//! the field.

use std::path::{Path, PathBuf};

use spendguard_domain::budget::{Action, Basis, Severity, SourceSpec, Threshold};

use spendguard_domain::budgets_file::load_budgets_file;
use spendguard_domain::period::WindowKind;
use spendguard_domain::settings::ChannelKind;
use spendguard_domain::settings::{Detector, ThreatLevel};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_example_budgets_file_is_valid_and_complete() {
    let set =
        load_budgets_file(&repo().join("examples/budgets.toml")).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = set.budgets.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "openai-prod",
            "openai-dev-key",
            "anthropic-research",
            "search-feature",
            "aws-main-account",
            "gcp-data-platform"
        ]
    );

    let prod = &set.budgets[0];
    assert_eq!(prod.zone.name(), "America/New_York");
    let monthly = prod.window(WindowKind::Monthly).unwrap();
    assert_eq!(monthly.limit.to_string(), "2000");
    let critical = &monthly.tiers[1];
    assert_eq!(
        (critical.name.as_str(), critical.severity),
        ("critical", Severity::Critical)
    );
    assert_eq!(critical.threshold, Threshold::Percent(75.into()));
    assert_eq!(
        critical.actions,
        [
            Action::Notify,
            Action::ReduceLimits {
                factor: "0.5".parse().unwrap()
            }
        ]
    );
    let overrun = &monthly.tiers[3];
    assert_eq!(
        (overrun.basis, overrun.severity),
        (Basis::Forecast, Severity::Warning)
    );
    assert_eq!(
        prod.channels_for("critical"),
        ["ops-slack", "finance-email", "oncall-pager"]
    );

    // per-budget routing overrides the default for that tier only
    let dev = &set.budgets[1];
    assert_eq!(dev.channels_for("emergency"), ["ops-slack"]);
    assert_eq!(dev.channels_for("warning"), ["ops-slack", "finance-email"]);

    assert_eq!(
        set.budgets[4].source,
        SourceSpec::AwsBudgets {
            budget_name: "monthly-total".into()
        }
    );
    assert_eq!(
        set.settings.channels["oncall-pager"].kind,
        ChannelKind::Pagerduty
    );
    assert_eq!(set.settings.prices.0.len(), 3);
    assert_eq!(
        set.settings.channels["finance-email"].digest_minutes,
        Some(240)
    );
    let levels = &set.settings.escalation.levels;
    assert_eq!(
        (
            levels.len(),
            levels[1].after_minutes,
            levels[1].channels[0].as_str()
        ),
        (2, 45, "eng-managers")
    );
    assert_eq!(
        set.settings.runbook_url.as_deref(),
        Some("https://wiki.example.com/spendguard/runbook")
    );
    assert!(!set.settings.rates.is_empty());

    let security = &set.settings.security;
    assert_eq!(security.levels[&Detector::Spike], ThreatLevel::High);
    assert_eq!(
        security.actions[&ThreatLevel::High],
        [Action::RotateKeys, Action::Notify]
    );
    assert_eq!(
        security.actions[&ThreatLevel::Medium][0],
        Action::ReduceLimits {
            factor: "0.1".parse().unwrap()
        }
    );
    assert_eq!(security.planned.len(), 1);
    assert_eq!(security.provider_lateness_hours, 8);
    assert_eq!(
        security.levels[&Detector::UnreportedSpend],
        ThreatLevel::Medium
    );
    assert_eq!(security.planned[0].key, "anthropic-research");
    assert_eq!(set.settings.shutdown.deny_roles, ["batch-worker"]);
    let gcp = &set.settings.shutdown.gcp[0];
    assert_eq!(
        (
            gcp.project.as_str(),
            gcp.unlink_billing,
            gcp.service_accounts.len()
        ),
        ("data-platform-prod", false, 1)
    );
}

#[test]
fn every_invalid_file_gets_one_precise_error() {
    let dir = repo().join("domain/tests/budgets/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the table has {} files", files.len());
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let (line, marker) = text
            .lines()
            .enumerate()
            .find_map(|(i, l)| {
                l.split_once("# expect: ")
                    .map(|(_, m)| (i + 1, m.to_string()))
            })
            .unwrap_or_else(|| panic!("{} has no `# expect:` marker", path.display()));
        let (field, message) = marker.split_once(" |").unwrap();
        let errors = match load_budgets_file(&path) {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(spendguard_domain::budgets_file::LoadError::Invalid(e)) => e.0,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(errors.len(), 1, "{}: {errors:#?}", path.display());
        let e = &errors[0];
        let name = path.display().to_string();
        assert_eq!(e.file, name);
        assert_eq!(e.line, line, "{name}: {e}");
        assert!(
            e.field.contains(field.trim()),
            "{name}: field `{}` does not name `{}`",
            e.field,
            field.trim()
        );
        assert!(
            e.message.contains(message.trim()),
            "{name}: message `{}` lacks `{}`",
            e.message,
            message.trim()
        );
        // and the rendered line a person reads starts with file:line:column
        assert!(e.to_string().starts_with(&format!("{name}:{line}:")), "{e}");
    }
}

#[test]
fn a_monthly_openai_window_keeps_the_providers_limit_in_whole_cents() {
    let set = spendguard_domain::budgets_file::parse_budgets(
        "caps.toml",
        r#"
        version = 1
        [[budget]]
        id = "openai-prod"
        scope = "openai/prod"
        source = { kind = "openai", project_id = "proj_prod" }
        [[budget.window]]
        period = "monthly"
        limit = "1234.56"
        provider_cap = true
        tiers = [{ name = "warning", percent = 50 }]
        [[budget]]
        id = "openai-org"
        scope = "openai"
        source = { kind = "openai" }
        [[budget.window]]
        period = "monthly"
        limit = "5000"
        tiers = [{ name = "warning", percent = 50 }]
        "#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let caps = spendguard_domain::caps::provider_caps(&set.budgets).unwrap();
    assert_eq!(caps.len(), 1, "only the window that asks for it");
    assert_eq!(caps[0].resource.id, "openai:project:proj_prod");
    assert_eq!(caps[0].cents, 123_456);
    assert_eq!(caps[0].budget_id, "openai-prod");
}

#[test]
fn an_anthropic_workspace_or_organisation_keeps_its_limit_too() {
    let set = spendguard_domain::budgets_file::parse_budgets(
        "caps.toml",
        r#"
        version = 1
        [[budget]]
        id = "research"
        scope = "anthropic/research"
        source = { kind = "anthropic", workspace_id = "wrkspc_r" }
        [[budget.window]]
        period = "monthly"
        limit = "750.5"
        provider_cap = true
        tiers = [{ name = "warning", percent = 50 }]
        [[budget]]
        id = "anthropic-org"
        scope = "anthropic"
        source = { kind = "anthropic" }
        [[budget.window]]
        period = "monthly"
        limit = "5000"
        provider_cap = true
        tiers = [{ name = "warning", percent = 50 }]
        "#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let caps = spendguard_domain::caps::provider_caps(&set.budgets).unwrap();
    let ids: Vec<(&str, u64)> = caps
        .iter()
        .map(|c| (c.resource.id.as_str(), c.cents))
        .collect();
    assert_eq!(
        ids,
        [
            ("anthropic:workspace:wrkspc_r", 75_050),
            ("anthropic:organization", 500_000)
        ]
    );
    assert!(caps.iter().all(
        |c| c.resource.kind == spendguard_domain::resources::ResourceKind::AnthropicSpendLimit
    ));
}

#[test]
fn hourly_and_rolling_windows_parse_and_export_back_to_the_same_policy() {
    use spendguard_domain::budgets_export::to_budgets_file;
    use spendguard_domain::budgets_file::parse_budgets;
    use spendguard_domain::period::WindowKind;
    let text = r#"
version = 1

[[budget]]
id = "agents"
scope = "openai/agents"

[[budget.window]]
period = "hourly"
limit = "20"
tiers = [{ name = "warning", percent = 80 }]

[[budget.window]]
period = "rolling"
minutes = 60
limit = "50"
tiers = [{ name = "critical", percent = 100, actions = ["notify", "disable_keys"] }]
"#;
    let set = parse_budgets("budgets.toml", text).unwrap();
    let kinds: Vec<WindowKind> = set.budgets[0].windows.iter().map(|w| w.kind).collect();
    assert_eq!(
        kinds,
        [WindowKind::Hourly, WindowKind::Rolling { minutes: 60 }]
    );
    let exported = to_budgets_file(&set);
    assert!(exported.contains("minutes = 60"), "{exported}");
    assert_eq!(parse_budgets("exported.toml", &exported).unwrap(), set);
}
