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
    client_with(timeout, &|k| std::env::var(k).ok())
}

/// [`client`] with the environment passed in, so it is testable.
fn client_with(timeout: Duration, env: &dyn Fn(&str) -> Option<String>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().timeout(timeout).no_proxy();
    for proxy in env_proxies(env) {
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
    type Make = fn(&str) -> reqwest::Result<reqwest::Proxy>;
    let wanted: [(&[&str], Make); 3] = [
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

    /// A proxy that answers 502 to everything, and how many requests it got.
    async fn proxy() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            }
        });
        (url, hits)
    }

    /// Other hosts go through the proxy unless `NO_PROXY` names them. (`.invalid` never
    /// resolves, so a direct request fails at DNS and a proxied one gets the proxy's 502.)
    #[tokio::test]
    async fn no_proxy_is_honoured_and_other_hosts_are_proxied() {
        let (url, hits) = proxy().await;
        let env = |no: &'static str| {
            let url = url.clone();
            move |k: &str| match k {
                "HTTP_PROXY" => Some(url.clone()),
                "NO_PROXY" if !no.is_empty() => Some(no.to_string()),
                _ => None,
            }
        };
        let proxied = client_with(Duration::from_secs(5), &env(""));
        let resp = proxied
            .get("http://service.invalid/x")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);

        let direct = client_with(Duration::from_secs(5), &env("other.example, .invalid"));
        assert!(direct.get("http://service.invalid/x").send().await.is_err());
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
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
