//! The workers seen, in Redis: `{prefix}:workers` (hash: worker id → last
//! beat as JSON) and `{prefix}:workers:seen` (zset: worker id by the
//! server time of its last beat). Each call drops the workers not heard
//! from for the retention in the same script, so the keys hold the live
//! workers and those of the last minutes, never every worker that ran.

use std::sync::LazyLock;

use async_trait::async_trait;
use wds_core::backend::{WorkerBeat, WorkerRegistry, WorkerSeen};
use wds_core::{Error, Result};

use crate::backend::RedisBackend;
use crate::codec;
use crate::scripts::Lua;

/// Shared by both scripts: the keys, server time, and the pruning.
macro_rules! workers_prelude {
    () => {
        r#"
local H = KEYS[1] .. ':workers'
local Z = KEYS[1] .. ':workers:seen'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Forget the workers whose last beat is older than the retention (ARGV[1], ms).
local oldest = now - tonumber(ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', Z, '-inf', '(' .. oldest)
for i = 1, #gone, 1000 do
  local j = math.min(i + 999, #gone)
  redis.call('HDEL', H, unpack(gone, i, j))
end
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', Z, '-inf', '(' .. oldest) end
"#
    };
}

/// Stores a worker's beat. KEYS[1]: the tag. ARGV: 1 retention (ms),
/// 2 worker id, 3 beat JSON. Returns the server time it was stored at.
const WORKER_BEAT: &str = concat!(
    workers_prelude!(),
    r#"
redis.call('HSET', H, ARGV[2], ARGV[3])
redis.call('ZADD', Z, now, ARGV[2])
return now
"#
);

/// Every worker within the retention. KEYS[1]: the tag. ARGV: 1
/// retention (ms). Returns a flat list of id, seen_ms, beat JSON.
const WORKERS: &str = concat!(
    workers_prelude!(),
    r#"
local ids = redis.call('ZRANGE', Z, 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #ids, 2 do
  local beat = redis.call('HGET', H, ids[i])
  if beat then
    out[#out + 1] = ids[i]
    out[#out + 1] = ids[i + 1]
    out[#out + 1] = beat
  end
end
return out
"#
);

static BEAT: LazyLock<Lua> = LazyLock::new(|| Lua::new(WORKER_BEAT));
static LIST: LazyLock<Lua> = LazyLock::new(|| Lua::new(WORKERS));

impl RedisBackend {
    fn worker_retention_ms(&self) -> u64 {
        u64::try_from(self.inner.worker_retention.as_millis()).unwrap_or(u64::MAX)
    }
}

#[async_trait]
impl WorkerRegistry for RedisBackend {
    async fn beat(&self, beat: &WorkerBeat) -> Result<()> {
        let op = "worker beat";
        let json = codec::json(op, beat)?;
        let mut invocation = self.invocation(&BEAT);
        invocation
            .arg(self.worker_retention_ms())
            .arg(&beat.worker)
            .arg(json);
        self.run(op, &invocation).await?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerSeen>> {
        let op = "workers";
        let mut invocation = self.invocation(&LIST);
        invocation.arg(self.worker_retention_ms());
        let reply = self.run(op, &invocation).await?;
        let items = codec::array(op, &reply)?;
        items
            .chunks(3)
            .map(|entry| {
                let [id, seen, beat] = entry else {
                    return Err(codec::unexpected(op, &reply));
                };
                let id = codec::string(op, id)?;
                let seen_ms = codec::uint(op, seen)?;
                let beat: WorkerBeat =
                    serde_json::from_slice(codec::bytes(op, beat)?).map_err(|e| {
                        Error::Corrupt {
                            key: format!("{}:workers {id:?}", self.key_prefix()),
                            detail: e.to_string(),
                        }
                    })?;
                Ok(WorkerSeen::new(beat, seen_ms))
            })
            .collect()
    }
}
