//! One typed argument struct per script: the Rust side of each script's
//! `--- ARGV:` line, in the same order, checked against it by a test, so
//! the two files cannot drift apart position by position.

use deadpool_redis::redis::ToRedisArgs;

use crate::codec::Chunks;
use crate::scripts::{Invocation, Lua, SCRIPTS};

/// The arguments of one script.
pub(crate) trait ScriptArgs: Sync {
    /// The script's `--- ARGV:` line (without that prefix): its argument
    /// names in order, `...name` for a repeated tail. Read by the test
    /// that holds the two together.
    #[allow(dead_code)]
    const ARGV: &'static str;
    /// The script they are for.
    fn lua() -> &'static Lua;
    /// Adds them to a call of [`ScriptArgs::lua`].
    fn add_to(&self, call: &mut Invocation);
}

/// Declares argument structs whose fields are the script's arguments, in
/// order.
macro_rules! script_args {
    ($(
        $(#[$doc:meta])*
        $name:ident $(<$lt:lifetime>)? => $script:ident { $($field:ident: $ty:ty),* $(,)? }
    )*) => {$(
        $(#[$doc])*
        #[derive(Debug)]
        pub(crate) struct $name $(<$lt>)? {
            $(pub(crate) $field: $ty,)*
        }

        impl $(<$lt>)? ScriptArgs for $name $(<$lt>)? {
            const ARGV: &'static str = concat!($(stringify!($field), " "),*);

            fn lua() -> &'static Lua {
                &SCRIPTS.$script
            }

            #[allow(unused_variables)] // scripts without arguments
            fn add_to(&self, call: &mut Invocation) {
                $(call.arg(&self.$field);)*
            }
        }
    )*};
}

script_args! {
    /// `lua/claim.lua`.
    Claim<'a> => claim { identity: &'a str, job: &'a str, meta: Vec<u8>, detail_limit: usize, order: String }
    /// `lua/checkpoint.lua`.
    Checkpoint<'a> => checkpoint { job: &'a str }
    /// `lua/report.lua`.
    Report<'a> => report { job: &'a str }
    /// `lua/reports.lua`.
    Reports => reports {}
    /// `lua/fail.lua`.
    Fail<'a> => fail { job: &'a str, reason: &'a str, retention_s: u64 }
    /// `lua/outcome.lua`.
    Outcome<'a> => outcome { job: &'a str, chunk: u64 }
    /// `lua/rejects.lua`.
    Rejects<'a> => rejects { job: &'a str, limit: usize }
    /// `lua/control.lua`.
    Control<'a> => control { action: &'a str, job: &'a str, retention_s: u64 }
    /// `lua/replay.lua`.
    Replay<'a> => replay { job: &'a str, rebatch_size: usize, kind: &'a str }
    /// `lua/lease.lua`.
    LeaseArgs => lease { max_batches: usize, ttl_ms: u64, rebatch_size: usize, max_due: usize }
    /// `lua/mark_sending.lua`.
    MarkSending<'a> => mark_sending { lease: &'a str, batch: &'a str }
    /// `lua/extend.lua`.
    Extend<'a> => extend { lease: &'a str, batch: &'a str, ttl_ms: u64 }
    /// `lua/release.lua`.
    Release<'a> => release { lease: &'a str, batch: &'a str, retention_s: u64 }
    /// `lua/dead_letters.lua`.
    DeadLetters<'a> => dead_letters { job: &'a str, limit: usize }
    /// `lua/stats.lua`.
    Stats => stats {}
    /// `lua/gcra_reserve.lua` (KEYS: the endpoint's hash).
    GcraReserve => gcra_reserve { interval_us: u64, tolerance_us: u64, permits: u64, ahead_us: u64 }
    /// `lua/gcra_back_off.lua` (KEYS: the endpoint's hash).
    GcraBackOff => gcra_back_off { pause_us: u64 }
    /// `lua/gcra_pause.lua` (KEYS: the endpoint's hash).
    GcraPause => gcra_pause {}
    /// `lua/circuit_swap.lua` (KEYS: the endpoint's circuit key).
    CircuitSwap => circuit_swap { expected: String, new: String }
    /// `lua/worker_beat.lua`.
    WorkerBeat<'a> => worker_beat { retention_ms: u64, worker: &'a str, beat: Vec<u8> }
    /// `lua/workers.lua`.
    Workers => workers { retention_ms: u64 }
}

/// A call of the script of `args` with `keys` (for the scripts whose keys
/// are not the deployment's tag: the limiter's and the circuits').
pub(crate) fn keyed<A: ScriptArgs, K: ToRedisArgs>(args: &A, keys: &[K]) -> Invocation {
    let mut invocation = A::lua().invocation(keys);
    args.add_to(&mut invocation);
    invocation
}

/// One push of `lua/push_all.lua` (`lua/lib/push.lua`'s `push()`): its
/// fixed arguments, then `chunk, entries` per outcome chunk, then the
/// rejects' json; preceded on the wire by how many arguments it has.
#[derive(Debug)]
pub(crate) struct PushArgs<'a> {
    pub(crate) job: &'a str,
    pub(crate) seq: u64,
    pub(crate) next_seq: u64,
    pub(crate) byte: u64,
    pub(crate) line: u64,
    pub(crate) records: u64,
    pub(crate) done: u8,
    pub(crate) messages: usize,
    pub(crate) payload: Vec<u8>,
    pub(crate) invalid: u64,
    pub(crate) duplicate: u64,
    pub(crate) retention_s: u64,
    /// The outcome chunks (`chunk, entries` each).
    pub(crate) chunks: Chunks,
    /// Each reject as json.
    pub(crate) rejects: Vec<Vec<u8>>,
}

impl PushArgs<'_> {
    /// The fixed arguments, as `lua/lib/push.lua`'s `--- PUSH ARGV:` line
    /// names them (the chunk count is one of them).
    pub(crate) const FIXED: &'static str = "job seq next_seq byte line records done messages \
                                           payload invalid duplicate retention_s chunks";

    fn add_to(&self, call: &mut Invocation) {
        let fixed = Self::FIXED.split_whitespace().count();
        call.arg(fixed + 2 * self.chunks.count() + self.rejects.len());
        call.arg(self.job)
            .arg(self.seq)
            .arg(self.next_seq)
            .arg(self.byte)
            .arg(self.line)
            .arg(self.records)
            .arg(self.done)
            .arg(self.messages)
            .arg(&self.payload)
            .arg(self.invalid)
            .arg(self.duplicate)
            .arg(self.retention_s)
            .arg(self.chunks.count());
        for (chunk, entries) in self.chunks.iter() {
            call.arg(chunk).arg(entries);
        }
        for reject in &self.rejects {
            call.arg(reject);
        }
    }
}

/// `lua/push_all.lua`: pushes applied in order up to the first refused.
#[derive(Debug)]
pub(crate) struct PushAll<'a> {
    pub(crate) pushes: Vec<PushArgs<'a>>,
}

impl ScriptArgs for PushAll<'_> {
    const ARGV: &'static str = "...push";

    fn lua() -> &'static Lua {
        &SCRIPTS.push_all
    }

    fn add_to(&self, call: &mut Invocation) {
        for push in &self.pushes {
            push.add_to(call);
        }
    }
}

/// One job's part of a settle (`lua/lib/settle.lua`).
#[derive(Debug)]
pub(crate) struct SettleGroup<'a> {
    pub(crate) job: &'a str,
    pub(crate) delivered: usize,
    pub(crate) in_doubt: usize,
    pub(crate) exhausted: usize,
    /// The outcome chunks (`chunk, entries` each).
    pub(crate) chunks: Chunks,
    /// `(full, short)` per dead entry.
    pub(crate) dead: Vec<(Vec<u8>, Vec<u8>)>,
}

/// `lua/settle_and_continue.lua`: settles a lease, marks the batch taking
/// over its sending slot, leases more.
#[derive(Debug)]
pub(crate) struct SettleAndContinue<'a> {
    pub(crate) lease: &'a str,
    pub(crate) batch: &'a str,
    pub(crate) retention_s: u64,
    pub(crate) outcomes: usize,
    pub(crate) groups: Vec<SettleGroup<'a>>,
    /// `(due time, message wire form)` per retry.
    pub(crate) retries: Vec<(u64, Vec<u8>)>,
    /// The lease and batch to mark, `("", "")` for none.
    pub(crate) mark_lease: &'a str,
    pub(crate) mark_batch: &'a str,
    pub(crate) lease_args: LeaseArgs,
}

impl ScriptArgs for SettleAndContinue<'_> {
    const ARGV: &'static str = "lease batch retention_s outcomes groups retries ...group \
                                ...retry mark_lease mark_batch max_batches ttl_ms \
                                rebatch_size max_due";

    fn lua() -> &'static Lua {
        &SCRIPTS.settle_and_continue
    }

    fn add_to(&self, call: &mut Invocation) {
        call.arg(self.lease)
            .arg(self.batch)
            .arg(self.retention_s)
            .arg(self.outcomes)
            .arg(self.groups.len())
            .arg(self.retries.len());
        for group in &self.groups {
            call.arg(group.job)
                .arg(group.delivered)
                .arg(group.dead.len())
                .arg(group.in_doubt)
                .arg(group.exhausted)
                .arg(group.chunks.count());
            for (chunk, entries) in group.chunks.iter() {
                call.arg(chunk).arg(entries);
            }
            for (full, short) in &group.dead {
                call.arg(full).arg(short);
            }
        }
        for (due, message) in &self.retries {
            call.arg(*due).arg(message);
        }
        call.arg(self.mark_lease).arg(self.mark_batch);
        self.lease_args.add_to(call);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names on the one `prefix` line of `code`.
    fn declared(code: &str, prefix: &str) -> Vec<String> {
        let lines: Vec<&str> = code.lines().filter(|l| l.starts_with(prefix)).collect();
        assert_eq!(lines.len(), 1, "one {prefix:?} line in:\n{code}");
        lines[0][prefix.len()..]
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    fn names(argv: &str) -> Vec<String> {
        argv.split_whitespace().map(str::to_string).collect()
    }

    fn check<A: ScriptArgs>() {
        assert_eq!(
            declared(A::lua().code, "--- ARGV:"),
            names(A::ARGV),
            "the Rust arguments of a script follow its --- ARGV: line"
        );
    }

    #[test]
    fn every_struct_names_its_script_arguments_in_order() {
        check::<Claim<'_>>();
        check::<Checkpoint<'_>>();
        check::<Report<'_>>();
        check::<Reports>();
        check::<Fail<'_>>();
        check::<Outcome<'_>>();
        check::<Rejects<'_>>();
        check::<Control<'_>>();
        check::<Replay<'_>>();
        check::<LeaseArgs>();
        check::<MarkSending<'_>>();
        check::<Extend<'_>>();
        check::<Release<'_>>();
        check::<DeadLetters<'_>>();
        check::<Stats>();
        check::<GcraReserve>();
        check::<GcraBackOff>();
        check::<GcraPause>();
        check::<CircuitSwap>();
        check::<WorkerBeat<'_>>();
        check::<Workers>();
        check::<PushAll<'_>>();
        check::<SettleAndContinue<'_>>();
        assert_eq!(
            declared(SCRIPTS.push_all.code, "--- PUSH ARGV:"),
            names(PushArgs::FIXED)
        );
    }
}
