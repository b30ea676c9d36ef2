//! A real redis-server on a free loopback port, killed on drop. Self-contained (only std and
//! the `redis` crate) so benches can include it with `#[path]`, as they cannot use tests/common.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    url: String,
}

impl RedisServer {
    /// Starts redis-server bound to 127.0.0.1 only, without persistence, and waits (up to 5 s)
    /// until it answers PING.
    pub fn start() -> RedisServer {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let url = format!("redis://127.0.0.1:{port}");
        let r = RedisServer { child, url };
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = r.try_cmd(&["PING"]) {
            assert!(Instant::now() < deadline, "redis-server did not start: {e}");
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new blocking connection.
    pub fn connection(&self) -> ::redis::RedisResult<::redis::Connection> {
        ::redis::Client::open(self.url.as_str())?.get_connection()
    }

    /// Runs one command on a new connection: `args[0]` is the command, the rest its arguments.
    pub fn try_cmd(&self, args: &[&str]) -> ::redis::RedisResult<::redis::Value> {
        let mut con = self.connection()?;
        let mut c = ::redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query(&mut con)
    }

    pub fn cmd(&self, args: &[&str]) {
        self.try_cmd(args).unwrap();
    }

    /// Kills the server now (a test of Redis being down); drop does the same.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on right now (the OS picks it; the listener is closed at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
