//! The budgets file: any text parses or is refused with located errors; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(errors) = spendguard_domain::budgets_file::parse_budgets("budgets.toml", &text) {
        assert!(!errors.to_string().trim().is_empty());
    }
});
