//! AWS Budgets notification text (plain text or JSON): parsed or refused, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(notice) = spendguard_domain::signals::aws_budgets::parse(&String::from_utf8_lossy(data))
    {
        assert!(!notice.budget_name.is_empty());
    }
});
