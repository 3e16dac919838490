//! [`RedisServer`]: a private `redis-server` for tests and benchmarks.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer `PING` after it starts (a restart
/// with a large append-only file replays it first).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `redis-server` of its own, on a [`ReservedPort`] of 127.0.0.1 (kept
/// across restarts), with its data in a temporary directory; killed when
/// dropped.
///
/// Tests use it to get an empty Redis that they may also stop, kill and
/// restart. The binary is `redis-server` from `PATH`, or the one named by
/// the `WDS_REDIS_SERVER` environment variable.
///
/// ```no_run
/// use wds_redis::RedisServer;
///
/// # async fn demo() -> wds_core::Result<()> {
/// let mut server = RedisServer::builder().append_only(true).start();
/// let backend = wds_redis::RedisBackend::builder(server.url()).connect().await?;
/// server.stop(); // SHUTDOWN: the append-only file has every write
/// server.restart(); // same port, same data
/// # let _ = backend; Ok(()) }
/// ```
///
/// # Panics
///
/// Starting panics when `redis-server` is missing (saying how to install
/// it) or does not answer in time (showing its log): a test that needs
/// Redis fails loudly rather than skipping.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// Holds `port` for this server until it is dropped, restarts included.
    reservation: Option<ReservedPort>,
    dir: tempfile::TempDir,
    append_only: bool,
    /// A node of a Redis Cluster: its cluster bus port, reserved like
    /// `port` (not `port + 10000`, which may lie in the ephemeral range).
    bus: Option<ReservedPort>,
}

/// Options of a [`RedisServer`]; made by [`RedisServer::builder`].
#[derive(Debug, Default, Clone)]
pub struct RedisServerBuilder {
    append_only: bool,
    cluster_node: bool,
}

impl RedisServerBuilder {
    /// Persists every write before answering (`appendonly yes`,
    /// `appendfsync always`), so a [`RedisServer::stop`] or
    /// [`RedisServer::kill`] followed by [`RedisServer::restart`] loses
    /// nothing that was acknowledged. Off by default (nothing is persisted).
    pub fn append_only(mut self, on: bool) -> Self {
        self.append_only = on;
        self
    }

    /// A node of a Redis Cluster (`cluster-enabled yes`, a node timeout of
    /// one second), not yet part of one: see [`RedisCluster`].
    pub(crate) fn cluster_node(mut self) -> Self {
        self.cluster_node = true;
        self
    }

    /// Starts the server and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// When `redis-server` is missing, or does not start.
    pub fn start(self) -> RedisServer {
        let dir = match tempfile::Builder::new().prefix("wds-redis-").tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("cannot create a temporary directory for redis-server: {e}"),
        };
        let mut server = RedisServer {
            child: None,
            port: 0,
            reservation: None,
            dir,
            append_only: self.append_only,
            bus: self.cluster_node.then(reserve_port),
        };
        let mut last_error = String::new();
        // A reserved port is taken by no other test server, but a process
        // outside the tests may bind it first: then try another.
        for _ in 0..5 {
            let reservation = reserve_port();
            server.port = reservation.port();
            server.reservation = Some(reservation);
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => {
                    last_error = e;
                    server.kill();
                }
            }
        }
        panic!("redis-server did not start: {last_error}");
    }
}

impl RedisServer {
    /// Starts a server without persistence (see [`RedisServer::builder`]).
    ///
    /// # Panics
    ///
    /// When `redis-server` is missing, or does not start.
    pub fn start() -> Self {
        RedisServerBuilder::default().start()
    }

    /// Options: persistence.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding its data and `redis.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id, while it runs (to pause it with `SIGSTOP`, say).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Stops the server cleanly (`SHUTDOWN`; with persistence, everything
    /// acknowledged is on disk), falling back to a kill after 10 s.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        let shutdown = if self.append_only {
            "SHUTDOWN"
        } else {
            "SHUTDOWN NOSAVE"
        };
        // The connection closes without a reply when it works.
        let _ = command(self.port, shutdown);
        let give_up = Instant::now() + Duration::from_secs(10);
        while Instant::now() < give_up {
            match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(_))) | None | Some(Err(_)) => {
                    self.child = None;
                    return;
                }
                Some(Ok(None)) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        self.kill();
    }

    /// Kills the server at once (`SIGKILL`), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (so, with
    /// persistence, with the same data), stopping it first if it runs.
    ///
    /// # Panics
    ///
    /// When it does not start again.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            panic!("redis-server did not restart: {e}");
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let binary = std::env::var_os("WDS_REDIS_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("redis-server"));
        let dir = self.dir.path();
        let log = dir.join("redis.log");
        let mut cmd = Command::new(&binary);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args([
                "--bind",
                "127.0.0.1",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
            ])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .args(["--save", ""]);
        if let Some(bus) = &self.bus {
            cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .arg("--cluster-config-file")
                .arg(dir.join("nodes.conf"))
                .arg("--cluster-port")
                .arg(bus.port().to_string());
        }
        if self.append_only {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = match cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`{}` was not found: the Redis tests need a redis-server binary. Install it \
                 with `apt-get install redis-server` (or `brew install redis`), or point \
                 WDS_REDIS_SERVER at one.",
                binary.display()
            ),
            Err(e) => return Err(format!("cannot run {}: {e}", binary.display())),
        };
        self.child = Some(child);
        let give_up = Instant::now() + START_TIMEOUT;
        loop {
            // Ready (done loading its data), and ours, not another test's
            // server that took the port first.
            let ready = command(self.port, "PING").is_ok_and(|r| r.starts_with("+PONG"));
            if let Some(pid) = ready.then(|| server_pid(self.port).ok()).flatten() {
                let ours = self.child.as_ref().map(Child::id);
                if Some(pid) == ours {
                    return Ok(());
                }
                if !self.is_running() {
                    self.child = None;
                    return Err(format!(
                        "port {} belongs to another redis-server (pid {pid})",
                        self.port
                    ));
                }
            }
            if !self.is_running() {
                self.child = None;
                return Err(format!("it exited; its log:\n{}", tail(&log)));
            }
            if Instant::now() > give_up {
                return Err(format!(
                    "no answer to PING within {START_TIMEOUT:?}; its log:\n{}",
                    tail(&log)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port of 127.0.0.1 that no other test server takes while this
/// value lives, for a server that must bind the same port again after a
/// restart (a `redis-server`, which cannot report a port 0 it bound, or a
/// notifier restarted where its workers send).
///
/// Two rules make it safe while tests run in parallel, in one process or
/// many:
/// - the port lies below the kernel's ephemeral range
///   (`/proc/sys/net/ipv4/ip_local_port_range`, 32768-60999 by default),
///   where `bind(port 0)` never lands, and every other server of the tests
///   binds port 0, so none of them can take it while the server is down;
/// - servers that need a fixed port take it through here, which holds an
///   exclusive lock on `<temp dir>/wds-test-ports/<port>.lock` for as long
///   as the reservation lives (the kernel drops the lock when a process
///   dies, so a crashed test leaves no port taken).
///
/// A program outside the tests could still bind the port while the server
/// is down; the reservation checks that the port is free when it is made,
/// and a restart that finds it taken fails saying so.
#[derive(Debug)]
pub struct ReservedPort {
    port: u16,
    _lock: File,
}

impl ReservedPort {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Reserves a free port (see [`ReservedPort`]).
///
/// # Panics
///
/// When no port could be reserved (every candidate locked or bound).
pub fn reserve_port() -> ReservedPort {
    const LOWEST: u32 = 10_000;
    let below = ephemeral_low().max(LOWEST + 1_000);
    let span = below - LOWEST;
    let dir = std::env::temp_dir().join("wds-test-ports");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    // Start somewhere different in each process, then walk the range.
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    let mut last_error = String::new();
    for i in 0..span.min(2_000) {
        let port = (LOWEST + (seed.wrapping_add(i.wrapping_mul(7_919))) % span) as u16;
        let path = dir.join(format!("{port}.lock"));
        let lock = match OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) => {
                last_error = format!("{}: {e}", path.display());
                continue;
            }
        };
        if lock.try_lock().is_err() {
            continue; // another test server holds it
        }
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(_) => return ReservedPort { port, _lock: lock },
            Err(e) => last_error = format!("port {port}: {e}"),
        }
    }
    panic!("no port could be reserved for a test server (last: {last_error})");
}

/// The lowest port of the kernel's ephemeral range (where `bind(port 0)`
/// picks), 32768 where it cannot be read (macOS uses 49152 and up).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Sends one inline command and returns the first reply line.
fn command(port: u16, line: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(format!("{line}\r\n").as_bytes())?;
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The process id of the server answering on `port` (`INFO server`).
fn server_pid(port: u16) -> std::io::Result<u32> {
    let mut stream = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(b"INFO server\r\n")?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !reply.windows(11).any(|w| w == b"process_id:") || !reply.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&reply)
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no process_id in INFO"))
}

/// The end of a log file, for panic messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A Redis Cluster of private [`RedisServer`]s on 127.0.0.1: masters, each
/// with its replicas, made with `redis-cli --cluster create` and ready
/// (every slot served, every replica in sync) when [`RedisCluster::start`]
/// returns; every node killed when dropped.
///
/// ```no_run
/// use wds_redis::RedisCluster;
///
/// # async fn demo() -> wds_core::Result<()> {
/// let mut cluster = RedisCluster::start(3, 1);
/// let backend = wds_redis::RedisBackend::builder(cluster.url()).connect().await?;
/// let port = cluster.kill_master_of("{wds}"); // its replica takes over
/// cluster.wait_for_master_of("{wds}", port);
/// # let _ = backend; Ok(()) }
/// ```
///
/// # Panics
///
/// As [`RedisServer`], and when `redis-cli` is missing or the cluster does
/// not form in time.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// How long a cluster may take to form, or to fail over.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

impl RedisCluster {
    /// Starts `masters` masters with `replicas` replicas each.
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| RedisServerBuilder::default().cluster_node().start())
            .collect();
        let cluster = RedisCluster { nodes };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null());
        match create.output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!(
                "cannot run redis-cli (it comes with redis-server: apt-get install \
                 redis-server): {e}"
            ),
        }
        let give_up = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let ready = cluster.nodes.iter().all(|n| {
                let info = cli(n.port, &["CLUSTER", "INFO"]);
                let repl = cli(n.port, &["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && (repl.contains("role:master") || repl.contains("master_link_status:up"))
            });
            if ready {
                return cluster;
            }
            if Instant::now() > give_up {
                panic!(
                    "the cluster did not become ready within {CLUSTER_TIMEOUT:?}: {}",
                    cli(cluster.nodes[0].port, &["CLUSTER", "NODES"])
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis+cluster://127.0.0.1:<port>,…` with every node as a seed.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The nodes, masters and replicas, in the order they started.
    pub fn nodes(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The port of the live master that serves `key`'s slot now, as a live
    /// node sees it; `None` while no live master serves it.
    pub fn master_of(&mut self, key: &str) -> Option<u16> {
        let live: Vec<u16> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.is_running().then_some(n.port))
            .collect();
        let asker = *live.first()?;
        let slot: u16 = cli(asker, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .ok()?;
        // `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slots…>`
        cli(asker, &["CLUSTER", "NODES"]).lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.contains("master") || flags.contains("fail") {
                return None;
            }
            let port: u16 = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
            let serves = fields.iter().skip(8).any(|range| {
                let mut ends = range.split('-');
                let (Some(lo), hi) = (ends.next(), ends.next()) else {
                    return false;
                };
                let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.unwrap_or(lo).parse::<u16>()) else {
                    return false;
                };
                (lo..=hi).contains(&slot)
            });
            (serves && live.contains(&port)).then_some(port)
        })
    }

    /// The ports of the live replicas of the master serving `key`'s slot.
    pub fn replicas_of(&mut self, key: &str) -> Vec<u16> {
        let Some(master) = self.master_of(key) else {
            return Vec::new();
        };
        let nodes = cli(master, &["CLUSTER", "NODES"]);
        let id = nodes
            .lines()
            .find(|l| l.contains("myself"))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_default()
            .to_string();
        nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let replica = fields.get(2)?.contains("slave") && *fields.get(3)? == id;
                let port: u16 = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                replica.then_some(port)
            })
            .collect()
    }

    /// Kills (`SIGKILL`) the master serving `key`'s slot; returns its port.
    pub fn kill_master_of(&mut self, key: &str) -> u16 {
        let Some(port) = self.master_of(key) else {
            panic!("no live master serves {key:?}");
        };
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            node.kill();
        }
        port
    }

    /// Waits until a live master other than `old` serves `key`'s slot (a
    /// replica took over) and the cluster is `ok` again; returns its port.
    pub fn wait_for_master_of(&mut self, key: &str, old: u16) -> u16 {
        let give_up = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            if let Some(port) = self.master_of(key).filter(|p| *p != old) {
                if cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                    return port;
                }
            }
            if Instant::now() > give_up {
                panic!("no replica took over {key:?} from port {old} within {CLUSTER_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `redis-cli -p <port> <args…>`'s output ("" when it cannot run).
fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
