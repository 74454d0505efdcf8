//! A tiny JSON writer for `pop-spool stats --json`: objects, arrays, strings and integers are
//! all the report needs, so no serialisation crate is pulled in.

use std::fmt::Write;

/// `s` as a JSON string literal: quotes, backslashes and every control character escaped
/// (RFC 8259 §7); everything else, including non-ASCII, as itself (JSON text is UTF-8).
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            // U+2028/2029 are valid JSON but break JavaScript consumers of the output.
            '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An object from `(key, already-encoded value)` pairs.
pub fn object(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", string(k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// An array of already-encoded values.
pub fn array(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        let table = [
            ("", "\"\""),
            ("abc", "\"abc\""),
            ("a\"b", "\"a\\\"b\""),
            ("a\\b", "\"a\\\\b\""),
            ("a\nb\tc\r", "\"a\\nb\\tc\\r\""),
            ("\u{1}\u{1f}\u{7f}", "\"\\u0001\\u001f\\u007f\""),
            ("\u{e9}l\u{e8}ve", "\"\u{e9}l\u{e8}ve\""),
            ("\u{2028}", "\"\\u2028\""),
        ];
        for (s, want) in table {
            assert_eq!(string(s), want, "{s:?}");
        }
        assert_eq!(
            object(&[("a", "1".into()), ("b", array(&["2".into(), string("x")]))]),
            "{\"a\":1,\"b\":[2,\"x\"]}"
        );
    }
}
