//! Usage records from applications: validated or refused naming a field, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spendguard_domain::usage::UsageWire;

fuzz_target!(|data: &[u8]| {
    if let Ok(wire) = serde_json::from_slice::<UsageWire>(data) {
        match wire.validate(&Default::default()) {
            Ok(record) => assert!(!record.id.is_empty()),
            Err(e) => assert!(!e.field.is_empty()),
        }
    }
});
