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

    /// The table that holds what is at `offset`, for messages like "in [rules.gpu_oom]":
    /// `Some("")` at the top level, `None` when no header says. On a header line, an offset at the `[` means the table
    /// itself (serde puts a missing key there) and an offset inside the name means a key of
    /// the table before it (`[bogus]` is key "bogus" at the top level).
    fn table_at(&self, offset: usize) -> Option<String> {
        let offset = offset.min(self.text.len());
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[offset..]
            .find('\n')
            .map_or(self.text.len(), |i| offset + i);
        let line = &self.text[line_start..line_end];
        let indent = line.len() - line.trim_start().len();
        if line.trim_start().starts_with('[') {
            let name_start = line_start + indent + line[indent..].len()
                - line[indent..].trim_start_matches('[').len();
            return Some(if offset < name_start {
                header_name(line)
            } else {
                self.text[name_start..offset]
                    .trim()
                    .trim_end_matches('.')
                    .trim()
                    .to_string()
            });
        }
        // Before any header is the top level too, but a snippet parsed on its own (a
        // collector's table) has no headers: say nothing rather than something wrong.
        self.text[..line_start]
            .lines()
            .rev()
            .find_map(|l| l.trim().starts_with('[').then(|| header_name(l)))
    }

    /// `msg` in words that say what to write, with the table it is in.
    pub fn explain(&self, msg: &str, offset: usize) -> String {
        self.explain_with(msg, offset, &[])
    }

    /// [`Self::explain`], where an unknown key may also be one of `also`.
    fn explain_with(&self, msg: &str, offset: usize, also: &[&str]) -> String {
        let place = match self.table_at(offset) {
            Some(t) if t.is_empty() => " at the top level".to_string(),
            Some(t) => format!(" in [{t}]"),
            None => String::new(),
        };
        if let Some(rest) = msg.strip_prefix("unknown field `") {
            let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
            let mut valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            valid.extend(also.iter().copied());
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
        if let Some((found, expected)) = msg
            .strip_prefix("invalid type: ")
            .and_then(|r| r.split_once(", expected "))
        {
            let key = self.key_at(offset);
            let expected = plain_expected(key.as_deref(), expected);
            return match key {
                Some(key) => format!("`{key}` must be {expected}, not {found}{place}"),
                None => format!("expected {expected}, not {found}{place}"),
            };
        }
        format!("{msg}{place}")
    }

    /// The key whose value is at `offset` (`priority` for `priority = "nine"`), if the line
    /// reads `key = value` there.
    fn key_at(&self, offset: usize) -> Option<String> {
        let offset = offset.min(self.text.len());
        let line_start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let (key, _) = self.text[line_start..offset].split_once('=')?;
        let key = key.trim().rsplit('.').next()?.trim().trim_matches('"');
        (!key.is_empty() && !key.starts_with('[')).then(|| key.to_string())
    }
}

/// The name in a `[table]` or `[[array]]` header line.
fn header_name(line: &str) -> String {
    let l = line.trim();
    let end = l.find(']').unwrap_or(l.len());
    l[..end].trim_start_matches('[').trim().to_string()
}

/// What serde expected, in words a config writer knows: "a whole number from 0 to 10" for a
/// rule's priority rather than "u8".
fn plain_expected(key: Option<&str>, expected: &str) -> String {
    match (key, expected) {
        (Some("priority"), "u8") => "a whole number from 0 to 10".into(),
        (_, "u8") => "a whole number from 0 to 255".into(),
        (_, "u16") => "a whole number from 0 to 65535".into(),
        (_, "u32" | "u64" | "usize") => "a whole number (0 or more)".into(),
        (_, "i8" | "i16" | "i32" | "i64" | "isize") => "a whole number".into(),
        (_, "f32" | "f64") => "a number".into(),
        (_, "a boolean") => "true or false".into(),
        (_, "a string") => "a string in quotes".into(),
        (_, "a sequence") => "a list, like [\"a\", \"b\"]".into(),
        (_, "a map") => "a table".into(),
        (_, e) if e.starts_with("struct ") => "a table".into(),
        _ => expected.to_string(),
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

/// Parses one entry of a family whose `type` (already removed from the table) is `kind`: the
/// family's wrapper instantiated for one kind, as listed in the family's `KINDS`.
pub type ParseKind<T> =
    for<'a, 'b, 'i> fn(&'static str, &'a Source<'b>, Spanned<DeValue<'i>>) -> Result<T, Diagnostic>;

/// Takes the `[SECTION.NAME]` tables out of `root` and parses each by its `type`, one of
/// `kinds` (a family's registry, like `sources::KINDS`).
pub fn take_tagged<T>(
    src: &Source,
    root: &mut DeTable<'_>,
    section: &str,
    kinds: &[(&'static str, ParseKind<T>)],
    errors: &mut Vec<Diagnostic>,
) -> Vec<(String, usize, T)> {
    let Some(value) = take_key(root, section) else {
        return Vec::new();
    };
    let section_start = value.span().start;
    let DeValue::Table(entries) = value.into_inner() else {
        errors.push(src.at(
            section_start,
            format!("`{section}` must be a table of named entries, like [{section}.NAME]"),
        ));
        return Vec::new();
    };
    let names: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
    let one_of = names.join(", ");
    let mut out = Vec::new();
    for (name, value) in entries {
        let name = name.into_inner().into_owned();
        let span = value.span();
        let header = format!("[{section}.{name}]");
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
                format!("{header} has no `type`; add `type = \"...\"` (one of: {one_of})"),
            ));
            continue;
        };
        let kind_span = kind.span();
        let Some(kind) = kind.get_ref().as_str().map(str::to_owned) else {
            errors.push(src.at(
                kind_span.start,
                format!("`type` in {header} must be a string (one of: {one_of})"),
            ));
            continue;
        };
        let Some((kind, parse)) = kinds.iter().find(|(k, _)| *k == kind) else {
            let hint = closest(&kind, &names)
                .map(|k| format!("did you mean {k:?}? "))
                .unwrap_or_default();
            errors.push(src.at(
                kind_span.start,
                format!("unknown type {kind:?} in {header}; {hint}(one of: {one_of})"),
            ));
            continue;
        };
        let table = Spanned::new(span.clone(), DeValue::Table(table));
        match parse(kind, src, table) {
            Ok(entry) => out.push((name, span.start, entry)),
            Err(d) => errors.push(d),
        }
    }
    out
}

/// Moves the `keys` present in `table` into a table of their own, which keeps the outer span:
/// how a family's wrapper takes out the fields every kind shares before the kind parses the
/// rest.
pub fn split_off<'i>(table: &mut Spanned<DeValue<'i>>, keys: &[&str]) -> Spanned<DeValue<'i>> {
    let span = table.span();
    let mut shared = DeTable::new();
    if let DeValue::Table(t) = table.get_mut() {
        for key in keys {
            let found = t.keys().find(|k| k.get_ref() == key).cloned();
            if let Some(k) = found {
                if let Some(v) = t.remove(&k) {
                    shared.insert(k, v);
                }
            }
        }
    }
    Spanned::new(span, DeValue::Table(shared))
}

/// Like [`deserialize`], for the part of a table left after [`split_off`]: an unknown key is
/// also matched against `shared` (the keys taken out), so a typo of a shared key still gets
/// its "did you mean".
pub fn deserialize_rest<T: DeserializeOwned>(
    src: &Source,
    value: Spanned<DeValue<'_>>,
    shared: &[&str],
) -> Result<T, Diagnostic> {
    let start = value.span().start;
    T::deserialize(value.into_deserializer()).map_err(|e| {
        let offset = e.span().map_or(start, |s| s.start);
        let message = src.explain_with(e.message().trim(), offset, shared);
        src.at(offset, message)
    })
}

/// The keys a struct accepts, as its `Deserialize` names them (renames applied): for messages
/// that say which kind a key belongs to. Empty for types that are not structs.
pub fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    #[derive(Debug)]
    struct Found(&'static [&'static str]);
    impl fmt::Display for Found {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("fields found")
        }
    }
    impl std::error::Error for Found {}
    impl de::Error for Found {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Found(&[])
        }
    }
    /// Answers only `deserialize_struct`, by giving up with the field list.
    struct Fields;
    impl<'de> de::Deserializer<'de> for Fields {
        type Error = Found;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
            Err(Found(&[]))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Found> {
            Err(Found(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    match T::deserialize(Fields) {
        Ok(_) => &[],
        Err(Found(fields)) => fields,
    }
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
    fn fields_are_the_keys_a_struct_takes() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Step {
            #[serde(rename = "systemd")]
            verb: String,
            unit: Option<String>,
        }
        assert_eq!(fields::<Step>(), ["systemd", "unit"]);
        assert!(fields::<String>().is_empty());
    }

    #[test]
    fn shared_keys_split_off_and_still_get_hints() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Own {
            url: String,
        }
        let text = "url = \"x\"\ntimeout = \"5s\"\ntimout = 1\n";
        let src = Source {
            file: "t.toml",
            text,
        };
        let doc = DeTable::parse(text).unwrap();
        let span = doc.span();
        let mut table = Spanned::new(span, DeValue::Table(doc.into_inner()));
        let shared = split_off(&mut table, &["timeout", "table"]);
        let DeValue::Table(t) = shared.get_ref() else {
            panic!()
        };
        assert_eq!(t.len(), 1);
        let e = deserialize_rest::<Own>(&src, table, &["timeout", "table"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.toml:3:1: unknown key \"timout\"; did you mean \"timeout\"?"
        );
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
