//! A real dnsmasq on a free loopback port, for the DNS discovery tests.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::processes::{Proc, TempDir, free_port, log_files, require, wait_up};

/// dnsmasq serving local records on a free loopback port. A records live
/// in a hosts directory that dnsmasq watches, so they can change while it
/// runs; SRV records are fixed per start ([`Dnsmasq::restart`] changes them).
pub struct Dnsmasq {
    bin: PathBuf,
    port: u16,
    dir: TempDir,
    records: Vec<String>,
    proc: Option<Proc>,
}

impl Dnsmasq {
    /// Starts dnsmasq with these extra options (`--srv-host=...`,
    /// `--host-record=...`), authoritative for `*.test`, TTL 1 s; or `None`
    /// (test skipped) when it is not installed outside CI.
    pub fn start(records: &[String]) -> Option<Dnsmasq> {
        let bin = require("dnsmasq", "dnsmasq-base")?;
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let mut server = Dnsmasq {
                bin: bin.clone(),
                port: free_port(),
                dir: TempDir::new("dnsmasq"),
                records: records.to_vec(),
                proc: None,
            };
            fs::create_dir_all(server.dir.path().join("hosts")).expect("create the hosts dir");
            match server.spawn() {
                Ok(()) => return Some(server),
                Err(log) => last_log = log,
            }
        }
        panic!("dnsmasq did not start; its last log:\n{last_log}");
    }

    /// Where to send queries.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Sets the A records served from the hosts directory, as
    /// `(ip, name)` pairs; dnsmasq picks the change up within about 0.5 s.
    pub fn set_hosts(&self, entries: &[(&str, &str)]) {
        let text: String = entries
            .iter()
            .map(|(ip, name)| format!("{ip} {name}\n"))
            .collect();
        // Write beside, then rename in: dnsmasq never reads half a file.
        let tmp = self.dir.path().join("hosts.tmp");
        fs::write(&tmp, text).expect("write hosts");
        fs::rename(&tmp, self.dir.path().join("hosts").join("hosts")).expect("move hosts in");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("dnsmasq.log")
    }

    fn spawn(&mut self) -> Result<(), String> {
        let (log, log2) = log_files(&self.log_path())?;
        let child = Command::new(&self.bin)
            .arg("--no-daemon")
            .arg(format!("--port={}", self.port))
            .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
            .args([
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--user=root",
            ])
            .args(["--local=/test/", "--local-ttl=1"])
            .arg(format!(
                "--hostsdir={}",
                self.dir.path().join("hosts").display()
            ))
            .args(&self.records)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        let addr = self.addr();
        let proc = wait_up(
            Proc::new(child, "dnsmasq"),
            Duration::from_secs(5),
            &self.log_path(),
            // Bound by dnsmasq once our own bind fails.
            || UdpSocket::bind(addr).is_err() && TcpListener::bind(addr).is_err(),
        )?;
        self.proc = Some(proc);
        Ok(())
    }

    /// Stops dnsmasq (SIGTERM); its port is free afterwards.
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.terminate();
        }
    }

    /// Restarts with other records (same port, same hosts directory).
    pub fn restart(&mut self, records: &[String]) {
        if let Some(mut proc) = self.proc.take() {
            proc.terminate();
        }
        self.records = records.to_vec();
        for _ in 0..50 {
            match self.spawn() {
                Ok(()) => return,
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        panic!(
            "dnsmasq did not restart; its log:\n{}",
            fs::read_to_string(self.log_path()).unwrap_or_default()
        );
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }
}
