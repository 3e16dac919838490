//! Real processes for end-to-end tests and benchmarks: the `full_system`
//! example binary, started with flags and settings, followed through its
//! log, stopped with a signal or killed with SIGKILL, its peak memory read
//! from `/proc`.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `full_system` binary of the debug profile, built on first use (the
/// tests' binary).
///
/// # Panics
///
/// When it cannot be built.
pub fn full_system() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_full_system(false).unwrap_or_else(|e| panic!("{e}")))
}

/// Builds the `full_system` example (`--release` when `release`; a no-op
/// when it is up to date) and returns the path cargo reports for it.
///
/// # Errors
///
/// When cargo cannot run, the build fails (with cargo's messages), or cargo
/// names no binary.
pub fn build_full_system(release: bool) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("Cargo.toml");
    let mut build = Command::new(&cargo);
    build
        .args([
            "build",
            "--quiet",
            "-p",
            "wds-examples",
            "--example",
            "full_system",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest);
    if release {
        build.arg("--release");
    }
    let out = build
        .output()
        .map_err(|e| format!("cannot run cargo to build the full_system example: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building full_system failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // One JSON message a line; the example's artifact names its executable.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "full_system")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .filter(|bin| bin.exists())
        .ok_or_else(|| "cargo built full_system but named no executable".to_string())
}

/// The signing secret the tests' deployments share (`WDS_SECRETS`): a
/// notifier refuses to start without one.
pub const TEST_SECRET: &str = "whsec_dGVzdC1zZWNyZXQtb2YtdGhlLXdkcy10ZXN0cw==";

/// A child process killed (SIGKILL) when dropped, its output in a log file.
#[derive(Debug)]
pub struct Service {
    /// What it is, for messages.
    pub name: String,
    child: Option<Child>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Service {
    /// Starts `full_system` (debug, see [`full_system`]) with `args` in
    /// `dir` at log level `info`, logging to `dir/<name>.log`; `env` is
    /// added to the child's environment.
    ///
    /// # Panics
    ///
    /// When it cannot start.
    pub fn start(name: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Service {
        Self::spawn(full_system(), name, dir, args, env, "info")
            .unwrap_or_else(|e| panic!("cannot start full_system: {e}"))
    }

    /// Starts `binary` with `args` in `dir`, logging at `log_level`
    /// (`RUST_LOG`) in human format to `dir/<name>.log`. Of the caller's
    /// environment no `WDS_*` variable reaches the child: a setting in the
    /// shell must not change what a test or a benchmark runs; `env` adds
    /// what the child should have.
    ///
    /// # Errors
    ///
    /// When the log file cannot be made or the process cannot start.
    pub fn spawn<S: AsRef<OsStr>>(
        binary: &Path,
        name: &str,
        dir: &Path,
        args: &[S],
        env: &[(&str, &str)],
        log_level: &str,
    ) -> std::io::Result<Service> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let err = file.try_clone()?;
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .env("RUST_LOG", log_level)
            // Human logs, so `address` can read them whatever the caller's shell says.
            .env("WDS_LOG_FORMAT", "human");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WDS_") && key != "WDS_LOG_FORMAT" {
                cmd.env_remove(&key);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", binary.display())))?;
        Ok(Service {
            name: name.into(),
            child: Some(child),
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends a signal (`"TERM"`, `"KILL"`, `"INT"`, `"STOP"`, `"CONT"`) with
    /// kill(1). Panics when it cannot be delivered (the process is gone):
    /// a fault test whose fault never happened must not pass.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "could not send SIG{signal} to {} (pid {}): {status:?}\n{}",
            self.name,
            self.pid(),
            self.log_text()
        );
    }

    /// `kill -9` and waits for the process to die of it. Panics when it had
    /// already exited, or exited some other way: the kill must really have
    /// happened to a running process.
    pub fn kill_9(&mut self) {
        if let Some(status) = self.wait(Duration::ZERO) {
            panic!(
                "{} had already exited ({status}) before the kill:\n{}",
                self.name,
                self.log_text()
            );
        }
        self.signal("KILL");
        let status = self
            .wait(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("{} survived SIGKILL for 10 s", self.name));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "{} did not die of SIGKILL: {status}",
            self.name
        );
    }

    /// Waits until a line of its log contains `needle`, and returns that
    /// line. Panics with the log when the process exits first or `timeout`
    /// passes.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log_text();
            if let Some(line) = text.lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            if let Some(status) = self.wait(Duration::ZERO) {
                panic!(
                    "{} exited ({status}) before logging {needle:?}:\n{text}",
                    self.name
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not log {needle:?} within {timeout:?}:\n{text}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address it bound, read from its log: the value of `field` (e.g.
    /// `api`, `addr`) on the first line containing `event` (e.g.
    /// `"initiator running"`, `"notifier listening"`). Waits up to 120 s
    /// (the first start may be slow on a loaded machine).
    pub fn address(&mut self, event: &str, field: &str) -> String {
        let line = self.wait_for_line(event, Duration::from_secs(120));
        field_value(&line, field)
            .unwrap_or_else(|| panic!("{}: no `{field}=` on the line {line:?}", self.name))
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL now, and reap the process.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its log so far, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails with the end of its log when it has exited.
    ///
    /// # Errors
    ///
    /// When it has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        let Some(status) = self.wait(Duration::ZERO) else {
            return Ok(());
        };
        let log = self.log_text();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(format!(
            "{} exited ({status}):\n{}",
            self.name,
            tail.join("\n")
        ))
    }

    /// Its peak resident set (`VmHWM`), in bytes, while it runs.
    pub fn peak_rss(&self) -> Option<u64> {
        status_kb(&self.pid().to_string(), "VmHWM:").map(|kb| kb * 1024)
    }

    /// Waits until `GET http://addr/healthz` answers 200, at most 30 s.
    ///
    /// # Errors
    ///
    /// When it exits first, or does not answer in time.
    pub async fn wait_healthy(&mut self, addr: SocketAddr) -> Result<(), String> {
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
                return Err(format!("{} did not answer on {url} within 30 s", self.name));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM (a worker finishes what is on the wire), then SIGKILL when
    /// it has not exited after 10 s.
    pub async fn stop(mut self) {
        if self.wait(Duration::ZERO).is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let give_up = Instant::now() + Duration::from_secs(10);
        while Instant::now() < give_up {
            if self.wait(Duration::ZERO).is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
    }
}

/// A `kB` field (e.g. `VmHWM:`, `VmRSS:`) of `/proc/<pid>/status`, where
/// `pid` may be `self`.
pub fn status_kb(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of `field=` on a human log line (tracing's `key=value` format,
/// with ANSI colour codes stripped), e.g. `127.0.0.1:40123` for `addr`.
pub fn field_value(line: &str, field: &str) -> Option<String> {
    let plain = strip_ansi(line);
    let prefix = format!("{field}=");
    plain
        .split_whitespace()
        .find_map(|word| word.strip_prefix(prefix.as_str()))
        .map(|v| v.trim_matches(|c| c == '"' || c == ',').to_string())
        .map(|v| match v.strip_prefix("Some(") {
            Some(inner) => inner.trim_end_matches(')').to_string(),
            None => v,
        })
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ … final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Polls `f` every 50 ms until it answers; `None` once `timeout` has passed
/// without an answer (the caller fails, with what it knows).
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
