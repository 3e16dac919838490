//! Redis for tests and benchmarks: a private `redis-server`
//! ([`RedisServer`]) or Redis Cluster ([`RedisCluster`]), from `wds-redis`'s
//! `test-server` feature, re-exported (that crate's own tests restart them,
//! and it cannot depend on this crate),
//! and what a server reports: command counts (`INFO commandstats`) and
//! memory ([`RedisAdmin`]).

use std::collections::BTreeMap;

use wds_redis::redis;
pub use wds_redis::{RedisCluster, RedisServer, RedisServerBuilder};

use crate::BoxError;

type Fallible<T> = Result<T, BoxError>;

/// An admin connection to a redis-server.
#[derive(Debug)]
pub struct RedisAdmin {
    connection: redis::aio::MultiplexedConnection,
}

/// Commands Redis executed since the last reset, split by who sent them.
#[derive(Debug, Default)]
pub struct Commands {
    /// Sent by clients: one network round trip each (`EVALSHA` for every
    /// backend call, plus connection set-up).
    pub round_trips: u64,
    /// Every command executed, including those the Lua scripts ran.
    pub all: u64,
    /// By name, for `--verbose`.
    pub by_name: BTreeMap<String, u64>,
}

/// Commands a client sends itself; everything else in `commandstats` ran
/// inside a script (the backend sends nothing but scripts).
const CLIENT_COMMANDS: &[&str] = &["evalsha", "eval", "ping", "select", "hello", "auth"];

impl RedisAdmin {
    /// Connects to the server at `url`.
    ///
    /// # Errors
    ///
    /// When it does not answer.
    pub async fn connect(url: &str) -> Fallible<Self> {
        let client = redis::Client::open(url)?;
        Ok(RedisAdmin {
            connection: client.get_multiplexed_async_connection().await?,
        })
    }

    /// `CONFIG RESETSTAT`: counts start again from zero.
    ///
    /// # Errors
    ///
    /// Redis's.
    pub async fn reset_stats(&mut self) -> Fallible<()> {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async::<()>(&mut self.connection)
            .await?;
        Ok(())
    }

    /// `INFO commandstats`, without the caller's own `INFO` and `CONFIG`.
    ///
    /// # Errors
    ///
    /// Redis's.
    pub async fn commands(&mut self) -> Fallible<Commands> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.connection)
            .await?;
        let mut commands = Commands::default();
        for line in info.lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let Some(calls) = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if name == "info" || name.starts_with("config") {
                continue;
            }
            let by_client = CLIENT_COMMANDS.contains(&name)
                || name.starts_with("script|")
                || name.starts_with("client|");
            if by_client {
                commands.round_trips += calls;
            }
            commands.all += calls;
            commands.by_name.insert(name.to_string(), calls);
        }
        Ok(commands)
    }

    /// A numeric field of `INFO memory` (e.g. `used_memory_peak`), in bytes.
    ///
    /// # Errors
    ///
    /// Redis's, or when `INFO memory` has no such field.
    pub async fn memory(&mut self, field: &str) -> Fallible<u64> {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut self.connection)
            .await?;
        info.lines()
            .find_map(|l| {
                l.strip_prefix(field)?
                    .strip_prefix(':')?
                    .trim()
                    .parse()
                    .ok()
            })
            .ok_or_else(|| format!("INFO memory has no {field}").into())
    }
}
