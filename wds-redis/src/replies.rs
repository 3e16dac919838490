//! The replies of the queue's scripts as types, decoded through
//! `FromRedisValue`: the shape of each reply is written down once, here,
//! and what it means for the trait call (an error naming the lease or the
//! job) is decided by the caller, which has that context.

use deadpool_redis::redis::{FromRedisValue, ParsingError, Value};
use wds_core::{Error, Result};

/// Decodes a script's reply; a reply of another shape is
/// [`Error::Corrupt`] (a bug, or a foreign writer).
pub(crate) fn decode<T: FromRedisValue>(op: &str, value: Value) -> Result<T> {
    T::from_redis_value(value).map_err(|e| Error::Corrupt {
        key: op.to_string(),
        detail: format!("unexpected reply from Redis: {e}"),
    })
}

/// The items of an array reply.
fn items(value: Value, what: &str) -> Result<Vec<Value>, ParsingError> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(format!("{what}: not an array: {other:?}").into()),
    }
}

/// A reply's tag (`'ok'`, `'lost'`…) and what follows it.
fn tagged(value: Value, what: &str) -> Result<(String, Vec<Value>), ParsingError> {
    let mut items = items(value, what)?.into_iter();
    let tag = match items.next() {
        Some(tag) => String::from_redis_value(tag)?,
        None => return Err(format!("{what}: empty").into()),
    };
    Ok((tag, items.collect()))
}

/// The one value after a tag.
fn one<T: FromRedisValue>(rest: Vec<Value>, what: &str) -> Result<T, ParsingError> {
    match rest.into_iter().next() {
        Some(value) => T::from_redis_value(value),
        None => Err(format!("{what}: a value is missing").into()),
    }
}

/// What `lua/lib/push.lua`'s `push()` answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushReply {
    /// Applied; the messages ready now.
    Ok { ready: u64 },
    /// Applied before (a retry); the messages ready now.
    Stale { ready: u64 },
    /// Another sequence number was expected: the job's current one.
    Conflict { current: u64 },
    /// No such job.
    Unknown,
}

impl FromRedisValue for PushReply {
    fn from_redis_value(value: Value) -> Result<Self, ParsingError> {
        let (tag, rest) = tagged(value, "push")?;
        Ok(match tag.as_str() {
            "ok" => PushReply::Ok {
                ready: one(rest, "push ok")?,
            },
            "stale" => PushReply::Stale {
                ready: one(rest, "push stale")?,
            },
            "conflict" => PushReply::Conflict {
                current: one(rest, "push conflict")?,
            },
            "unknown" => PushReply::Unknown,
            other => return Err(format!("push: unknown reply {other:?}").into()),
        })
    }
}

/// What `lua/lib/settle.lua`'s `settle()` answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SettleReply {
    /// Settled.
    Ok,
    /// The lease is no longer held.
    Lost,
    /// The outcomes do not name each of the batch's `n` messages once.
    Count { n: u64 },
    /// A job of the outcomes is not known.
    Unknown { job: String },
}

impl FromRedisValue for SettleReply {
    fn from_redis_value(value: Value) -> Result<Self, ParsingError> {
        let (tag, rest) = tagged(value, "settle")?;
        Ok(match tag.as_str() {
            "ok" => SettleReply::Ok,
            "lost" => SettleReply::Lost,
            "count" => SettleReply::Count {
                n: one(rest, "settle count")?,
            },
            "unknown" => SettleReply::Unknown {
                job: one(rest, "settle unknown")?,
            },
            other => return Err(format!("settle: unknown reply {other:?}").into()),
        })
    }
}

/// One batch leased by `lua/lib/lease.lua`'s `lease()`.
#[derive(Debug)]
pub(crate) struct Leased {
    pub(crate) lease: String,
    pub(crate) batch: String,
    /// The batch payload (wire form).
    pub(crate) payload: Vec<u8>,
    /// Marked as sending by an earlier holder.
    pub(crate) sending: bool,
}

/// What `lease()` answered: the deadline of every lease it made, and them.
#[derive(Debug)]
pub(crate) struct LeaseReply {
    pub(crate) deadline_ms: u64,
    pub(crate) leased: Vec<Leased>,
}

impl FromRedisValue for LeaseReply {
    fn from_redis_value(value: Value) -> Result<Self, ParsingError> {
        let [deadline, leased] = <[Value; 2]>::try_from(items(value, "lease")?)
            .map_err(|_| ParsingError::from("lease: not {deadline, leases}"))?;
        let leased = items(leased, "lease items")?
            .into_iter()
            .map(|item| {
                let [lease, batch, payload, sending] =
                    <[Value; 4]>::try_from(items(item, "leased batch")?).map_err(|_| {
                        ParsingError::from("leased batch: not {lease, batch, payload, sending}")
                    })?;
                Ok(Leased {
                    lease: String::from_redis_value(lease)?,
                    batch: String::from_redis_value(batch)?,
                    payload: Vec::<u8>::from_redis_value(payload)?,
                    sending: i64::from_redis_value(sending)? == 1,
                })
            })
            .collect::<Result<_, ParsingError>>()?;
        Ok(LeaseReply {
            deadline_ms: u64::from_redis_value(deadline)?,
            leased,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn tagged_replies_decode_and_others_are_refused() {
        let reply = |items: Vec<Value>| Value::Array(items);
        assert_eq!(
            decode::<PushReply>("push", reply(vec![s("ok"), Value::Int(7)])).unwrap(),
            PushReply::Ok { ready: 7 }
        );
        assert_eq!(
            decode::<PushReply>("push", reply(vec![s("conflict"), Value::Int(3)])).unwrap(),
            PushReply::Conflict { current: 3 }
        );
        assert_eq!(
            decode::<SettleReply>("settle", reply(vec![s("unknown"), s("j1")])).unwrap(),
            SettleReply::Unknown { job: "j1".into() }
        );
        for bad in [
            reply(vec![s("ok")]),
            reply(vec![s("maybe"), Value::Int(1)]),
            Value::Int(1),
            reply(vec![]),
        ] {
            let err = decode::<PushReply>("push", bad).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        }
    }

    #[test]
    fn a_lease_reply_decodes_its_batches() {
        let value = Value::Array(vec![
            Value::Int(1_000),
            Value::Array(vec![Value::Array(vec![
                s("b1#9"),
                s("b1"),
                s("[]"),
                Value::Int(1),
            ])]),
        ]);
        let reply = decode::<LeaseReply>("lease", value).unwrap();
        assert_eq!(reply.deadline_ms, 1_000);
        assert_eq!(reply.leased.len(), 1);
        assert_eq!(
            (reply.leased[0].lease.as_str(), reply.leased[0].sending),
            ("b1#9", true)
        );
        let short = Value::Array(vec![Value::Int(1_000)]);
        assert!(decode::<LeaseReply>("lease", short).is_err());
    }
}
