//! Real processes for end-to-end tests: the `full_system` example binary,
//! started with flags, stopped with a signal or killed with SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The `full_system` binary, built (debug profile) on first use.
pub fn full_system() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("Cargo.toml");
        let out = Command::new(&cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "wds-examples",
                "--example",
                "full_system",
                "--manifest-path",
            ])
            .arg(&manifest)
            .output()
            .expect("cannot run cargo to build the full_system example");
        assert!(
            out.status.success(),
            "building full_system failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join("target")
            });
        let bin = target.join("debug").join("examples").join("full_system");
        assert!(bin.exists(), "no binary at {}", bin.display());
        bin
    })
}

/// The signing secret the tests' deployments share (`WDS_SECRETS`): a
/// notifier refuses to start without one.
pub const TEST_SECRET: &str = "whsec_dGVzdC1zZWNyZXQtb2YtdGhlLXdkcy10ZXN0cw==";

/// The listen address for a child process to bind: port 0, so the kernel
/// picks a free port and no two tests can race for one.
pub const ANY_PORT: &str = "127.0.0.1:0";

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
    /// Starts `full_system` with `args` in `dir`, logging to `dir/<name>.log`.
    pub fn start(name: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Service {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let err = file.try_clone().expect("log file");
        let mut cmd = Command::new(full_system());
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .env("RUST_LOG", "info")
            // Human logs, so `address` can read them whatever the caller's shell says.
            .env("WDS_LOG_FORMAT", "human");
        // A setting inherited from the caller's shell must not change what a
        // test runs: only the variables the test passes reach the child.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WDS_") && key != "WDS_LOG_FORMAT" {
                cmd.env_remove(&key);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("cannot start full_system");
        Service {
            name: name.into(),
            child: Some(child),
            log,
        }
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

/// `GET http://{addr}{path}` over a plain socket: the status and the body,
/// or `None` when nothing answers. (Enough HTTP/1.1 for the tests' needs:
/// `Connection: close`, body to the end of the stream.)
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    request(addr, "GET", path, "")
}

fn request(addr: &str, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let len = body.len();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n{body}"
    )
    .ok()?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

/// `POST http://{addr}{path}` with a JSON `body`, like [`http_get`].
pub fn http_post(addr: &str, path: &str, body: &str) -> Option<(u16, String)> {
    request(addr, "POST", path, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
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
