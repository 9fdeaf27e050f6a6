//! How commands print: human text (short, aligned) or one JSON document.

use std::process::ExitCode;

use atlasbridge_protocol::ErrorObject;
use serde::Serialize;

/// The chosen output style.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    json: bool,
}

impl Output {
    pub(crate) fn new(json: bool) -> Self {
        Self { json }
    }

    pub(crate) fn is_json(self) -> bool {
        self.json
    }

    /// Prints `value` as pretty JSON (only in `--json` mode).
    pub(crate) fn json<T: Serialize>(self, value: &T) {
        match serde_json::to_string_pretty(value) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("atlasbridge: cannot print JSON: {e}"),
        }
    }

    /// Prints an error: one line on stderr, plus `{"error": …}` on stdout with `--json`.
    pub(crate) fn error(self, kind: &str, message: &str, code: u8) -> ExitCode {
        eprintln!("atlasbridge: {message}");
        if self.json {
            self.json(&serde_json::json!({ "error": { "kind": kind, "message": message } }));
        }
        ExitCode::from(code)
    }

    /// Prints an error the daemon sent, keeping its code and data in JSON mode.
    pub(crate) fn rpc_error(self, error: &ErrorObject, code: u8) -> ExitCode {
        eprintln!("atlasbridge: {}", error.message);
        if self.json {
            self.json(&serde_json::json!({ "error": {
                "kind": "rpc_error",
                "code": error.code,
                "message": error.message,
                "data": error.data,
            }}));
        }
        ExitCode::from(code)
    }
}

/// Prints `label value` pairs with the values aligned.
pub(crate) fn print_fields(fields: &[(&str, String)]) {
    let width = fields
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0);
    for (label, value) in fields {
        println!("  {label:<width$}  {value}");
    }
}

/// Prints rows under a header, each column as wide as its widest cell.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let width = widths.get(i).copied().unwrap_or(0);
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        println!("{}", text.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `3d 4h`, `5h 2m`, `7m 3s`, `12s`.
pub(crate) fn duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_show_the_two_largest_units() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(61), "1m 1s");
        assert_eq!(duration(3 * 3600 + 120), "3h 2m");
        assert_eq!(duration(2 * 86_400 + 3600), "2d 1h");
    }
}
