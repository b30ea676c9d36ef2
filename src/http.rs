//! The one way vigil builds an HTTP client: probes, scrapes, collectors, webhooks and alerts
//! all go through [`client`], so they agree on proxies and timeouts.
//!
//! - **Proxies** come from the environment as curl reads them (`HTTP_PROXY`, `HTTPS_PROXY`,
//!   `ALL_PROXY`, lower case too) and `NO_PROXY` is honoured; loopback (`127.0.0.0/8`, `::1`,
//!   `localhost`) is never proxied, whatever the environment says: a proxy cannot reach the
//!   host's own services, and a proxy answering 502 for them would make a healthy service
//!   look down.
//! - **Timeouts** bound the whole exchange, the body included (reqwest's total timeout), so a
//!   server that sends headers and then hangs fails the request instead of holding it forever.
//!   A request may set its own (`RequestBuilder::timeout`), which replaces the client's.

use std::time::Duration;

/// What a client built without a more specific need waits at most for one whole exchange.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Hosts that are never sent through a proxy, added to `NO_PROXY`.
pub const LOOPBACK: &str = "127.0.0.0/8,::1,localhost";

/// A client whose every request, body included, ends within `timeout` (unless the request sets
/// its own), with proxies from the environment except for loopback and `NO_PROXY` hosts.
pub fn client(timeout: Duration) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().timeout(timeout).no_proxy();
    for proxy in env_proxies(&|k| std::env::var(k).ok()) {
        builder = builder.proxy(proxy);
    }
    builder.build().unwrap_or_else(|e| {
        // Without TLS or proxies there is nothing left that can fail; keep the timeout.
        tracing::warn!("cannot build the HTTP client ({e}); going without proxies");
        reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .unwrap_or_default()
    })
}

/// The `NO_PROXY` list with loopback always in it.
pub fn no_proxy_list(env: &dyn Fn(&str) -> Option<String>) -> String {
    match first(env, &["NO_PROXY", "no_proxy"]) {
        Some(user) => format!("{user},{LOOPBACK}"),
        None => LOOPBACK.to_string(),
    }
}

/// The proxies the environment asks for, each excluding [`no_proxy_list`]. A proxy URL that
/// does not parse is skipped with a warning rather than failing every request.
fn env_proxies(env: &dyn Fn(&str) -> Option<String>) -> Vec<reqwest::Proxy> {
    let no = no_proxy_list(env);
    let wanted: [(&[&str], fn(&str) -> reqwest::Result<reqwest::Proxy>); 3] = [
        (&["HTTP_PROXY", "http_proxy"], |u| reqwest::Proxy::http(u)),
        (&["HTTPS_PROXY", "https_proxy"], |u| {
            reqwest::Proxy::https(u)
        }),
        (&["ALL_PROXY", "all_proxy"], |u| reqwest::Proxy::all(u)),
    ];
    let mut out = Vec::new();
    for (names, make) in wanted {
        let Some(url) = first(env, names) else {
            continue;
        };
        match make(&url) {
            Ok(p) => out.push(p.no_proxy(reqwest::NoProxy::from_string(&no))),
            Err(e) => tracing::warn!("ignoring {}={url:?}: {e}", names[0]),
        }
    }
    out
}

/// The first of `names` set to something non-empty.
fn first(env: &dyn Fn(&str) -> Option<String>, names: &[&str]) -> Option<String> {
    names
        .iter()
        .filter_map(|n| env(n))
        .find(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_always_excluded() {
        let none = |_: &str| None;
        assert_eq!(no_proxy_list(&none), LOOPBACK);
        let some = |k: &str| (k == "no_proxy").then(|| "internal.example".to_string());
        assert_eq!(no_proxy_list(&some), format!("internal.example,{LOOPBACK}"));
    }

    #[test]
    fn a_bad_proxy_url_is_skipped() {
        let env = |k: &str| match k {
            "HTTP_PROXY" => Some("http://proxy.example:3128".to_string()),
            "HTTPS_PROXY" => Some("::not a url::".to_string()),
            _ => None,
        };
        assert_eq!(env_proxies(&env).len(), 1);
    }
}
