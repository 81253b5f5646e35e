//! Every fixture in `events/key-guard` is an event key-guard understands.

use serde_json::Value;
use spendguard_app::flows::rotation::{RotationEvent, Step};
use spendguard_domain::alert::AlertEvent;
use spendguard_domain::budget::Action;

#[test]
fn every_fixture_parses_as_its_trigger() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/key-guard");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("rotation-") {
            let e: RotationEvent = serde_json::from_value(v).unwrap();
            assert!(Step::parse(&e.step).is_some(), "{name}");
        } else if name.ends_with("-alert.json") || name.contains("-alert-") {
            let alert: AlertEvent =
                serde_json::from_str(v["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap();
            let acts = alert
                .actions
                .iter()
                .any(|a| matches!(a, Action::DisableKeys | Action::ReduceLimits { .. }));
            assert!(acts, "{name}: a key-guard alert orders an action");
        } else {
            assert!(
                matches!(
                    v["action"].as_str(),
                    Some("disable" | "shutdown" | "restore" | "status" | "drill")
                ),
                "{name}"
            );
        }
        seen += 1;
    }
    assert_eq!(seen, 12);
}
