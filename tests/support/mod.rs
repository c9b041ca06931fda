//! Helpers for the discovery-backend tests (DNS, etcd, file): real etcd and
//! dnsmasq processes on free loopback ports with temporary directories,
//! killed on drop; bounded waits; one-request helpers through the layer.
//!
//! A test that needs a binary calls [`require`]: when the binary is missing
//! it prints a clear SKIPPED line and returns `None`, unless the variable
//! `CI` is `true`, where a missing binary fails the test (CI installs them,
//! so a skip there would hide a broken setup).

// Each test file uses only some of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tower::ServiceExt;
use tower_lb::{LoadBalance, Pool};

/// An upper bound for one wait in a test: generous, but a hung test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The balanced client the tests build.
pub type Client = LoadBalance<reqwest::Client>;

/// A reqwest client that ignores proxy settings (everything is loopback).
pub fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build a reqwest client")
}

/// Sends the crate's logs (`RUST_LOG`, default `tower_lb=debug`) to the
/// test's captured output, shown when a test fails.
pub fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "tower_lb=debug".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// True when running in CI (`CI=true`), where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The path of `binary` (searched in `PATH`, then the sbin directories),
/// or `None` after printing why the calling test is skipped. Panics in CI.
pub fn require(binary: &str, package: &str) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let extra = [
        "/usr/sbin",
        "/sbin",
        "/usr/bin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ]
    .into_iter()
    .map(PathBuf::from);
    if let Some(found) = path_dirs
        .into_iter()
        .chain(extra)
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
    {
        return Some(found);
    }
    if in_ci() {
        panic!(
            "`{binary}` is required in CI but was not found: install Debian's `{package}` \
             (`.ci/run` does: apt-get install -y {package})"
        );
    }
    eprintln!(
        "SKIPPED: `{binary}` not found; install it (apt-get install -y {package}) to run this test. \
         In CI (CI=true) this is a failure, not a skip."
    );
    None
}

/// A port free on 127.0.0.1 for both TCP and UDP at the time of asking.
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let Ok(tcp) = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let Ok(addr) = tcp.local_addr() else { continue };
        if UdpSocket::bind(addr).is_ok() {
            return addr.port();
        }
    }
    panic!("no free loopback port found");
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "tower-lb-{label}-{}-{n}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Proc {
    child: Option<Child>,
    what: String,
}

impl Proc {
    pub fn new(child: Child, what: impl Into<String>) -> Proc {
        Proc {
            child: Some(child),
            what: what.into(),
        }
    }

    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it has exited (and so can be reaped).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(_))) | None => true,
            Some(Ok(None)) => false,
            Some(Err(_)) => true,
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (a clean stop), then wait up to 10 s, then SIGKILL.
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.what);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 25 ms until it holds, for at most `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Awaits `fut` for at most [`WAIT`].
pub async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

/// Sends one `GET http://{service}/api/greet` through the layer; returns the
/// answering instance's name (`x-instance`), or the error as text.
pub async fn greet(client: &Client, service: &str) -> Result<String, String> {
    let url = format!("http://{service}/api/greet?name=test");
    let request = reqwest::Request::new(http::Method::GET, url.parse().expect("a valid URL"));
    let response = tokio::time::timeout(WAIT, client.clone().oneshot(request))
        .await
        .map_err(|_| "the request timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("status {}", response.status()));
    }
    response
        .headers()
        .get("x-instance")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| "no x-instance header".to_string())
}

/// Sends `n` requests; every one must succeed. Returns answers per instance.
pub async fn greet_n(client: &Client, service: &str, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        match greet(client, service).await {
            Ok(name) => *counts.entry(name).or_insert(0) += 1,
            Err(e) => panic!("request {i} of {n} to `{service}` failed: {e}"),
        }
    }
    counts
}

/// The pool's endpoint keys, sorted.
pub fn keys(pool: &Pool) -> Vec<String> {
    pool.endpoints()
        .iter()
        .map(|e| e.key().to_string())
        .collect()
}

/// `http://{addr}`, an endpoint key.
pub fn key(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// The sorted keys of these addresses.
pub fn key_set(addrs: &[SocketAddr]) -> Vec<String> {
    let mut keys: Vec<String> = addrs.iter().copied().map(key).collect();
    keys.sort();
    keys
}

/// A server's log file, opened twice: for its stdout and its stderr.
fn log_files(path: &Path) -> Result<(fs::File, fs::File), String> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    Ok((log, log2))
}

/// Waits until `up` says the server serves, within `limit`; kills it and
/// returns its log when it exits or the time runs out first.
fn wait_up(
    mut proc: Proc,
    limit: Duration,
    log: &Path,
    mut up: impl FnMut() -> bool,
) -> Result<Proc, String> {
    let deadline = Instant::now() + limit;
    loop {
        if up() {
            return Ok(proc);
        }
        if proc.exited() || Instant::now() > deadline {
            proc.kill();
            return Err(fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------- etcd

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

/// Runs a function of this test binary in a child process: the test named
/// `test_name` (an `#[ignore]`d helper) with `env` set, and waits for it to
/// print `READY ` and a value; returns the process and that value.
pub fn spawn_helper(test_name: &str, env: &[(&str, String)]) -> (Proc, String) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut command = Command::new(exe);
    command
        .args([
            "--exact",
            test_name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn the helper process");
    let stdout = child.stdout.take().expect("piped stdout");
    let proc = Proc::new(child, test_name);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The harness may have written "test name ... " on the same line.
            if let Some(at) = line.find("READY ") {
                let _ = tx.send(line[at + "READY ".len()..].trim().to_string());
            }
        }
    });
    match rx.recv_timeout(WAIT) {
        Ok(ready) => (proc, ready),
        Err(_) => panic!("helper `{test_name}` did not report READY within {WAIT:?}"),
    }
}

// ---------------------------------------------------------------- dnsmasq

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
