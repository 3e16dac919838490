//! What Redis reports: command counts (`INFO commandstats`) and memory.

use std::collections::BTreeMap;

use wds_redis::redis;

use crate::Fallible;

/// An admin connection to the benchmark's redis-server.
pub(crate) struct RedisAdmin {
    connection: redis::aio::MultiplexedConnection,
}

/// Commands Redis executed since the last reset, split by who sent them.
#[derive(Debug, Default)]
pub(crate) struct Commands {
    /// Sent by clients: one network round trip each (`EVALSHA` for every
    /// backend call, plus connection set-up).
    pub(crate) round_trips: u64,
    /// Every command executed, including those the Lua scripts ran.
    pub(crate) all: u64,
    /// By name, for `--verbose`.
    pub(crate) by_name: BTreeMap<String, u64>,
}

/// Commands a client sends itself; everything else in `commandstats` ran
/// inside a script (the backend sends nothing but scripts).
const CLIENT_COMMANDS: &[&str] = &["evalsha", "eval", "ping", "select", "hello", "auth"];

impl RedisAdmin {
    pub(crate) async fn connect(url: &str) -> Fallible<Self> {
        let client = redis::Client::open(url)?;
        Ok(RedisAdmin {
            connection: client.get_multiplexed_async_connection().await?,
        })
    }

    /// `CONFIG RESETSTAT`: counts start again from zero.
    pub(crate) async fn reset_stats(&mut self) -> Fallible<()> {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async::<()>(&mut self.connection)
            .await?;
        Ok(())
    }

    /// `INFO commandstats`, without the benchmark's own `INFO` and `CONFIG`.
    pub(crate) async fn commands(&mut self) -> Fallible<Commands> {
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
    pub(crate) async fn memory(&mut self, field: &str) -> Fallible<u64> {
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
