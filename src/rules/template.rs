//! `reason` templates, parsed once: `{name}` is replaced by what the caller's lookup gives.
//! An unknown name is left as written (`{alloc_gib}`), so a typo shows in the intent instead of
//! silently vanishing. `{{` and `}}` are literal braces.

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Var(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Template(Vec<Piece>);

impl Template {
    pub(super) fn parse(s: &str) -> Self {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(i) = rest.find(['{', '}']) {
            text.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                text.push_str(&tail[..1]);
                rest = &tail[2..];
            } else if let (true, Some(end)) = (tail.starts_with('{'), tail.find('}')) {
                let name = &tail[1..end];
                if name.is_empty() || name.contains('{') {
                    text.push_str(&tail[..1]);
                    rest = &tail[1..];
                    continue;
                }
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Var(name.to_string()));
                rest = &tail[end + 1..];
            } else {
                // A lone brace is text.
                text.push_str(&tail[..1]);
                rest = &tail[1..];
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Template(pieces)
    }

    pub(super) fn render(&self, lookup: impl Fn(&str) -> Option<String>) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(name) => match lookup(name) {
                    Some(v) => out.push_str(&v),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                },
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str) -> String {
        Template::parse(t).render(|n| match n {
            "count" => Some("3".into()),
            "gib" => Some("2.5".into()),
            _ => None,
        })
    }

    #[test]
    fn fields_specials_unknown_and_braces() {
        assert_eq!(render("OOM {gib} GiB x{count}"), "OOM 2.5 GiB x3");
        assert_eq!(render("{nope} stays"), "{nope} stays");
        assert_eq!(render("{{literal}} {count}"), "{literal} 3");
        assert_eq!(render("lone { and } and {}"), "lone { and } and {}");
        assert_eq!(render(""), "");
    }
}
