//! Everything the CLI prints on stdout goes through here, so that a closed pipe
//! (`spendguard … --json | head -c1`, `| grep -q` under `pipefail`) is quiet and keeps the
//! command's own exit code instead of a panic (which `panic = "abort"` turns into SIGABRT,
//! exit 134), and every
//! JSON document carries the schema version scripts can test.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

/// The version of every JSON document the CLI prints; raised when a field changes meaning or
/// goes away (new fields do not raise it).
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// Set once the reader of stdout has gone away.
static READER_GONE: AtomicBool = AtomicBool::new(false);

/// Writes `args` to stdout. Once the reader has gone away (`| head -c1`), the rest of the output
/// is dropped quietly and the command runs to its end, so its exit code still says how it went
/// (a kill that stopped nothing still exits 4). Any other failure to write is reported and
/// exits 1.
pub fn write(args: fmt::Arguments<'_>) {
    if READER_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|_| stdout.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            READER_GONE.store(true, Ordering::Relaxed);
            return;
        }
        write_err(format_args!("error: cannot write to stdout: {e}\n"));
        std::process::exit(1);
    }
}

/// Writes `args` to stderr. A closed stderr (`2>&1 | grep -q`) leaves nobody to tell, so
/// errors are ignored and the command keeps its exit code.
pub fn write_err(args: fmt::Arguments<'_>) {
    let mut stderr = io::stderr().lock();
    let _ = stderr.write_fmt(args).and_then(|_| stderr.flush());
}

/// `eprintln!` that survives a closed pipe.
macro_rules! errln {
    () => { $crate::output::write_err(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_err(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` that survives a closed pipe.
macro_rules! err {
    ($($arg:tt)*) => { $crate::output::write_err(format_args!($($arg)*)) };
}

/// `println!` that survives a closed pipe.
macro_rules! outln {
    () => { $crate::output::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` that survives a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write(format_args!($($arg)*)) };
}

pub(crate) use {err, errln, out, outln};

/// A JSON document as the CLI prints it: `schema_version` first, then the body's own fields.
#[derive(Serialize)]
struct Versioned<'a, T: Serialize> {
    schema_version: u32,
    #[serde(flatten)]
    body: &'a T,
}

/// `body` (which must serialise as an object) as pretty JSON with `schema_version` first.
pub fn json_document<T: Serialize>(body: &T) -> String {
    serde_json::to_string_pretty(&Versioned {
        schema_version: JSON_SCHEMA_VERSION,
        body,
    })
    .unwrap_or_else(|e| format!("{{\"schema_version\":{JSON_SCHEMA_VERSION},\"error\":\"{e}\"}}"))
}

/// `body` as one line of JSON with `schema_version` first (for JSON Lines output).
pub fn json_line<T: Serialize>(body: &T) -> String {
    serde_json::to_string(&Versioned {
        schema_version: JSON_SCHEMA_VERSION,
        body,
    })
    .unwrap_or_else(|e| format!("{{\"schema_version\":{JSON_SCHEMA_VERSION},\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_carries_the_schema_version_before_its_fields() {
        let doc = json_document(&serde_json::json!({"switch": "engaged"}));
        let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["schema_version"], JSON_SCHEMA_VERSION);
        assert_eq!(v["switch"], "engaged");
        assert!(doc.find("schema_version").unwrap() < doc.find("switch").unwrap());
        let line = json_line(&serde_json::json!({"at": 1}));
        assert!(!line.contains('\n'));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&line).unwrap()["schema_version"],
            JSON_SCHEMA_VERSION
        );
    }
}
