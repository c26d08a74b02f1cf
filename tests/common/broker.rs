//! A private broker for one test (scripts/test-broker.sh): its own Tansu on its own port and
//! folder, so a test may stop and restart it, or run it with TLS and SASL/SCRAM, without
//! touching the shared test broker.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Kafka;

pub struct TestBroker {
    dir: tempfile::TempDir,
    pub port: u16,
    pub tls_port: Option<u16>,
    /// Clients reach the broker through a plain TCP proxy on this port (see `cut`).
    pub proxy_port: Option<u16>,
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-broker.sh")
}

impl TestBroker {
    /// Starts a broker; with `tls`, behind a TLS listener (throwaway CA); with `users`
    /// ("name:password:scram512"), requiring SASL/SCRAM.
    pub fn start(tls: bool, users: &[&str]) -> TestBroker {
        Self::start_with(tls, users, false)
    }

    /// A broker that clients reach through a proxy: `cut` makes it unreachable while it
    /// keeps running, `mend` reachable again.
    pub fn start_proxied() -> TestBroker {
        Self::start_with(false, &[], true)
    }

    fn start_with(tls: bool, users: &[&str], proxied: bool) -> TestBroker {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let tls_port = tls.then(free_port);
        let proxy_port = proxied.then(free_port);
        let mut cmd = Command::new("bash");
        cmd.arg(script()).arg("start").arg(dir.path());
        cmd.env("PORT", port.to_string());
        if let Some(p) = tls_port {
            cmd.env("TLS_PORT", p.to_string());
        }
        if let Some(p) = proxy_port {
            cmd.env("PROXY_PORT", p.to_string());
        }
        if !users.is_empty() {
            cmd.env("SASL_USERS", users.join(" "));
        }
        let out = cmd.output().expect("run scripts/test-broker.sh");
        assert!(
            out.status.success(),
            "scripts/test-broker.sh start failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        TestBroker {
            dir,
            port,
            tls_port,
            proxy_port,
        }
    }

    fn run(&self, verb: &str) {
        let out = Command::new("bash")
            .arg(script())
            .arg(verb)
            .arg(self.dir.path())
            .output()
            .expect("run scripts/test-broker.sh");
        assert!(
            out.status.success(),
            "scripts/test-broker.sh {verb} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the broker (an outage); `up` starts it again with its data.
    pub fn down(&self) {
        self.run("down");
    }

    pub fn up(&self) {
        self.run("up");
    }

    /// Makes the broker unreachable (its proxy stops; the broker keeps running).
    pub fn cut(&self) {
        self.run("cut");
    }

    pub fn mend(&self) {
        self.run("mend");
    }

    /// The bootstrap address clients use (the TLS listener when there is one).
    pub fn brokers(&self) -> String {
        match (self.tls_port, self.proxy_port) {
            (Some(p), _) => format!("localhost:{p}"),
            (None, Some(p)) => format!("127.0.0.1:{p}"),
            (None, None) => format!("127.0.0.1:{}", self.port),
        }
    }

    /// The throwaway CA that signed the TLS listener's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client of this broker with `properties` (security settings).
    pub fn kafka(&self, properties: &[(&str, &str)]) -> Kafka {
        Kafka {
            brokers: self.brokers(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The broker's side of a failed test.
            let log =
                std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- tansu.log (last 40 lines, newest first) ---\n{}",
                tail.join("\n")
            );
        }
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}
