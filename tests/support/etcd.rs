//! A real etcd server on free loopback ports, for the etcd discovery and
//! registration tests.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::processes::{Proc, TempDir, free_port, log_files, require, wait_up};

/// An etcd server on free loopback ports with a temporary data directory.
pub struct EtcdServer {
    bin: PathBuf,
    ctl: Option<PathBuf>,
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    proc: Option<Proc>,
}

impl EtcdServer {
    /// Starts etcd, or returns `None` (test skipped) when it is not
    /// installed outside CI.
    pub fn start() -> Option<EtcdServer> {
        let bin = require("etcd", "etcd-server")?;
        let ctl = require("etcdctl", "etcd-client");
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let mut server = EtcdServer {
                bin: bin.clone(),
                ctl: ctl.clone(),
                dir: TempDir::new("etcd"),
                client_port: free_port(),
                peer_port: free_port(),
                proc: None,
            };
            match server.spawn() {
                Ok(()) => return Some(server),
                // Most likely a port taken between asking and binding.
                Err(log) => last_log = log,
            }
        }
        panic!("etcd did not start; its last log:\n{last_log}");
    }

    /// The client URL, `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn spawn(&mut self) -> Result<(), String> {
        let (log, log2) = log_files(&self.log_path())?;
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&self.bin)
            .arg("--name=t")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=t={peer}"))
            .args(["--heartbeat-interval=10", "--election-timeout=100"])
            .args(["--logger=zap", "--log-outputs=stderr", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        let port = self.client_port;
        let proc = wait_up(
            Proc::new(child, "etcd"),
            Duration::from_secs(15),
            &self.log_path(),
            || http_get_contains(port, "/health", "\"health\":\"true\""),
        )?;
        self.proc = Some(proc);
        Ok(())
    }

    /// Stops etcd cleanly (SIGTERM).
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.terminate();
        }
    }

    /// Kills etcd (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    /// Starts etcd again on the same ports and data (stopping it first
    /// if it runs).
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..50 {
            match self.spawn() {
                Ok(()) => return,
                // The old process's ports may take a moment to free.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        panic!(
            "etcd did not restart; its log:\n{}",
            fs::read_to_string(self.log_path()).unwrap_or_default()
        );
    }

    /// Turns authentication on: user `root` (password `root_password`),
    /// a role that may only read keys under `prefix`, and `user` with
    /// `password` in that role. From then on use
    /// [`etcdctl_as_root`](Self::etcdctl_as_root).
    pub fn enable_auth(&self, root_password: &str, user: &str, password: &str, prefix: &str) {
        self.etcdctl(&["user", "add", &format!("root:{root_password}")]);
        self.etcdctl(&["role", "add", "reader"]);
        self.etcdctl(&[
            "role",
            "grant-permission",
            "reader",
            "--prefix=true",
            "read",
            prefix,
        ]);
        self.etcdctl(&["user", "add", &format!("{user}:{password}")]);
        self.etcdctl(&["user", "grant-role", user, "reader"]);
        self.etcdctl(&["auth", "enable"]);
    }

    /// `etcdctl --user root:<password> ...`, once auth is on.
    pub fn etcdctl_as_root(&self, root_password: &str, args: &[&str]) -> String {
        let user = format!("--user=root:{root_password}");
        let mut all = vec![user.as_str()];
        all.extend_from_slice(args);
        self.etcdctl(&all)
    }

    /// Runs `etcdctl` against this server; panics with its output on failure.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let ctl = self.ctl.as_ref().unwrap_or_else(|| {
            panic!("etcdctl is needed by this test (apt-get install -y etcd-client)")
        });
        let output = Command::new(ctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.url()))
            .arg("--command-timeout=5s")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run etcdctl");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            panic!(
                "etcdctl {args:?} failed: {}\n{stdout}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        stdout
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        let out = self.etcdctl(&["get", "--write-out=json", "tower-lb-no-such-key"]);
        let json: serde_json::Value = serde_json::from_str(&out).expect("etcdctl JSON");
        json["header"]["revision"]
            .as_i64()
            .expect("a revision in etcdctl's answer")
    }

    /// Every key under `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.etcdctl(&["get", "--prefix", "--keys-only", prefix])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }
}

/// A tiny blocking HTTP/1.0 GET on 127.0.0.1:port; true when the answer
/// contains `needle`.
fn http_get_contains(port: u16, path: &str, needle: &str) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains(needle)
}
