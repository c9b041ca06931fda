//! Real processes for the discovery-backend tests: finding a binary (or
//! skipping the test), free loopback ports, temporary directories, child
//! processes killed on drop, and waiting for a server to come up.
//!
//! A test that needs a binary calls [`require`]: when the binary is missing
//! it prints a clear SKIPPED line and returns `None`, unless the variable
//! `CI` is `true`, where a missing binary fails the test (CI installs them,
//! so a skip there would hide a broken setup).

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::WAIT;

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

/// A server's log file, opened twice: for its stdout and its stderr.
pub(super) fn log_files(path: &Path) -> Result<(fs::File, fs::File), String> {
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
pub(super) fn wait_up(
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
