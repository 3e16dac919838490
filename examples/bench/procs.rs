//! The services under test as child processes (the `full_system` binary),
//! and peak memory from `/proc`.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Fallible;

/// The release `full_system` binary next to this one, built first (a no-op
/// when it is up to date). `WDS_BENCH_FULL_SYSTEM` names another binary.
pub(crate) fn full_system() -> Fallible<PathBuf> {
    if let Some(path) = std::env::var_os("WDS_BENCH_FULL_SYSTEM") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or("the benchmark's own path has no parent")?;
    let binary = dir.join("full_system");
    let release = dir.components().any(|c| c.as_os_str() == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "build",
        "--quiet",
        "--example",
        "full_system",
    ]);
    if release {
        build.arg("--release");
    }
    eprintln!(
        "building full_system ({})…",
        if release { "release" } else { "debug" }
    );
    let built = build.status();
    match (built, binary.exists()) {
        (Ok(status), _) if status.success() => Ok(binary),
        (_, true) => {
            eprintln!(
                "warning: building full_system failed; using the existing {}",
                binary.display()
            );
            Ok(binary)
        }
        (Ok(status), false) => Err(format!("cargo build --example full_system: {status}").into()),
        (Err(e), false) => Err(format!("cannot run cargo to build full_system: {e}").into()),
    }
}

/// A port of 127.0.0.1 that was free a moment ago.
pub(crate) fn free_addr() -> Fallible<SocketAddr> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?)
}

/// One `full_system` role as a child process, its log in a file.
pub(crate) struct Service {
    pub(crate) name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// Starts `full_system <role> <args…>` with warnings-only logging.
    pub(crate) fn spawn(
        binary: &Path,
        name: &str,
        role: &str,
        args: &[String],
        log_dir: &Path,
    ) -> Fallible<Self> {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(binary)
            .arg(role)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        Ok(Service {
            name: name.to_string(),
            child: Some(child),
            log,
        })
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fails with the end of its log if it has exited.
    pub(crate) fn check_running(&mut self) -> Fallible<()> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(
                    format!("{} exited ({status}):\n{}", self.name, tail.join("\n")).into(),
                );
            }
        }
        Ok(())
    }

    /// Its peak resident set (`VmHWM`), in bytes, while it runs.
    pub(crate) fn peak_rss(&self) -> Option<u64> {
        status_kb(&format!("/proc/{}/status", self.pid()?), "VmHWM:").map(|kb| kb * 1024)
    }

    /// Waits until `GET http://addr/healthz` answers 200.
    pub(crate) async fn wait_healthy(&mut self, addr: SocketAddr) -> Fallible<()> {
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/healthz");
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            self.check_running()?;
            let ok = client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if Instant::now() > give_up {
                return Err(format!("{} did not answer on {url} within 30 s", self.name).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM (workers finish what is on the wire), then SIGKILL after 10 s.
    pub(crate) async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let give_up = Instant::now() + Duration::from_secs(10);
        while Instant::now() < give_up {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `kB` field of a `/proc/.../status` file.
fn status_kb(path: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
