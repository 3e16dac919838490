//! Encoding of messages, batches and dead letters, and decoding of script
//! replies.
//!
//! A message travels as the JSON array
//! `[job, line, userId, alertMessage, attempts, first_attempt_ms]`: about
//! half the size of the `Message` struct's JSON, and a batch is a JSON array
//! of those, which the scripts can split and join as plain strings.

use deadpool_redis::redis::Value;
use serde::Serialize;
use wds_core::{
    Batch, BatchId, DeadKind, DeadLetter, Error, JobId, Lease, LeaseId, LineOutcome, Message,
    MessageId, Receipt, Result,
};

/// A message's wire form, borrowed for encoding.
type WireRef<'a> = (&'a str, u64, &'a str, &'a str, u32, Option<u64>);
/// A message's wire form, owned for decoding.
type Wire = (String, u64, String, String, u32, Option<u64>);

/// Appends the wire form of `m` to `out`.
pub(crate) fn write_message(out: &mut Vec<u8>, m: &Message) -> Result<()> {
    let wire: WireRef<'_> = (
        m.id.job.as_str(),
        m.id.line,
        &m.user_id,
        &m.alert_message,
        m.attempts,
        m.first_attempt_ms,
    );
    serde_json::to_writer(out, &wire).map_err(|e| encode_error("message", e))
}

/// The wire form of `m`.
pub(crate) fn message(m: &Message) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64 + m.user_id.len() + m.alert_message.len());
    write_message(&mut out, m)?;
    Ok(out)
}

/// A batch payload: the JSON array of the messages' wire forms.
pub(crate) fn payload(messages: &[Message]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(messages.len() * 96 + 2);
    out.push(b'[');
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_message(&mut out, m)?;
    }
    out.push(b']');
    Ok(out)
}

/// The messages of a batch payload.
pub(crate) fn decode_payload(batch: &str, bytes: &[u8]) -> Result<Vec<Message>> {
    let wires: Vec<Wire> = serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        key: format!("batch {batch}"),
        detail: e.to_string(),
    })?;
    Ok(wires
        .into_iter()
        .map(
            |(job, line, user_id, alert_message, attempts, first_attempt_ms)| Message {
                id: MessageId {
                    job: JobId(job),
                    line,
                },
                user_id,
                alert_message,
                attempts,
                first_attempt_ms,
            },
        )
        .collect())
}

/// JSON of something of ours (cannot fail for these types, but a failure
/// is reported rather than unwrapped).
pub(crate) fn json<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| encode_error(what, e))
}

fn encode_error(what: &str, e: serde_json::Error) -> Error {
    Error::Corrupt {
        key: what.to_string(),
        detail: format!("cannot encode: {e}"),
    }
}

/// A dead entry: `<line>:<in doubt>:<len>:<replay message><dead letter json>`.
///
/// The replay form (attempts reset, no first attempt) is stored ready-made
/// so that the replay script never has to decode JSON.
pub(crate) fn dead_entry(letter: &DeadLetter) -> Result<Vec<u8>> {
    let mut replay = letter.message.clone();
    replay.attempts = 0;
    replay.first_attempt_ms = None;
    let replay = message(&replay)?;
    let in_doubt = u8::from(letter.reason.kind == DeadKind::InDoubt);
    let mut out = format!("{}:{in_doubt}:{}:", letter.message.id.line, replay.len()).into_bytes();
    out.extend_from_slice(&replay);
    serde_json::to_writer(&mut out, letter).map_err(|e| encode_error("dead letter", e))?;
    Ok(out)
}

/// The dead letter of a dead entry.
pub(crate) fn decode_dead_entry(bytes: &[u8]) -> Result<DeadLetter> {
    let corrupt = |detail: String| Error::Corrupt {
        key: "dead letter".into(),
        detail,
    };
    let mut colons = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b':')
        .map(|(i, _)| i);
    let (Some(_), Some(second), Some(third)) = (colons.next(), colons.next(), colons.next()) else {
        return Err(corrupt("missing header".into()));
    };
    let len: usize = std::str::from_utf8(&bytes[second + 1..third])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt("bad length".into()))?;
    let json = bytes
        .get(third + 1 + len..)
        .ok_or_else(|| corrupt("truncated".into()))?;
    serde_json::from_slice(json).map_err(|e| corrupt(e.to_string()))
}

/// Lines per outcome chunk (see the `append_chunks` script helper).
pub(crate) const CHUNK_LINES: u64 = 128;

/// Outcome entries grouped by chunk, as the scripts append them: each
/// chunk's entries are `<line>=<outcome>\n`.
#[derive(Debug, Default)]
pub(crate) struct Chunks(Vec<(u64, Vec<u8>)>);

impl Chunks {
    /// Adds the stored outcome of `line`.
    pub(crate) fn add(&mut self, line: u64, outcome: &[u8]) {
        let entries = self.entry(line);
        entries.extend_from_slice(outcome);
        entries.push(b'\n');
    }

    /// Adds the outcome of a line delivered with `receipt`, as [`outcome`]
    /// stores it, written in place (this is every line of a healthy run).
    pub(crate) fn add_delivered(&mut self, line: u64, receipt: &Receipt) {
        let entries = self.entry(line);
        write_delivered(entries, receipt);
        entries.push(b'\n');
    }

    /// The chunk buffer of `line`, with `<line>=` written.
    fn entry(&mut self, line: u64) -> &mut Vec<u8> {
        let chunk = line / CHUNK_LINES;
        // Lines come mostly in order: the last chunk is nearly always it.
        let at = match self.0.iter().rposition(|(c, _)| *c == chunk) {
            Some(at) => at,
            None => {
                self.0
                    .push((chunk, Vec::with_capacity(32 * CHUNK_LINES as usize)));
                self.0.len() - 1
            }
        };
        let entries = &mut self.0[at].1;
        write_number(entries, line);
        entries.push(b'=');
        entries
    }

    /// How many chunks.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Chunk numbers and their entries.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.0.iter().map(|(c, e)| (*c, e.as_slice()))
    }
}

/// The outcome of `line` in a chunk: its last entry, `None` when it has none
/// or the last is empty (replayed, pending again).
pub(crate) fn find_in_chunk(chunk: &[u8], line: u64) -> Option<&[u8]> {
    let prefix = format!("{line}=");
    chunk
        .split(|b| *b == b'\n')
        .filter_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .next_back()
        .filter(|outcome| !outcome.is_empty())
}

/// A line outcome as stored. A delivered line, by far the most common, is
/// `D<status>,<attempt>,<latency_ms>,<at_ms>` (about a quarter of its JSON,
/// which matters for 100,000 lines per job); anything else is JSON.
pub(crate) fn outcome(outcome: &LineOutcome) -> Result<Vec<u8>> {
    match outcome {
        LineOutcome::Delivered { receipt } => {
            let mut out = Vec::with_capacity(32);
            write_delivered(&mut out, receipt);
            Ok(out)
        }
        other => json("line outcome", other),
    }
}

/// `D<status>,<attempt>,<latency_ms>,<at_ms>` (see [`outcome`]).
fn write_delivered(out: &mut Vec<u8>, receipt: &Receipt) {
    out.push(b'D');
    if let Some(status) = receipt.status {
        write_number(out, u64::from(status));
    }
    out.push(b',');
    write_number(out, u64::from(receipt.attempt));
    out.push(b',');
    write_number(out, receipt.latency_ms);
    out.push(b',');
    write_number(out, receipt.at_ms);
}

/// `n` in decimal, without a `String` on the way.
fn write_number(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A stored line outcome (see [`outcome`]).
pub(crate) fn decode_outcome(bytes: &[u8]) -> Result<LineOutcome> {
    let corrupt = |detail: String| Error::Corrupt {
        key: "line outcome".into(),
        detail,
    };
    let Some(compact) = bytes.strip_prefix(b"D") else {
        return serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()));
    };
    let text = std::str::from_utf8(compact).map_err(|e| corrupt(e.to_string()))?;
    let bad = || corrupt(format!("bad delivered outcome {text:?}"));
    let mut parts = text.split(',');
    let (Some(status), Some(attempt), Some(latency), Some(at), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    Ok(LineOutcome::Delivered {
        receipt: Receipt {
            status: match status {
                "" => None,
                s => Some(s.parse().map_err(|_| bad())?),
            },
            attempt: attempt.parse().map_err(|_| bad())?,
            latency_ms: latency.parse().map_err(|_| bad())?,
            at_ms: at.parse().map_err(|_| bad())?,
        },
    })
}

/// The leases of a `lease` script reply: `{deadline, {{lease, batch, payload, sending}…}}`.
pub(crate) fn decode_leases(value: &Value) -> Result<Vec<Lease>> {
    let reply = array("lease", value)?;
    let (Some(deadline), Some(items)) = (reply.first(), reply.get(1)) else {
        return Err(unexpected("lease", value));
    };
    let deadline_ms = uint("lease", deadline)?;
    array("lease", items)?
        .iter()
        .map(|item| {
            let fields = array("lease", item)?;
            let [id, batch, payload, sending] = fields else {
                return Err(unexpected("lease", item));
            };
            let batch = string("lease", batch)?;
            let messages = decode_payload(&batch, bytes("lease", payload)?)?;
            Ok(Lease {
                id: LeaseId(string("lease", id)?),
                batch: Batch {
                    id: BatchId(batch),
                    messages,
                },
                deadline_ms,
                previously_sending: uint("lease", sending)? == 1,
            })
        })
        .collect()
}

/// An unexpected reply: a bug or a foreign writer.
pub(crate) fn unexpected(op: &str, value: &Value) -> Error {
    Error::Corrupt {
        key: op.to_string(),
        detail: format!("unexpected reply from Redis: {value:?}"),
    }
}

/// The elements of an array reply.
pub(crate) fn array<'a>(op: &str, value: &'a Value) -> Result<&'a [Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(&[]),
        other => Err(unexpected(op, other)),
    }
}

/// The bytes of a string reply.
pub(crate) fn bytes<'a>(op: &str, value: &'a Value) -> Result<&'a [u8]> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.as_bytes()),
        other => Err(unexpected(op, other)),
    }
}

/// A string reply, owned.
pub(crate) fn string(op: &str, value: &Value) -> Result<String> {
    String::from_utf8(bytes(op, value)?.to_vec()).map_err(|_| unexpected(op, value))
}

/// A string reply, or `None` for nil.
pub(crate) fn opt_bytes<'a>(op: &str, value: &'a Value) -> Result<Option<&'a [u8]>> {
    match value {
        Value::Nil => Ok(None),
        other => bytes(op, other).map(Some),
    }
}

/// An integer reply (or a string holding one).
pub(crate) fn int(op: &str, value: &Value) -> Result<i64> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::BulkString(_) | Value::SimpleString(_) => std::str::from_utf8(bytes(op, value)?)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| unexpected(op, value)),
        other => Err(unexpected(op, other)),
    }
}

/// A non-negative integer reply.
pub(crate) fn uint(op: &str, value: &Value) -> Result<u64> {
    u64::try_from(int(op, value)?).map_err(|_| unexpected(op, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wds_core::{DeadReason, JobId};

    fn sample() -> Message {
        Message {
            id: MessageId {
                job: JobId("j1".into()),
                line: 7,
            },
            user_id: "u\"7".into(),
            alert_message: "héllo, [world]".into(),
            attempts: 2,
            first_attempt_ms: Some(1_700_000_000_123),
        }
    }

    #[test]
    fn chunks_keep_the_last_entry_of_a_line() {
        let mut chunks = Chunks::default();
        chunks.add(1, b"D200,1,0,5");
        chunks.add(127, b"{\"x\":1}");
        chunks.add(128, b"D,1,0,5");
        chunks.add(11, b"a");
        assert_eq!(chunks.len(), 2);
        let all: Vec<_> = chunks.iter().collect();
        assert_eq!(all[0].0, 0);
        assert_eq!(all[1], (1, &b"128=D,1,0,5\n"[..]));
        let mut first = all[0].1.to_vec();
        assert_eq!(find_in_chunk(&first, 1), Some(&b"D200,1,0,5"[..]));
        assert_eq!(find_in_chunk(&first, 127), Some(&b"{\"x\":1}"[..]));
        assert_eq!(find_in_chunk(&first, 12), None);
        first.extend_from_slice(b"1=\n");
        assert_eq!(
            find_in_chunk(&first, 1),
            None,
            "an empty entry means pending"
        );
        first.extend_from_slice(b"1=b\n");
        assert_eq!(find_in_chunk(&first, 1), Some(&b"b"[..]));
        assert_eq!(find_in_chunk(&first, 11), Some(&b"a"[..]));
    }

    #[test]
    fn outcomes_round_trip() {
        let receipts = [
            Receipt {
                status: Some(200),
                attempt: 3,
                latency_ms: 12,
                at_ms: 1_700_000_000_000,
            },
            Receipt {
                status: None,
                attempt: 1,
                latency_ms: 0,
                at_ms: 0,
            },
        ];
        for receipt in receipts {
            let o = LineOutcome::Delivered { receipt };
            assert_eq!(decode_outcome(&outcome(&o).unwrap()).unwrap(), o);
        }
        let dead = LineOutcome::Dead {
            reason: DeadReason {
                kind: DeadKind::Permanent,
                detail: "D,1,2,3".into(),
            },
        };
        assert_eq!(decode_outcome(&outcome(&dead).unwrap()).unwrap(), dead);
    }

    #[test]
    fn payload_round_trips() {
        let messages = vec![
            sample(),
            Message {
                attempts: 0,
                first_attempt_ms: None,
                ..sample()
            },
        ];
        let bytes = payload(&messages).unwrap();
        assert_eq!(decode_payload("b", &bytes).unwrap(), messages);
        assert_eq!(decode_payload("b", b"[]").unwrap(), Vec::<Message>::new());
    }

    #[test]
    fn dead_entry_round_trips_and_carries_the_replay_form() {
        let letter = DeadLetter {
            message: sample(),
            reason: DeadReason {
                kind: DeadKind::InDoubt,
                detail: "a: b: c".into(),
            },
            at_ms: 5,
        };
        let entry = dead_entry(&letter).unwrap();
        assert!(entry.starts_with(b"7:1:"));
        assert_eq!(decode_dead_entry(&entry).unwrap(), letter);
        let text = String::from_utf8(entry).unwrap();
        let replay = r#"["j1",7,"u\"7","héllo, [world]",0,null]"#;
        assert!(text.contains(replay), "{text}");
    }
}
