//! Where a server of the tests or benchmarks listens.
//!
//! A server that can report the port it bound binds [`ANY_PORT`] (port 0:
//! the kernel picks a free one, so no two tests race for it) and the test
//! reads the address from its log. A server that must come back on the same
//! port after a restart, or that is told its address before it starts (a
//! `redis-server`, a restarted notifier, a process the benchmark passes
//! `--api-listen`), binds a [`ReservedPort`], which no other test server
//! takes while it lives.
//!
//! [`ReservedPort`] and [`reserve_port`] live in `wds-redis` (feature
//! `test-server`), whose own tests restart a `redis-server` on its port;
//! they are re-exported here so that everything else finds them in one place.

pub use wds_redis::{reserve_port, ReservedPort};

/// The listen address for a child process to bind: port 0, so the kernel
/// picks a free port and no two tests can race for one.
pub const ANY_PORT: &str = "127.0.0.1:0";

/// `127.0.0.1:<port>` of a reservation, for a `--…-listen` flag.
pub fn loopback(port: &ReservedPort) -> std::net::SocketAddr {
    (std::net::Ipv4Addr::LOCALHOST, port.port()).into()
}
