//! Parsing with locations. The toml crate keeps a span on every value of its `DeTable`, but
//! serde's internally tagged enums (`type = "file"`) buffer the table and lose them. So sections
//! whose entries are tagged by `type` are taken out of the document first and each entry is
//! deserialized straight into the struct its `type` names: every error, including a wrong or
//! missing `type`, keeps its `file:line:col`.

use serde::de::{DeserializeOwned, IntoDeserializer};
use std::fmt;
use std::ops::Range;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One problem in a config file, at a place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// The text of one config file and its name, to turn byte spans into `file:line:col`.
pub struct Source<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl Source<'_> {
    pub fn at(&self, offset: usize, message: impl Into<String>) -> Diagnostic {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Diagnostic {
            file: self.file.to_string(),
            line,
            col,
            message: message.into(),
        }
    }

    /// Turns a toml/serde error into a diagnostic with a message that says what to write.
    pub fn from_toml(&self, e: &toml::de::Error, fallback: usize) -> Diagnostic {
        let offset = e.span().map_or(fallback, |s| s.start);
        let message = self.explain(e.message().trim(), offset);
        self.at(offset, message)
    }

    /// The `[table]` header that encloses `offset`, for messages like "in [rules.gpu_oom]".
    fn table_at(&self, offset: usize) -> Option<String> {
        let before = &self.text[..offset.min(self.text.len())];
        before.lines().rev().find_map(|l| {
            let l = l.trim();
            l.starts_with('[').then(|| {
                let end = l.rfind(']').map_or(l.len(), |i| i + 1);
                l[..end]
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string()
            })
        })
    }

    fn explain(&self, msg: &str, offset: usize) -> String {
        let place = self
            .table_at(offset)
            .map(|t| format!(" in [{t}]"))
            .unwrap_or_default();
        if let Some(rest) = msg.strip_prefix("unknown field `") {
            let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
            let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            return match closest(key, &valid) {
                Some(best) => format!("unknown key {key:?}{place}; did you mean {best:?}?"),
                None if valid.is_empty() => format!("unknown key {key:?}{place}; remove it"),
                None => format!(
                    "unknown key {key:?}{place}; valid keys: {}",
                    valid.join(", ")
                ),
            };
        }
        if let Some(rest) = msg.strip_prefix("missing field `") {
            let key = rest.trim_end_matches('`');
            return format!("missing key {key:?}{place}; add `{key} = ...`");
        }
        format!("{msg}{place}")
    }
}

/// The valid name nearest to `got`, if it is near enough to be a typo: at most 2 edits, or a
/// third of the candidate's length for long names (Levenshtein distance, from `strsim`).
pub fn closest<'a>(got: &str, valid: &[&'a str]) -> Option<&'a str> {
    valid
        .iter()
        .map(|v| (strsim::levenshtein(got, v), *v))
        .filter(|(d, v)| *d <= 2.max(v.len() / 3))
        .min()
        .map(|(_, v)| v)
}

/// Deserializes a spanned TOML value into `T`, keeping the locations of its errors.
pub fn deserialize<T: DeserializeOwned>(
    src: &Source,
    value: Spanned<DeValue<'_>>,
) -> Result<T, Diagnostic> {
    let start = value.span().start;
    T::deserialize(value.into_deserializer()).map_err(|e| src.from_toml(&e, start))
}

/// A family of config entries tagged by `type`, such as `[sources.NAME]`.
pub trait Tagged: Sized {
    /// The section's name, as in `[sources.NAME]`.
    const SECTION: &'static str;
    /// The valid `type` values, for messages.
    const KINDS: &'static [&'static str];
    /// Deserialize an entry whose `type` (already removed from `table`) is `kind`.
    fn deserialize_kind(
        kind: &str,
        src: &Source,
        table: Spanned<DeValue<'_>>,
    ) -> Result<Self, Diagnostic>;
}

/// Takes the `[SECTION.NAME]` tables out of `root` and deserializes each by its `type`.
pub fn take_tagged<T: Tagged>(
    src: &Source,
    root: &mut DeTable<'_>,
    errors: &mut Vec<Diagnostic>,
) -> Vec<(String, usize, T)> {
    let Some(section) = take_key(root, T::SECTION) else {
        return Vec::new();
    };
    let section_start = section.span().start;
    let DeValue::Table(entries) = section.into_inner() else {
        errors.push(src.at(
            section_start,
            format!(
                "`{}` must be a table of named entries, like [{}.NAME]",
                T::SECTION,
                T::SECTION
            ),
        ));
        return Vec::new();
    };
    let kinds = T::KINDS.join(", ");
    let mut out = Vec::new();
    for (name, value) in entries {
        let name = name.into_inner().into_owned();
        let span = value.span();
        let header = format!("[{}.{name}]", T::SECTION);
        let DeValue::Table(mut table) = value.into_inner() else {
            errors.push(src.at(
                span.start,
                format!("{header} must be a table with a `type`"),
            ));
            continue;
        };
        let Some(kind) = take_key(&mut table, "type") else {
            errors.push(src.at(
                span.start,
                format!("{header} has no `type`; add `type = \"...\"` (one of: {kinds})"),
            ));
            continue;
        };
        let kind_span = kind.span();
        let Some(kind) = kind.get_ref().as_str().map(str::to_owned) else {
            errors.push(src.at(
                kind_span.start,
                format!("`type` in {header} must be a string (one of: {kinds})"),
            ));
            continue;
        };
        if !T::KINDS.contains(&kind.as_str()) {
            let hint = closest(&kind, T::KINDS)
                .map(|k| format!("did you mean {k:?}? "))
                .unwrap_or_default();
            errors.push(src.at(
                kind_span.start,
                format!("unknown type {kind:?} in {header}; {hint}(one of: {kinds})"),
            ));
            continue;
        }
        let table = Spanned::new(span.clone(), DeValue::Table(table));
        match T::deserialize_kind(&kind, src, table) {
            Ok(entry) => out.push((name, span.start, entry)),
            Err(d) => errors.push(d),
        }
    }
    out
}

/// Removes `key` from a table, with its span.
pub fn take_key<'i>(table: &mut DeTable<'i>, key: &str) -> Option<Spanned<DeValue<'i>>> {
    let found = table.keys().find(|k| k.get_ref() == key).cloned()?;
    table.remove(&found)
}

/// Expands `${VAR}` and `${VAR:-default}` in every string value, in place. `$${` is a literal `${`.
pub fn expand_env(src: &Source, value: &mut Spanned<DeValue<'_>>, errors: &mut Vec<Diagnostic>) {
    let span: Range<usize> = value.span();
    match value.get_mut() {
        DeValue::String(s) if s.contains("${") => match expand(s, |v| std::env::var(v).ok()) {
            Ok(expanded) => *s = expanded.into(),
            Err(msg) => errors.push(src.at(span.start, msg)),
        },
        DeValue::Table(t) => {
            for (_, v) in t.iter_mut() {
                expand_env(src, v, errors);
            }
        }
        DeValue::Array(a) => {
            for v in a.iter_mut() {
                expand_env(src, v, errors);
            }
        }
        _ => {}
    }
}

/// The expansion itself, with the environment passed in so it is testable.
pub fn expand(s: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find('}') else {
            return Err(format!(
                "unclosed `${{` in {s:?}; write ${{NAME}} or ${{NAME:-default}}"
            ));
        };
        let inner = &rest[i + 2..i + end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (env(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set; set it, or give a default: ${{{name}:-value}}"
                ))
            }
        }
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables_and_defaults() {
        let env = |k: &str| (k == "HOME_DIR").then(|| "/home/v".to_string());
        assert_eq!(expand("${HOME_DIR}/log", env).unwrap(), "/home/v/log");
        assert_eq!(expand("${NOPE:-x}-${HOME_DIR}", env).unwrap(), "x-/home/v");
        assert_eq!(
            expand("cost $${HOME_DIR}", env).unwrap(),
            "cost ${HOME_DIR}"
        );
        let e = expand("${NOPE}", env).unwrap_err();
        assert!(e.contains("NOPE is not set"), "{e}");
    }

    #[test]
    fn suggests_the_nearest_key() {
        assert_eq!(
            closest("pririty", &["on", "priority", "intent"]),
            Some("priority")
        );
        assert_eq!(closest("zzz", &["on", "priority"]), None);
    }
}
