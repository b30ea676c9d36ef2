//! A real headless Chromium driven through chromedriver (Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/setup`), with fantoccini as the WebDriver client.

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// One chromedriver (in its own process group, with the browsers it starts) and a session.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

/// `url::ParseError`, named through reqwest's re-export of `Url`.
type UrlParseError = <reqwest::Url as std::str::FromStr>::Err;

/// chromedriver's `POST /session/{id}/se/log`: the browser's console and network log since
/// the last call (`goog:loggingPrefs` must ask for it when the session is made).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &reqwest::Url,
        session: Option<&str>,
    ) -> Result<reqwest::Url, UrlParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &reqwest::Url) -> (hyper::http::Method, Option<String>) {
        (
            hyper::http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

/// chromedriver's `POST /session/{id}/goog/cdp/execute`: one DevTools protocol command.
#[derive(Debug)]
struct Cdp(&'static str, Value);

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &reqwest::Url,
        session: Option<&str>,
    ) -> Result<reqwest::Url, UrlParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &reqwest::Url) -> (hyper::http::Method, Option<String>) {
        (
            hyper::http::Method::POST,
            Some(json!({"cmd": self.0, "params": self.1}).to_string()),
        )
    }
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session whose window is
    /// `width` x `height`.
    pub async fn start(width: u32, height: u32) -> Self {
        let port = super::redis_server::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group, so Drop can stop it with every browser it started.
            .process_group(0)
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; run scripts/setup)");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let ready = reqwest::get(&status)
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if ready.is_some() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chromedriver did not answer on {status}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    // Tests run as root in containers, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    format!("--window-size={width},{height}"),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("a Chromium session");
        Browser { client, driver }
    }

    /// The browser's log entries since the last call: `{level, message, source}`.
    pub async fn log(&self) -> Vec<Value> {
        match self.client.issue_cmd(BrowserLog).await.unwrap() {
            Value::Array(entries) => entries,
            other => panic!("unexpected log answer: {other}"),
        }
    }

    /// Evaluates `script` (a function body: `return ...`) in the page.
    pub async fn eval(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// Polls `script` until it returns `true`; panics with `what` after `secs`.
    pub async fn wait_for(&self, what: &str, secs: u64, script: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while self.eval(script).await != Value::Bool(true) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for: {what}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Emulates a viewport of `width` x `height` CSS pixels (`mobile`: as a phone, with its
    /// viewport meta tag honoured), through the DevTools protocol: resizing the window would
    /// not do, since a window has a minimum width and a frame around the page.
    pub async fn set_viewport(&self, width: u32, height: u32, mobile: bool) {
        let params =
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile});
        self.client
            .issue_cmd(Cdp("Emulation.setDeviceMetricsOverride", params))
            .await
            .unwrap();
    }

    /// Ends the session, then chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test started; nothing else is in it.
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGTERM);
        }
        let _ = self.driver.wait();
    }
}
