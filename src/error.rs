//! Error text for people: a library's top-level message alone ("error sending request",
//! "db error") rarely says what to fix; its causes do.

/// The error with its causes, `top: cause: cause`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
