//! The one template syntax: rule `reason`s, playbook step arguments and invariant `signal`s.
//!
//! - `{name}` is a field; a name is letters, digits, `_`, `-` and `.` (Unicode letters too), such
//!   as `{count}`, `{alloc_gib}` or `{data.alloc_gib}`. What a name means is the caller's
//!   lookup; [`field`] resolves dotted paths into JSON data (`{a.b}` is key `a.b` if the data has
//!   one, else key `b` inside object `a`; an array takes an index, `{list.0}`).
//! - `{{` and `}}` are a literal `{` and `}`.
//! - Anything else in braces is text, as written: JSON such as `{"k": 1}`, `{}`, `{ x }`, a lone
//!   brace. So a template never fails to parse.
//! - Values: strings bare, numbers and other JSON as JSON text (`2.5`, `true`, `[1,2]`).
//!
//! A field the lookup does not know is handled by the [`Missing`] policy the caller picks:
//! [`Missing::Error`] where acting on a wrong value would be unsafe (step arguments: a command
//! must never run with a placeholder in its argv), [`Missing::Placeholder`] in messages (rule
//! reasons, invariant signals), where the field is kept exactly as written, `{name}`, so a typo
//! shows in the message instead of silently vanishing.

use serde_json::{Map, Value};
use std::borrow::Cow;

/// What to do with a field the lookup does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Fail the render with [`MissingField`].
    Error,
    /// Keep the field as written, `{name}`.
    Placeholder,
}

/// A field a [`Missing::Error`] render could not fill.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {{{name}}}: no such field; write {{{{ and }}}} for literal braces")]
pub struct MissingField {
    /// The field's name as written, without braces (`data.alloc_gib`).
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(String),
}

/// A parsed template: parse once (at config load where it is hot), render many times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
    /// Bytes of literal text, to size the output once.
    text_len: usize,
}

impl Template {
    /// Parses `text`; never fails (see the module's rules for what is text).
    pub fn parse(text: &str) -> Self {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            lit.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                lit.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            let name = tail
                .strip_prefix('{')
                .and_then(|t| t.find('}').map(|end| &t[..end]))
                .filter(|n| is_name(n));
            match name {
                Some(name) => {
                    if !lit.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Field(name.to_string()));
                    rest = &tail[name.len() + 2..];
                }
                None => {
                    // A brace that opens no field is text (both braces are one byte).
                    lit.push_str(&tail[..1]);
                    rest = &tail[1..];
                }
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Text(lit));
        }
        let text_len = pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.len(),
                Piece::Field(_) => 0,
            })
            .sum();
        Template { pieces, text_len }
    }

    /// The field names, in order, for checking a template against what its use provides.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Field(n) => Some(n.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// Fills every field with `lookup(name)`; an unknown one follows `missing`. With
    /// [`Missing::Placeholder`] this never fails.
    pub fn render<'v>(
        &self,
        missing: Missing,
        mut lookup: impl FnMut(&str) -> Option<Cow<'v, str>>,
    ) -> Result<String, MissingField> {
        let mut out = String::with_capacity(self.text_len + 16 * self.pieces.len());
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(name) => match (lookup(name), missing) {
                    (Some(v), _) => out.push_str(&v),
                    (None, Missing::Placeholder) => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                    (None, Missing::Error) => {
                        return Err(MissingField { name: name.clone() });
                    }
                },
            }
        }
        Ok(out)
    }

    /// A message: [`Missing::Placeholder`], so an unknown field stays `{name}`.
    pub fn message<'v>(&self, lookup: impl FnMut(&str) -> Option<Cow<'v, str>>) -> String {
        match self.render(Missing::Placeholder, lookup) {
            Ok(s) => s,
            Err(_) => unreachable!("a placeholder render cannot fail"),
        }
    }
}

fn is_name(n: &str) -> bool {
    !n.is_empty()
        && !n.starts_with(['.', '-'])
        && !n.ends_with('.')
        && !n.contains("..")
        && n.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// The field at `path` in `data` as template text: the key `path` itself if there is one, else
/// the dotted path through objects (and array indexes). Strings bare, other values as JSON.
pub fn field<'a>(data: &'a Map<String, Value>, path: &str) -> Option<Cow<'a, str>> {
    let v = match data.get(path) {
        Some(v) => v,
        None => {
            let (first, rest) = path.split_once('.')?;
            rest.split('.')
                .try_fold(data.get(first)?, |v, key| match v {
                    Value::Object(m) => m.get(key),
                    Value::Array(a) => a.get(key.parse::<usize>().ok()?),
                    _ => None,
                })?
        }
    };
    Some(text(v))
}

/// A JSON value as template text: strings bare, everything else as JSON.
pub fn text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        other => Cow::Owned(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data() -> Map<String, Value> {
        json!({
            "gib": 2.5,
            "count": 3,
            "name": "a b",
            "ok": true,
            "nested": {"inner": {"deep": "x"}, "n": -1},
            "list": [10, "twenty"],
            "dotted.key": "exact",
            "größe": "groß",
            "nothing": null,
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn msg(t: &str) -> String {
        let d = data();
        Template::parse(t).message(|n| field(&d, n))
    }

    fn strict(t: &str) -> Result<String, MissingField> {
        let d = data();
        Template::parse(t).render(Missing::Error, |n| field(&d, n))
    }

    #[test]
    fn fields_and_numbers() {
        assert_eq!(msg("OOM {gib} GiB x{count}"), "OOM 2.5 GiB x3");
        assert_eq!(msg("{name}|{ok}|{nothing}"), "a b|true|null");
        assert_eq!(msg("{nested.n} {list}"), "-1 [10,\"twenty\"]");
        assert_eq!(msg(""), "");
        assert_eq!(msg("no fields at all"), "no fields at all");
    }

    #[test]
    fn escapes_and_braces_that_are_text() {
        assert_eq!(msg("{{literal}} {count}"), "{literal} 3");
        assert_eq!(msg("{{{count}}}"), "{3}");
        assert_eq!(msg("lone { and } and {}"), "lone { and } and {}");
        assert_eq!(msg("{\"json\": 1} {unknown"), "{\"json\": 1} {unknown");
        assert_eq!(
            msg("{ count } {.count} {count.}"),
            "{ count } {.count} {count.}"
        );
        assert_eq!(msg("a}}b{{c"), "a}b{c");
    }

    #[test]
    fn nested_data_by_dotted_path() {
        assert_eq!(msg("{nested.inner.deep}"), "x");
        assert_eq!(msg("{list.0}/{list.1}"), "10/twenty");
        // A key that contains a dot wins over the path.
        assert_eq!(msg("{dotted.key}"), "exact");
        assert_eq!(
            msg("{nested.inner.gone} {list.9} {name.x}"),
            "{nested.inner.gone} {list.9} {name.x}"
        );
    }

    #[test]
    fn missing_fields_by_policy() {
        assert_eq!(msg("{nope} stays"), "{nope} stays");
        assert_eq!(strict("--alloc={gib}").unwrap(), "--alloc=2.5");
        let e = strict("--alloc={nope}").unwrap_err();
        assert_eq!(e.name, "nope");
        assert!(e.to_string().contains("{nope}"), "{e}");
        assert_eq!(strict("{\"json\": 1}").unwrap(), "{\"json\": 1}");
    }

    #[test]
    fn non_ascii_text_and_names() {
        assert_eq!(
            msg("Größe: {größe} — {name} ✓ {{é}}"),
            "Größe: groß — a b ✓ {é}"
        );
        assert_eq!(msg("{日本}"), "{日本}");
        assert_eq!(msg("ü{"), "ü{");
    }

    #[test]
    fn fields_are_listed_in_order() {
        let t = Template::parse("{a} {{b}} {c.d} {\"e\": 1}");
        assert_eq!(t.fields().collect::<Vec<_>>(), ["a", "c.d"]);
    }

    #[test]
    fn lookup_decides_names() {
        let t = Template::parse("{count} events for {for}");
        let s = t.message(|n| match n {
            "for" => Some(Cow::Borrowed("5m")),
            "count" => Some(Cow::Owned(7.to_string())),
            _ => None,
        });
        assert_eq!(s, "7 events for 5m");
    }
}
