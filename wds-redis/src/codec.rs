//! Encoding of messages, batches and dead letters, and decoding of script
//! replies.
//!
//! A message travels as the JSON array
//! `[job, line, userId, alertMessage, attempts, first_attempt_ms]`: about
//! half the size of the `Message` struct's JSON, and a batch is a JSON array
//! of those, which the scripts can split and join as plain strings.
//!
//! A batch fresh from a push (one job, no attempts yet: nearly every batch)
//! is written shorter, `[job, [line, userId, alertMessage], …]`: a quarter
//! fewer bytes to store, to send both ways, and for Redis to hash as the
//! scripts handle it.
//!
//! A message with attributes has one more element at the end of either
//! form, the JSON object of its attributes (`[job, line, userId,
//! alertMessage, attempts, first_attempt_ms, {…}]`, `[line, userId,
//! alertMessage, {…}]`); a message without has none, so payloads written
//! before attributes existed read as they did.

use deadpool_redis::redis::Value;
use serde::Serialize;
use wds_core::{
    backend::{Batch, BatchId, Lease, LeaseId, LineOutcome, Receipt, RejectKind},
    Attributes, DeadKind, DeadLetter, Error, JobId, Message, MessageId, Result,
};

use crate::replies::LeaseReply;

/// A message's wire form, borrowed for encoding.
type WireRef<'a> = (&'a str, u64, &'a str, &'a str, u32, Option<u64>);
/// A message's wire form, owned for decoding.
type Wire = (String, u64, String, String, u32, Option<u64>);
/// A fresh message in a one-job batch, borrowed for encoding.
type EntryRef<'a> = (u64, &'a str, &'a str);
/// [`WireRef`] with attributes.
type WireWithRef<'a> = (
    &'a str,
    u64,
    &'a str,
    &'a str,
    u32,
    Option<u64>,
    &'a Attributes,
);
/// [`Wire`] with attributes.
type WireWith = (String, u64, String, String, u32, Option<u64>, Attributes);
/// [`EntryRef`] with attributes.
type EntryWithRef<'a> = (u64, &'a str, &'a str, &'a Attributes);

/// An element of a batch payload, for decoding with serde.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Element {
    /// The job of a one-job batch (its first element).
    Job(String),
    /// A fresh message of a one-job batch.
    Entry((u64, String, String)),
    /// A fresh message of a one-job batch, with attributes.
    EntryWith((u64, String, String, Attributes)),
    /// A message's whole wire form.
    Whole(Wire),
    /// A message's whole wire form, with attributes.
    WholeWith(WireWith),
}

/// Appends the wire form of `m` to `out`.
pub(crate) fn write_message(out: &mut Vec<u8>, m: &Message) -> Result<()> {
    if !m.attributes.is_empty() {
        let wire: WireWithRef<'_> = (
            m.id.job.as_str(),
            m.id.line,
            &m.user_id,
            &m.alert_message,
            m.attempts,
            m.first_attempt_ms,
            &m.attributes,
        );
        return serde_json::to_writer(out, &wire).map_err(|e| encode_error("message", e));
    }
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

/// A batch payload: `[job, [line, userId, alertMessage], …]` for fresh
/// messages of one job, else the JSON array of the messages' wire forms.
pub(crate) fn payload(messages: &[Message]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(messages.len() * 80 + 32);
    let fresh = |m: &Message| m.attempts == 0 && m.first_attempt_ms.is_none();
    match messages.first() {
        Some(first)
            if messages
                .iter()
                .all(|m| fresh(m) && m.id.job == first.id.job) =>
        {
            out.push(b'[');
            serde_json::to_writer(&mut out, first.id.job.as_str())
                .map_err(|e| encode_error("batch", e))?;
            for m in messages {
                out.push(b',');
                if m.attributes.is_empty() {
                    let entry: EntryRef<'_> = (m.id.line, &m.user_id, &m.alert_message);
                    serde_json::to_writer(&mut out, &entry)
                } else {
                    let entry: EntryWithRef<'_> =
                        (m.id.line, &m.user_id, &m.alert_message, &m.attributes);
                    serde_json::to_writer(&mut out, &entry)
                }
                .map_err(|e| encode_error("batch", e))?;
            }
            out.push(b']');
        }
        _ => {
            out.push(b'[');
            for (i, m) in messages.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_message(&mut out, m)?;
            }
            out.push(b']');
        }
    }
    Ok(out)
}

/// The messages of a batch payload.
pub(crate) fn decode_payload(batch: &str, bytes: &[u8]) -> Result<Vec<Message>> {
    // Every payload is ours, written by `payload`: read that layout
    // directly, and leave anything else (escaped strings) to serde_json.
    if let Some(messages) = Plain::new(bytes).payload() {
        return Ok(messages);
    }
    let corrupt = |detail: String| Error::Corrupt {
        key: format!("batch {batch}"),
        detail,
    };
    let elements: Vec<Element> =
        serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut elements = elements.into_iter().peekable();
    let job = match elements.peek() {
        Some(Element::Job(_)) => match elements.next() {
            Some(Element::Job(job)) => Some(JobId::new(job)),
            _ => None,
        },
        _ => None,
    };
    elements
        .map(|element| match (element, &job) {
            (Element::Entry((line, user_id, alert_message)), Some(job)) => {
                Ok(fresh(job, line, user_id, alert_message, Attributes::new()))
            }
            (Element::EntryWith((line, user_id, alert_message, attributes)), Some(job)) => {
                Ok(fresh(job, line, user_id, alert_message, attributes))
            }
            (Element::Whole(wire), None) => {
                let (job, line, user_id, alert_message, attempts, first_attempt_ms) = wire;
                Ok(whole(
                    job,
                    line,
                    user_id,
                    alert_message,
                    attempts,
                    first_attempt_ms,
                    Attributes::new(),
                ))
            }
            (Element::WholeWith(wire), None) => {
                let (job, line, user_id, alert_message, attempts, first_attempt_ms, attributes) =
                    wire;
                Ok(whole(
                    job,
                    line,
                    user_id,
                    alert_message,
                    attempts,
                    first_attempt_ms,
                    attributes,
                ))
            }
            _ => Err(corrupt("mixes the two batch layouts".into())),
        })
        .collect()
}

/// A message of `job` not tried yet.
fn fresh(
    job: &JobId,
    line: u64,
    user_id: String,
    alert_message: String,
    attributes: Attributes,
) -> Message {
    Message {
        id: MessageId {
            job: job.clone(),
            line,
        },
        user_id,
        alert_message,
        attributes,
        attempts: 0,
        first_attempt_ms: None,
    }
}

/// A message from its whole wire form.
fn whole(
    job: String,
    line: u64,
    user_id: String,
    alert_message: String,
    attempts: u32,
    first_attempt_ms: Option<u64>,
    attributes: Attributes,
) -> Message {
    Message {
        id: MessageId {
            job: JobId::new(job),
            line,
        },
        user_id,
        alert_message,
        attributes,
        attempts,
        first_attempt_ms,
    }
}

/// A reader of the payloads `payload` writes, for the common case of
/// strings without escapes: about three times faster than going through
/// serde, and this is every message a worker leases. `None` means "not that
/// simple" (the caller falls back to serde_json), never a wrong message.
struct Plain<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Plain<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Plain { bytes, at: 0 }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.bytes.get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let rest = &self.bytes[self.at..];
        let len = rest.iter().position(|b| *b == b'"' || *b == b'\\')?;
        if rest[len] != b'"' {
            return None;
        }
        let text = std::str::from_utf8(&rest[..len]).ok()?;
        self.at += len + 1;
        Some(text)
    }

    /// `,{…}` of a message with attributes, or nothing (then empty).
    fn attributes(&mut self) -> Option<Attributes> {
        if self.eat(b',').is_none() {
            return Some(Attributes::new());
        }
        let mut stream =
            serde_json::Deserializer::from_slice(&self.bytes[self.at..]).into_iter::<Attributes>();
        let attributes = stream.next()?.ok()?;
        self.at += stream.byte_offset();
        Some(attributes)
    }

    fn number(&mut self) -> Option<u64> {
        let rest = &self.bytes[self.at..];
        let len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 || len > 20 {
            return None;
        }
        self.at += len;
        std::str::from_utf8(&rest[..len]).ok()?.parse().ok()
    }

    fn message(&mut self, job: &mut Option<JobId>) -> Option<Message> {
        self.eat(b'[')?;
        let job_text = self.string()?;
        self.eat(b',')?;
        let line = self.number()?;
        self.eat(b',')?;
        let user_id = self.string()?.to_owned();
        self.eat(b',')?;
        let alert_message = self.string()?.to_owned();
        self.eat(b',')?;
        let attempts = u32::try_from(self.number()?).ok()?;
        self.eat(b',')?;
        let first_attempt_ms = if self.bytes[self.at..].starts_with(b"null") {
            self.at += 4;
            None
        } else {
            Some(self.number()?)
        };
        let attributes = self.attributes()?;
        self.eat(b']')?;
        // A batch is nearly always one job's: one id, cloned.
        let job = match job {
            Some(last) if last.as_str() == job_text => last.clone(),
            _ => job.insert(JobId::new(job_text)).clone(),
        };
        Some(Message {
            id: MessageId { job, line },
            user_id,
            alert_message,
            attributes,
            attempts,
            first_attempt_ms,
        })
    }

    /// `[line, userId, alertMessage]` of a one-job batch.
    fn entry(&mut self, job: &JobId) -> Option<Message> {
        self.eat(b'[')?;
        let line = self.number()?;
        self.eat(b',')?;
        let user_id = self.string()?.to_owned();
        self.eat(b',')?;
        let alert_message = self.string()?.to_owned();
        let attributes = self.attributes()?;
        self.eat(b']')?;
        Some(fresh(job, line, user_id, alert_message, attributes))
    }

    fn payload(mut self) -> Option<Vec<Message>> {
        self.eat(b'[')?;
        let mut messages = Vec::with_capacity(128);
        if self.bytes.get(self.at) == Some(&b'"') {
            let job = JobId::new(self.string()?.to_owned());
            while self.eat(b',').is_some() {
                messages.push(self.entry(&job)?);
            }
        } else if self.eat(b']').is_some() {
            return (self.at == self.bytes.len()).then_some(messages);
        } else {
            let mut job = None;
            loop {
                messages.push(self.message(&mut job)?);
                if self.eat(b',').is_none() {
                    break;
                }
            }
        }
        self.eat(b']')?;
        (self.at == self.bytes.len()).then_some(messages)
    }
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

/// A dead entry: `<line>:<kind>:<len>:<replay message><dead letter json>`,
/// `<kind>` as [`dead_kind_digit`] writes it.
///
/// The replay form (attempts reset, no first attempt) is stored ready-made
/// so that the replay script never has to decode JSON.
pub(crate) fn dead_entry(letter: &DeadLetter) -> Result<Vec<u8>> {
    let mut replay = letter.message.clone();
    replay.attempts = 0;
    replay.first_attempt_ms = None;
    let replay = message(&replay)?;
    let kind = dead_kind_digit(letter.reason.kind);
    let mut out = format!("{}:{kind}:{}:", letter.message.id.line, replay.len()).into_bytes();
    out.extend_from_slice(&replay);
    serde_json::to_writer(&mut out, letter).map_err(|e| encode_error("dead letter", e))?;
    Ok(out)
}

/// The digit of a dead entry's kind, which the replay script counts by:
/// 0 permanent, 1 in doubt (as entries written before exhausted had a digit
/// of their own say), 2 exhausted.
fn dead_kind_digit(kind: DeadKind) -> u8 {
    match kind {
        DeadKind::Permanent => 0,
        DeadKind::InDoubt => 1,
        DeadKind::Exhausted => 2,
    }
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
/// chunk's entries are `<line>=<outcome>\n`, or the compact entries of
/// rejected lines (see [`Chunks::add_reject`]).
#[derive(Debug, Default)]
pub(crate) struct Chunks {
    chunks: Vec<(u64, Vec<u8>)>,
    /// The run of rejected lines written last.
    run: Option<Run>,
}

/// A run of consecutive rejected lines of one kind in one compact entry.
#[derive(Debug, Clone, Copy)]
struct Run {
    chunk: u64,
    code: u8,
    first: u64,
    last: u64,
    /// Where its entry starts and ends in the chunk's buffer.
    start: usize,
    end: usize,
}

impl Chunks {
    /// Adds the stored outcome of `line` (as the backend wrote every
    /// outcome before the compact entries; still read).
    #[cfg(test)]
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

    /// Adds the compact outcome of a rejected line, `<offset>:I` (invalid)
    /// or `<offset>:U` (duplicate), `offset` being the line's place in its
    /// chunk, and a run of them in one entry, `<first>-<last>:I`: a few
    /// bytes for up to 128 lines instead of a JSON object with the reason
    /// per line. The reasons stay in the job's rejects list (its first
    /// lines, up to the detail limit).
    pub(crate) fn add_reject(&mut self, line: u64, kind: &RejectKind) {
        let code = match kind {
            RejectKind::Invalid { .. } => b'I',
            RejectKind::Duplicate { .. } => b'U',
        };
        let offset = line % CHUNK_LINES;
        let chunk = line / CHUNK_LINES;
        let run = self.run.take();
        let entries = self.chunk(line);
        let (start, first) = match run {
            // The line right after the run that ends this chunk's entries:
            // extend the run, rewriting its entry.
            Some(r)
                if r.chunk == chunk
                    && r.code == code
                    && r.last + 1 == offset
                    && r.end == entries.len() =>
            {
                entries.truncate(r.start);
                (r.start, r.first)
            }
            _ => (entries.len(), offset),
        };
        write_number(entries, first);
        if first != offset {
            entries.push(b'-');
            write_number(entries, offset);
        }
        entries.extend_from_slice(&[b':', code, b'\n']);
        self.run = Some(Run {
            chunk,
            code,
            first,
            last: offset,
            start,
            end: entries.len(),
        });
    }

    /// Adds the compact outcome of a dead line, `<offset>:P` (permanent),
    /// `:E` (exhausted) or `:X` (in doubt): its reason is in the dead letter.
    pub(crate) fn add_dead(&mut self, line: u64, kind: DeadKind) {
        self.run = None;
        let entries = self.chunk(line);
        write_number(entries, line % CHUNK_LINES);
        entries.extend_from_slice(match kind {
            DeadKind::Permanent => b":P\n",
            DeadKind::Exhausted => b":E\n",
            DeadKind::InDoubt => b":X\n",
        });
    }

    /// The chunk buffer of `line`, with `<line>=` written.
    fn entry(&mut self, line: u64) -> &mut Vec<u8> {
        let entries = self.chunk(line);
        write_number(entries, line);
        entries.push(b'=');
        entries
    }

    /// The chunk buffer of `line`.
    fn chunk(&mut self, line: u64) -> &mut Vec<u8> {
        let chunk = line / CHUNK_LINES;
        // Lines come mostly in order: the last chunk is nearly always it.
        let at = match self.chunks.iter().rposition(|(c, _)| *c == chunk) {
            Some(at) => at,
            None => {
                self.chunks
                    .push((chunk, Vec::with_capacity(32 * CHUNK_LINES as usize)));
                self.chunks.len() - 1
            }
        };
        &mut self.chunks[at].1
    }

    /// How many chunks.
    pub(crate) fn count(&self) -> usize {
        self.chunks.len()
    }

    /// Chunk numbers and their entries.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.chunks.iter().map(|(c, e)| (*c, e.as_slice()))
    }
}

/// The outcome of `line` in a chunk: its last entry, `None` when it has none
/// or the last is empty (replayed, pending again). A compact reject entry
/// (`<offset>:I`) comes back as `:I`.
pub(crate) fn find_in_chunk(chunk: &[u8], line: u64) -> Option<&[u8]> {
    let full = format!("{line}=");
    let offset = line % CHUNK_LINES;
    chunk
        .split(|b| *b == b'\n')
        .filter_map(|entry| {
            if let Some(outcome) = entry.strip_prefix(full.as_bytes()) {
                return Some(outcome);
            }
            // `<first>[-<last>]:<code>`, returned as `:<code>`.
            let colon = entry.iter().position(|&b| b == b':')?;
            let range = std::str::from_utf8(&entry[..colon]).ok()?;
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
            (first..=last).contains(&offset).then(|| &entry[colon..])
        })
        .next_back()
        .filter(|outcome| !outcome.is_empty())
}

/// Rejects, and dead letters, of a job kept in detail by default.
pub(crate) const DETAIL_LIMIT: usize = wds_core::backend::DEFAULT_DETAIL_LIMIT;

/// What a line's detail says when it was not kept.
pub(crate) const NOT_KEPT: &str = wds_core::backend::DETAIL_NOT_KEPT;

/// A line outcome as stored. A delivered line, by far the most common, is
/// `D<status>,<attempt>,<latency_ms>,<at_ms>` (about a quarter of its JSON,
/// which matters for 100,000 lines per job); anything else is JSON, as
/// earlier versions stored rejected and dead lines (still read).
#[cfg(test)]
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
    match bytes {
        b":I" => {
            return Ok(LineOutcome::Rejected {
                kind: RejectKind::Invalid {
                    reason: NOT_KEPT.into(),
                },
            })
        }
        b":P" | b":E" | b":X" => {
            let kind = match bytes[1] {
                b'P' => DeadKind::Permanent,
                b'E' => DeadKind::Exhausted,
                _ => DeadKind::InDoubt,
            };
            return Ok(LineOutcome::Dead {
                reason: wds_core::DeadReason {
                    kind,
                    detail: NOT_KEPT.into(),
                },
            });
        }
        // The line it repeats is in the rejects list, if anywhere: 0 says unknown.
        b":U" => {
            return Ok(LineOutcome::Rejected {
                kind: RejectKind::Duplicate { of_line: 0 },
            })
        }
        _ => {}
    }
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

/// The leases of a `lease()` reply, their payloads decoded.
pub(crate) fn leases(reply: LeaseReply) -> Result<Vec<Lease>> {
    let deadline_ms = reply.deadline_ms;
    reply
        .leased
        .into_iter()
        .map(|leased| {
            let messages = decode_payload(&leased.batch, &leased.payload)?;
            Ok(Lease {
                id: LeaseId::new(leased.lease),
                batch: Batch {
                    id: BatchId::new(leased.batch),
                    messages,
                },
                deadline_ms,
                previously_sending: leased.sending,
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
        let mut m = Message::fresh(&JobId::new("j1"), 7, "u\"7", "héllo, [world]");
        m.attempts = 2;
        m.first_attempt_ms = Some(1_700_000_000_123);
        m
    }

    fn attributes() -> Attributes {
        Attributes::try_from_pairs([
            ("orderId", serde_json::json!("A-1")),
            ("items", serde_json::json!(3)),
            (
                "gift",
                serde_json::json!({"note": "say \"hi\"", "wrap": [true, null]}),
            ),
        ])
        .unwrap()
    }

    #[test]
    fn attributes_ride_in_both_layouts_and_old_payloads_still_decode() {
        // Payloads as written before attributes existed.
        let old_short = br#"["j1",[1,"u1","hi"]]"#;
        let old_whole = br#"[["j1",7,"u7","hi",2,null]]"#;
        assert_eq!(
            decode_payload("b", old_short).unwrap(),
            [Message::fresh(&JobId::new("j1"), 1, "u1", "hi")]
        );
        let mut whole = Message::fresh(&JobId::new("j1"), 7, "u7", "hi");
        whole.attempts = 2;
        assert_eq!(decode_payload("b", old_whole).unwrap(), [whole]);
        // A batch without attributes is written as before.
        let plain = vec![Message::fresh(&JobId::new("j1"), 1, "u1", "hi")];
        assert_eq!(payload(&plain).unwrap(), old_short);

        let fresh = |line: u64, with: bool| {
            let m = Message::fresh(&JobId::new("j1"), line, format!("u{line}"), "hi");
            if with {
                m.with_attributes(attributes())
            } else {
                m
            }
        };
        let short = vec![fresh(1, true), fresh(2, false), fresh(3, true)];
        let bytes = payload(&short).unwrap();
        assert!(
            std::str::from_utf8(&bytes)
                .unwrap()
                .starts_with(r#"["j1",[1,"u1","hi",{"orderId":"A-1","items":3,"gift":{"#),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(Plain::new(&bytes).payload().as_ref(), Some(&short));
        assert_eq!(decode_payload("b", &bytes).unwrap(), short);
        let mut retried = sample().with_attributes(attributes());
        retried.user_id = "u7".into();
        let mixed = vec![retried, fresh(2, false)];
        let bytes = payload(&mixed).unwrap();
        assert!(bytes.starts_with(b"[["));
        assert_eq!(Plain::new(&bytes).payload().as_ref(), Some(&mixed));
        assert_eq!(decode_payload("b", &bytes).unwrap(), mixed);
        // Through serde too (an escaped user id leaves the fast path).
        let escaped = vec![sample().with_attributes(attributes())];
        let bytes = payload(&escaped).unwrap();
        assert!(Plain::new(&bytes).payload().is_none());
        assert_eq!(decode_payload("b", &bytes).unwrap(), escaped);
        // Attributes that break the limits are corrupt, not accepted.
        let bad = br#"["j1",[1,"u1","hi",{"userId":"x"}]]"#;
        assert!(Plain::new(bad).payload().is_none());
        assert!(decode_payload("b", bad).is_err());
        // A dead letter keeps them, in its replay form too.
        let letter = DeadLetter {
            message: fresh(9, true),
            reason: DeadReason {
                kind: DeadKind::Permanent,
                detail: "410".into(),
            },
            at_ms: 1,
        };
        let entry = dead_entry(&letter).unwrap();
        assert_eq!(decode_dead_entry(&entry).unwrap(), letter);
    }

    #[test]
    fn runs_of_rejected_lines_share_one_entry() {
        let invalid = RejectKind::Invalid { reason: "r".into() };
        let duplicate = RejectKind::Duplicate { of_line: 1 };
        let mut chunks = Chunks::default();
        for line in 1..=130 {
            chunks.add_reject(line, &invalid);
        }
        chunks.add_reject(131, &duplicate);
        chunks.add_reject(133, &invalid);
        let got: Vec<(u64, String)> = chunks
            .iter()
            .map(|(c, e)| (c, String::from_utf8_lossy(e).into_owned()))
            .collect();
        assert_eq!(
            got,
            [
                (0, "1-127:I\n".to_string()),
                (1, "0-2:I\n3:U\n5:I\n".to_string())
            ]
        );
        let (_, first) = chunks.iter().next().unwrap();
        assert_eq!(find_in_chunk(first, 64), Some(&b":I"[..]));
        assert_eq!(find_in_chunk(first, 0), None);
        let (_, second) = chunks.iter().nth(1).unwrap();
        assert_eq!(find_in_chunk(second, 130), Some(&b":I"[..]));
        assert_eq!(find_in_chunk(second, 131), Some(&b":U"[..]));
        assert_eq!(find_in_chunk(second, 132), None);
        // A later full entry (a replay, a re-settle) still wins.
        let mut later = second.to_vec();
        later.extend_from_slice(b"131=\n");
        assert_eq!(find_in_chunk(&later, 131), None);
    }

    #[test]
    fn chunks_keep_the_last_entry_of_a_line() {
        let mut chunks = Chunks::default();
        chunks.add(1, b"D200,1,0,5");
        chunks.add(127, b"{\"x\":1}");
        chunks.add(128, b"D,1,0,5");
        chunks.add(11, b"a");
        assert_eq!(chunks.count(), 2);
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
            sample().with_attributes(attributes()),
        ];
        let bytes = payload(&messages).unwrap();
        assert_eq!(decode_payload("b", &bytes).unwrap(), messages);
        assert_eq!(decode_payload("b", b"[]").unwrap(), Vec::<Message>::new());
    }

    #[test]
    fn fresh_one_job_batches_are_written_short() {
        let fresh = |line: u64, alert: &str| {
            Message::fresh(&JobId::new("j1"), line, format!("u{line}"), alert)
        };
        let messages = vec![fresh(1, "hi"), fresh(2, "héllo, [world]")];
        let bytes = payload(&messages).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"["j1",[1,"u1","hi"],[2,"u2","héllo, [world]"]]"#
        );
        assert_eq!(Plain::new(&bytes).payload().as_ref(), Some(&messages));
        assert_eq!(decode_payload("b", &bytes).unwrap(), messages);
        // Escapes go through serde, in the short layout too.
        let escaped = vec![fresh(3, "say \"hi\"\n")];
        let bytes = payload(&escaped).unwrap();
        assert!(bytes.starts_with(b"[\"j1\","));
        assert!(Plain::new(&bytes).payload().is_none());
        assert_eq!(decode_payload("b", &bytes).unwrap(), escaped);
        // A retried message, or a second job, makes the batch whole-form.
        let mut retried = fresh(4, "x");
        retried.attempts = 1;
        let mut other = fresh(5, "y");
        other.id.job = JobId::new("j2");
        for mixed in [vec![fresh(1, "a"), retried], vec![fresh(1, "a"), other]] {
            let bytes = payload(&mixed).unwrap();
            assert!(
                bytes.starts_with(b"[["),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
            assert_eq!(decode_payload("b", &bytes).unwrap(), mixed);
        }
        // The two layouts never mix.
        for bad in [
            &br#"["j1",["j",1,"u","a",0,null]]"#[..],
            br#"[["j",1,"u","a",0,null],[1,"u","a"]]"#,
            br#"["j1","j2"]"#,
        ] {
            assert!(Plain::new(bad).payload().is_none(), "{bad:?}");
            assert!(decode_payload("b", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plain_payloads_read_directly_and_the_rest_through_serde() {
        let plain = |user: &str, alert: &str, job: &str, first: Option<u64>| {
            let mut m = Message::fresh(&JobId::new(job), 18_446_744_073_709_551_615, user, alert);
            m.attempts = u32::MAX;
            m.first_attempt_ms = first;
            m
        };
        let simple = vec![
            plain("u1", "héllo, [world] 🎉", "j1", None),
            plain("", "", "j1", Some(0)),
            plain("u3", "x", "j2", Some(1_700_000_000_123)),
        ];
        let bytes = payload(&simple).unwrap();
        assert_eq!(
            Plain::new(&bytes).payload().as_ref(),
            Some(&simple),
            "no escapes: read directly"
        );
        // Escapes, controls and quotes go through serde, and still decode.
        for alert in ["say \"hi\"", "a\\b", "tab\tnew\nline", "\u{1}"] {
            let messages = vec![plain("u", alert, "j", None)];
            let bytes = payload(&messages).unwrap();
            assert!(Plain::new(&bytes).payload().is_none(), "{alert:?}");
            assert_eq!(decode_payload("b", &bytes).unwrap(), messages);
        }
        // Malformed input is never read as messages by either path.
        for bad in [
            &b"["[..],
            b"[[\"j\",1,\"u\",\"a\",0,null]",
            b"[[\"j\",1,\"u\",\"a\",0,null]]x",
            b"[[\"j\",-1,\"u\",\"a\",0,null]]",
            b"[[\"j\",1,\"u\",\"a\",0]]",
            b"[[\"j\",1,\"u\",\"a\",4294967296,null]]",
            b"[[\"j\",99999999999999999999,\"u\",\"a\",0,null]]",
        ] {
            assert!(Plain::new(bad).payload().is_none(), "{bad:?}");
            assert!(decode_payload("b", bad).is_err(), "{bad:?}");
        }
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
