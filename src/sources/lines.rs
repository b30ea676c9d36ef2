//! Log lines to events, shared by the file and journald sources: cut lines that are too long,
//! replace invalid UTF-8, and match each line against the source's `[[match]]` list.

use crate::config::Pattern;
use crate::event::Data;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

/// Longest line kept, in bytes; longer lines are cut and counted.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineMatch {
    /// A line that matches becomes an event; named groups become fields.
    pub regex: Pattern,
    /// The event type to emit.
    pub event: String,
}

/// The `[[sources.NAME.match]]` list. Without entries every line is an event of type `line`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Matches(pub Vec<LineMatch>);

impl Matches {
    pub fn event_types(&self) -> Vec<String> {
        if self.0.is_empty() {
            vec!["line".into()]
        } else {
            self.0.iter().map(|m| m.event.clone()).collect()
        }
    }

    /// The fields of an `event` from these matches: the named groups of every regex that
    /// emits it, and `line`.
    pub fn event_fields(&self, event: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .0
            .iter()
            .filter(|m| m.event == event)
            .flat_map(|m| m.regex.0.capture_names().flatten().map(str::to_string))
            .collect();
        out.push("line".into());
        out
    }

    /// The event for a line, if any: the first match wins. Data holds the named groups and
    /// the line itself under `line`.
    pub fn classify(&self, line: &str) -> Option<(&str, Data)> {
        if self.0.is_empty() {
            let mut data = Data::new();
            data.insert("line".into(), Value::String(line.to_string()));
            return Some(("line", data));
        }
        for m in &self.0 {
            let re = &m.regex.0;
            // No `is_match` first: on a miss `captures` costs the same DFA scan (it resolves
            // groups only within a match), so checking first would scan matches twice.
            let Some(caps) = re.captures(line) else {
                continue;
            };
            let mut data = Data::new();
            for name in re.capture_names().flatten() {
                if let Some(v) = caps.name(name) {
                    data.insert(name.to_string(), Value::String(v.as_str().to_string()));
                }
            }
            data.insert("line".into(), Value::String(line.to_string()));
            return Some((m.event.as_str(), data));
        }
        None
    }
}

/// Bytes of one line to text: cut at `max` bytes, invalid UTF-8 replaced, a trailing `\r`
/// dropped. Borrows when the bytes are valid UTF-8 (the usual case: no allocation per line).
/// Returns the text and whether it was cut.
pub fn decode_line(bytes: &[u8], max: usize) -> (Cow<'_, str>, bool) {
    let cut = bytes.len() > max;
    let bytes = if cut { &bytes[..max] } else { bytes };
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    // A cut through a multi-byte char leaves a replacement char at the end; that is fine.
    (String::from_utf8_lossy(bytes), cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(toml_text: &str) -> Matches {
        #[derive(Deserialize)]
        struct W {
            #[serde(rename = "match")]
            m: Matches,
        }
        toml::from_str::<W>(toml_text).unwrap().m
    }

    #[test]
    fn named_groups_become_fields() {
        let m = matches(
            r#"[[match]]
regex = 'CUDA out of memory\. Tried to allocate (?P<alloc_gib>[0-9.]+) GiB'
event = "gpu_oom""#,
        );
        let (ty, data) = m
            .classify("torch: CUDA out of memory. Tried to allocate 2.50 GiB (GPU 0)")
            .unwrap();
        assert_eq!(ty, "gpu_oom");
        assert_eq!(data["alloc_gib"], "2.50");
        assert!(m.classify("all good").is_none());
    }

    #[test]
    fn long_and_invalid_lines_are_kept_safely() {
        let (t, cut) = decode_line(b"abc\xffdef", 100);
        assert_eq!(t, "abc\u{fffd}def");
        assert!(!cut);
        let (t, cut) = decode_line(&[b'x'; 10], 4);
        assert_eq!(t, "xxxx");
        assert!(cut);
    }
}
