//! The Lua scripts: one per trait call, so each call is one round trip
//! (`EVALSHA`, one `EVAL` on `NOSCRIPT`) and each call's writes are
//! atomic. Each is a file of `wds-redis/lua/` (the functions several share
//! in `lua/lib/`, the key names and helpers in `lua/prelude.lua`),
//! included at build time; its first line, `--- ARGV: …`, names its
//! arguments, which the struct of `crate::args` for it writes in that
//! order (a test holds the two together).
//!
//! # Layout
//!
//! `KEYS[1]` is the hash tag of one key shard, `{prefix}` for shard 0 and
//! `{prefix:shard:N}` for the others; every key a script touches is
//! `KEYS[1]:…`, so each call runs on one slot and the scripts are valid on
//! Redis Cluster. Each shard is a queue of its own for the jobs whose ids
//! hash to it (`RedisBackend::shard_of`); the Rust side routes each call to
//! its job's shard, tags the ids of shard N's batches and leases with `@N`,
//! and gathers listings over the shards. Shard 0 also holds `:shards` (the
//! deployment's shard count) and, with several shards, the `:jobno`
//! counter that orders claims across them.
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `:claims` | hash | input identity → job id |
//! | `:jobs` | zset | job id by claim order (`:jobno` counter: this shard's, or shard 0's with several) |
//! | `:job:<job>` | hash | `meta` json, checkpoint (`seq byte line records done`), counts (`cancelled` included), `finished_ms`, `failed` (the reason, once reading failed), `paused`, `halted` (1 once cancelled) |
//! | `:out:<job>:<chunk>` | list | lines `128·chunk …`, each element `<line>=<outcome>\n…` (the last entry of a line wins; empty means pending again); deleted `retention` after the job is done, by the leases that follow (`:expiring`) |
//! | `:expiring` | zset | finished job by the time its outcome chunks go; the job's `swept` field is the next chunk to delete |
//! | `:rejects:<job>` | list | `Reject` json in line order, the job's first `detail` (1,000 by default) only; expires with `:out:` |
//! | `:ready:<job>` | list | the job's ready batch ids, in lease order (each batch holds one job's messages) |
//! | `:turns` | list | the jobs whose ready batches may be leased (some ready, neither paused nor cancelled), in turn: the lease takes one batch of the first and moves it to the back |
//! | `:ready` | list | batch ids written before per-job lists (leased first) |
//! | `:b:<batch>` | hash | `p` payload, `n` messages, `l` lease id, `d` deadline, `s` sending (sticky) |
//! | `:leases` | zset | batch id by lease deadline |
//! | `:scheduled` | zset | message (wire form) by due time |
//! | `:dead:<job>` | list | dead entries; `:deadjobs` (set) lists the jobs that have some |
//! | `:counts` | hash | `ready`, `leased`, `dead` message counts |
//! | `:next` | string | counter for lease and batch ids |
//! | `:workers` | hash | worker id → its last beat (JSON); scripts in `workers.rs` |
//! | `:workers:seen` | zset | worker id by the server time of its last beat |
//!
//! A message's wire form is the JSON array
//! `[job, line, userId, alertMessage, attempts, first_attempt_ms]`, and a
//! batch payload is a JSON array of those, so the scripts can cut and join
//! batches with `table.concat` without decoding anything.

use std::sync::LazyLock;

use deadpool_redis::redis::{cmd, Cmd, Script, ToRedisArgs};

/// `lua/claim.lua` (its ARGV and reply are described there).
const CLAIM: &str = concat!(
    include_str!("../lua/prelude.lua"),
    include_str!("../lua/claim.lua"),
);

/// `lua/push_all.lua` (its ARGV and reply are described there).
const PUSH_ALL: &str = concat!(
    include_str!("../lua/prelude.lua"),
    include_str!("../lua/lib/push.lua"),
    include_str!("../lua/push_all.lua"),
);

/// `lua/lease.lua` (its ARGV and reply are described there).
const LEASE: &str = concat!(
    include_str!("../lua/prelude.lua"),
    include_str!("../lua/lib/lease.lua"),
    include_str!("../lua/lease.lua"),
);

/// `lua/mark_sending.lua` (its ARGV and reply are described there).
const MARK_SENDING: &str = concat!(
    include_str!("../lua/prelude.lua"),
    include_str!("../lua/mark_sending.lua"),
);

/// `lua/extend.lua` (its ARGV and reply are described there).
const EXTEND: &str = concat!(
    include_str!("../lua/prelude.lua"),
    include_str!("../lua/extend.lua"),
);

/// `lua/release.lua` (its ARGV and reply are described there).
const RELEASE: &str = concat!(
    include_str!("../lua/prelude.lua"),
    include_str!("../lua/release.lua"),
);

/// `lua/settle_and_continue.lua` (its ARGV and reply are described there).
const SETTLE_AND_CONTINUE: &str = concat!(
    include_str!("../lua/prelude.lua"),
    include_str!("../lua/lib/settle.lua"),
    include_str!("../lua/lib/lease.lua"),
    include_str!("../lua/settle_and_continue.lua"),
);

/// `lua/replay.lua` (its ARGV and reply are described there).
const REPLAY: &str = concat!(
    include_str!("../lua/prelude.lua"),
    include_str!("../lua/replay.lua"),
);

/// `lua/dead_letters.lua` (its ARGV and reply are described there).
const DEAD_LETTERS: &str = concat!(
    include_str!("../lua/prelude.lua"),
    include_str!("../lua/dead_letters.lua"),
);

/// `lua/stats.lua` (its ARGV and reply are described there).
const STATS: &str = concat!(
    include_str!("../lua/prelude.lua"),
    include_str!("../lua/stats.lua"),
);

/// `lua/reports.lua` (its ARGV and reply are described there).
const REPORTS: &str = concat!(
    include_str!("../lua/prelude.lua"),
    include_str!("../lua/reports.lua"),
);

/// `lua/report.lua` (its ARGV and reply are described there).
const REPORT: &str = concat!(
    include_str!("../lua/prelude.lua"),
    include_str!("../lua/report.lua"),
);

/// `lua/control.lua` (its ARGV and reply are described there).
const CONTROL: &str = concat!(
    include_str!("../lua/prelude.lua"),
    include_str!("../lua/control.lua"),
);

/// `lua/fail.lua` (its ARGV and reply are described there).
const FAIL: &str = concat!(
    include_str!("../lua/prelude.lua"),
    include_str!("../lua/fail.lua"),
);

/// `lua/checkpoint.lua` (its ARGV and reply are described there).
const CHECKPOINT: &str = concat!(
    include_str!("../lua/prelude.lua"),
    include_str!("../lua/checkpoint.lua"),
);

/// `lua/outcome.lua` (its ARGV and reply are described there).
const OUTCOME: &str = concat!(
    include_str!("../lua/prelude.lua"),
    include_str!("../lua/outcome.lua"),
);

/// `lua/rejects.lua` (its ARGV and reply are described there).
const REJECTS: &str = concat!(
    include_str!("../lua/prelude.lua"),
    include_str!("../lua/rejects.lua"),
);

/// `lua/gcra_reserve.lua` (its KEYS, ARGV and reply are described there).
const GCRA_RESERVE: &str = include_str!("../lua/gcra_reserve.lua");

/// `lua/gcra_back_off.lua` (its KEYS, ARGV and reply are described there).
const GCRA_BACK_OFF: &str = include_str!("../lua/gcra_back_off.lua");

/// `lua/gcra_pause.lua` (its KEYS, ARGV and reply are described there).
const GCRA_PAUSE: &str = include_str!("../lua/gcra_pause.lua");

/// `lua/circuit_swap.lua` (its KEYS, ARGV and reply are described there).
const CIRCUIT_SWAP: &str = include_str!("../lua/circuit_swap.lua");

/// `lua/worker_beat.lua` (its ARGV and reply are described there).
const WORKER_BEAT: &str = concat!(
    include_str!("../lua/workers_prelude.lua"),
    include_str!("../lua/worker_beat.lua"),
);

/// `lua/workers.lua` (its ARGV and reply are described there).
const WORKERS: &str = concat!(
    include_str!("../lua/workers_prelude.lua"),
    include_str!("../lua/workers.lua"),
);

/// A script of ours: its code and its SHA-1, which `EVALSHA` names it by.
#[derive(Debug)]
pub(crate) struct Lua {
    pub(crate) code: &'static str,
    hash: String,
}

impl Lua {
    pub(crate) fn new(code: &'static str) -> Self {
        Lua {
            code,
            hash: Script::new(code).get_hash().to_owned(),
        }
    }

    /// An `EVALSHA` of this script with `keys`, to which arguments are
    /// added. Built in one buffer: redis-rs's `ScriptInvocation` keeps each
    /// argument in a vector of its own and copies them all again to send
    /// them, which for a batch payload shows.
    pub(crate) fn invocation<K: ToRedisArgs>(&'static self, keys: &[K]) -> Invocation {
        let mut call = cmd("EVALSHA");
        call.arg(&self.hash).arg(keys.len());
        for key in keys {
            call.arg(key);
        }
        Invocation { lua: self, call }
    }
}

/// A script call being built; see [`Lua::invocation`].
#[derive(Debug)]
pub(crate) struct Invocation {
    pub(crate) lua: &'static Lua,
    pub(crate) call: Cmd,
}

impl Invocation {
    /// Adds an argument (`ARGV[n]`).
    pub(crate) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.call.arg(arg);
        self
    }
}

/// Every script, compiled (hashed) once per process.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) claim: Lua,
    pub(crate) push_all: Lua,
    pub(crate) lease: Lua,
    pub(crate) mark_sending: Lua,
    pub(crate) extend: Lua,
    pub(crate) release: Lua,
    pub(crate) settle_and_continue: Lua,
    pub(crate) replay: Lua,
    pub(crate) dead_letters: Lua,
    pub(crate) stats: Lua,
    pub(crate) report: Lua,
    pub(crate) checkpoint: Lua,
    pub(crate) fail: Lua,
    pub(crate) control: Lua,
    pub(crate) reports: Lua,
    pub(crate) outcome: Lua,
    pub(crate) rejects: Lua,
    pub(crate) gcra_reserve: Lua,
    pub(crate) gcra_back_off: Lua,
    pub(crate) gcra_pause: Lua,
    pub(crate) circuit_swap: Lua,
    pub(crate) worker_beat: Lua,
    pub(crate) workers: Lua,
}

/// The scripts, shared by every backend of the process.
pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    claim: Lua::new(CLAIM),
    push_all: Lua::new(PUSH_ALL),
    lease: Lua::new(LEASE),
    mark_sending: Lua::new(MARK_SENDING),
    extend: Lua::new(EXTEND),
    release: Lua::new(RELEASE),
    settle_and_continue: Lua::new(SETTLE_AND_CONTINUE),
    replay: Lua::new(REPLAY),
    dead_letters: Lua::new(DEAD_LETTERS),
    stats: Lua::new(STATS),
    report: Lua::new(REPORT),
    checkpoint: Lua::new(CHECKPOINT),
    fail: Lua::new(FAIL),
    control: Lua::new(CONTROL),
    reports: Lua::new(REPORTS),
    outcome: Lua::new(OUTCOME),
    rejects: Lua::new(REJECTS),
    gcra_reserve: Lua::new(GCRA_RESERVE),
    gcra_back_off: Lua::new(GCRA_BACK_OFF),
    gcra_pause: Lua::new(GCRA_PAUSE),
    circuit_swap: Lua::new(CIRCUIT_SWAP),
    worker_beat: Lua::new(WORKER_BEAT),
    workers: Lua::new(WORKERS),
});
