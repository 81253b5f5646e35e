//! The binary refuses to start without its configuration, naming the variable.

use std::process::Command;

#[test]
fn missing_configuration_stops_start_up_naming_the_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_budget-check"))
        .env_clear()
        .env(
            "SPENDGUARD_ALERTS_TOPIC_ARN",
            "arn:aws:sns:eu-west-1:123456789012:alerts",
        )
        .output()
        .expect("run budget-check");
    assert!(!out.status.success());
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        log.contains(
            "cannot start: configuration: SPENDGUARD_TABLE: required (the DynamoDB table name)"
        ),
        "{log}"
    );
}
