//! The compact binary forms stored in BLOB columns: batch payloads, per-line
//! outcome entries and reject entries.
//!
//! Integers are LEB128 varints, strings a varint length and UTF-8 bytes.
//! Everything is encoded by the caller (on the async side) and decoded
//! there too, so the connection thread only moves bytes.
//!
//! # Payload (a batch, a scheduled retry, a dead letter's message)
//!
//! `jobs`, then each job id, then `count`, then per message: job index,
//! line, user id, alert message, attempts, first attempt (`0` for none,
//! else `ms + 1`). A batch from one push names its job once. When any
//! message has attributes, a trailer follows: how many messages have some,
//! then for each (in order): its index in the payload, its attribute count,
//! and per attribute the name, a tag (`0` a string, `1` any other JSON
//! value) and the string or the value's JSON text. A payload without
//! attributes has no trailer, so payloads stored before attributes existed
//! decode unchanged.
//!
//! # Outcome entries (`outcomes.entries`, one row per job and chunk per settle)
//!
//! `base_ms`, then per line: line offset in the chunk, tag, and by tag:
//! delivered (`0`): status (`0` for none, else `status + 1`), attempt,
//! latency, `at_ms - base_ms`; dead (`1` permanent, `2` exhausted,
//! `3` in doubt): detail; pending again after a replay (`4`): nothing;
//! dead with its detail not kept (`5` permanent, `6` exhausted, `7` in
//! doubt): nothing. The last entry of a line wins. A delivered line costs
//! about 7 bytes.
//!
//! # Reject entries (`rejects.entries`, one row per push that rejected lines)
//!
//! The distinct reasons of the row (count, then each), then per line:
//! offset from the row's first line, tag, and by tag: invalid (`0`): the
//! reason's index; duplicate (`1`): distance back to the first occurrence.
//! A line costs 3 or 4 bytes, its reason once per row. Only a job's
//! first rejects are stored so (see `SqliteBackendBuilder::detail_limit`).
//!
//! # Reject runs (`reject_runs.runs`, one row per push with rejects past the limit)
//!
//! Per run of consecutive lines of one kind: the gap from the end of the
//! previous run (from the row's first line for the first), then
//! `length << 1 | kind` (`0` invalid, `1` duplicate). A file of invalid
//! lines costs a few bytes per push, whatever its reasons.

use std::collections::{BTreeMap, HashMap};

use wds_core::{
    backend::{LineOutcome, Receipt, Reject, RejectKind, DETAIL_NOT_KEPT},
    Attributes, DeadKind, DeadReason, Error, JobId, Message, MessageId, Result,
};

/// Lines per outcome chunk: a settle of one batch of contiguous lines
/// writes one row (rarely two), and a lookup decodes at most one chunk's rows.
pub(crate) const CHUNK_LINES: u64 = 1024;

const DELIVERED: u8 = 0;
const DEAD_PERMANENT: u8 = 1;
const DEAD_EXHAUSTED: u8 = 2;
const DEAD_IN_DOUBT: u8 = 3;
const PENDING: u8 = 4;
const DEAD_PERMANENT_SHORT: u8 = 5;
const DEAD_EXHAUSTED_SHORT: u8 = 6;
const DEAD_IN_DOUBT_SHORT: u8 = 7;
const INVALID: u8 = 0;
const DUPLICATE: u8 = 1;

/// Appends `n` as a LEB128 varint.
pub(crate) fn put_u64(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Reads values back from a blob; every read checks the bounds, so a
/// damaged blob is an [`Error::Corrupt`], never a panic.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader { bytes, at: 0, what }
    }

    fn corrupt(&self, detail: &str) -> Error {
        Error::Corrupt {
            key: self.what.to_string(),
            detail: format!("{detail} at byte {} of {}", self.at, self.bytes.len()),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.at >= self.bytes.len()
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let mut n = 0u64;
        let mut shift = 0u32;
        loop {
            let Some(&b) = self.bytes.get(self.at) else {
                return Err(self.corrupt("truncated varint"));
            };
            self.at += 1;
            if shift > 63 {
                return Err(self.corrupt("varint too long"));
            }
            n |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(n);
            }
            shift += 7;
        }
    }

    fn u8(&mut self) -> Result<u8> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| self.corrupt("truncated"))?;
        self.at += 1;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32> {
        let n = self.u64()?;
        u32::try_from(n).map_err(|_| self.corrupt("number out of range"))
    }

    fn str(&mut self) -> Result<String> {
        let len = usize::try_from(self.u64()?).map_err(|_| self.corrupt("length out of range"))?;
        let end = self
            .at
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.corrupt("string past the end"))?;
        let s = std::str::from_utf8(&self.bytes[self.at..end])
            .map_err(|_| self.corrupt("string not UTF-8"))?
            .to_string();
        self.at = end;
        Ok(s)
    }
}

/// Encodes messages as one payload.
pub(crate) fn encode_messages<'a>(messages: impl IntoIterator<Item = &'a Message>) -> Vec<u8> {
    let messages: Vec<&Message> = messages.into_iter().collect();
    let mut jobs: Vec<&JobId> = Vec::new();
    for m in &messages {
        if !jobs.contains(&&m.id.job) {
            jobs.push(&m.id.job);
        }
    }
    let size: usize = messages
        .iter()
        .map(|m| m.user_id.len() + m.alert_message.len() + 8)
        .sum();
    let mut out = Vec::with_capacity(size + 32);
    put_u64(&mut out, jobs.len() as u64);
    for job in &jobs {
        put_str(&mut out, job.as_str());
    }
    put_u64(&mut out, messages.len() as u64);
    for m in &messages {
        let index = jobs.iter().position(|j| *j == &m.id.job).unwrap_or(0);
        put_u64(&mut out, index as u64);
        put_u64(&mut out, m.id.line);
        put_str(&mut out, &m.user_id);
        put_str(&mut out, &m.alert_message);
        put_u64(&mut out, u64::from(m.attempts));
        put_u64(&mut out, m.first_attempt_ms.map_or(0, |ms| ms + 1));
    }
    // The attributes trailer, only when a message has some: a payload
    // without attributes is byte for byte what it was before them.
    let with: Vec<(usize, &Message)> = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| !m.attributes.is_empty())
        .map(|(i, m)| (i, *m))
        .collect();
    if !with.is_empty() {
        put_u64(&mut out, with.len() as u64);
        for (i, m) in with {
            put_u64(&mut out, i as u64);
            put_u64(&mut out, m.attributes.len() as u64);
            for (name, value) in m.attributes.iter() {
                put_str(&mut out, name);
                match value {
                    serde_json::Value::String(text) => {
                        out.push(ATTRIBUTE_STRING);
                        put_str(&mut out, text);
                    }
                    other => {
                        out.push(ATTRIBUTE_JSON);
                        put_str(&mut out, &other.to_string());
                    }
                }
            }
        }
    }
    out
}

/// An attribute value stored as its text (a string).
const ATTRIBUTE_STRING: u8 = 0;
/// An attribute value stored as its JSON text (any other value).
const ATTRIBUTE_JSON: u8 = 1;

/// Decodes a payload made by [`encode_messages`].
pub(crate) fn decode_messages(bytes: &[u8]) -> Result<Vec<Message>> {
    let mut r = Reader::new(bytes, "batch payload");
    let jobs = r.u64()?;
    let mut ids = Vec::new();
    for _ in 0..jobs {
        ids.push(JobId::new(r.str()?));
    }
    let count = r.u64()?;
    let mut messages = Vec::with_capacity(count.min(100_000) as usize);
    for _ in 0..count {
        let index = r.u64()?;
        let job = usize::try_from(index)
            .ok()
            .and_then(|i| ids.get(i))
            .ok_or_else(|| r.corrupt("job index out of range"))?
            .clone();
        let line = r.u64()?;
        let user_id = r.str()?;
        let alert_message = r.str()?;
        let attempts = r.u32()?;
        let first = r.u64()?;
        messages.push(Message {
            id: MessageId { job, line },
            user_id,
            alert_message,
            attributes: Attributes::new(),
            attempts,
            first_attempt_ms: first.checked_sub(1),
        });
    }
    if !r.is_empty() {
        let with = r.u64()?;
        let mut last = None;
        for _ in 0..with {
            let index = r.u64()?;
            if last.is_some_and(|l| index <= l) {
                return Err(r.corrupt("attributes out of order"));
            }
            last = Some(index);
            let count = r.u64()?;
            let mut attributes = Attributes::new();
            for _ in 0..count {
                let name = r.str()?;
                let value = match r.u8()? {
                    ATTRIBUTE_STRING => serde_json::Value::String(r.str()?),
                    ATTRIBUTE_JSON => serde_json::from_str(&r.str()?)
                        .map_err(|e| r.corrupt(&format!("attribute value: {e}")))?,
                    _ => return Err(r.corrupt("unknown attribute tag")),
                };
                attributes
                    .push(name, value)
                    .map_err(|e| r.corrupt(&format!("attribute: {e}")))?;
            }
            let message = usize::try_from(index)
                .ok()
                .and_then(|i| messages.get_mut(i))
                .ok_or_else(|| r.corrupt("attribute index out of range"))?;
            message.attributes = attributes;
        }
        if !r.is_empty() {
            return Err(r.corrupt("trailing bytes"));
        }
    }
    Ok(messages)
}

/// One line's outcome, as a settle or a replay writes it.
#[derive(Debug)]
pub(crate) enum Entry<'a> {
    Delivered(&'a Receipt),
    Dead(&'a DeadReason),
    /// Dead, its detail not kept (past the job's detail limit).
    DeadNotKept(DeadKind),
    Pending,
}

/// Entries grouped by outcome chunk, each chunk's blob ready to insert.
#[derive(Debug, Default)]
pub(crate) struct Chunks {
    chunks: BTreeMap<u64, Vec<Packed>>,
}

/// One entry before its chunk's blob is made: offset, tag, body, and the
/// time it is stored relative to the chunk's base (delivered entries).
#[derive(Debug)]
struct Packed {
    offset: u64,
    tag: u8,
    body: Vec<u8>,
    at: Option<u64>,
}

impl Chunks {
    /// Adds the outcome of `line`.
    pub(crate) fn add(&mut self, line: u64, entry: Entry<'_>) {
        let mut body = Vec::new();
        let (tag, at) = match entry {
            Entry::Delivered(receipt) => {
                put_u64(&mut body, receipt.status.map_or(0, |s| u64::from(s) + 1));
                put_u64(&mut body, u64::from(receipt.attempt));
                put_u64(&mut body, receipt.latency_ms);
                (DELIVERED, Some(receipt.at_ms))
            }
            Entry::Dead(reason) => {
                put_str(&mut body, &reason.detail);
                let tag = match reason.kind {
                    DeadKind::Permanent => DEAD_PERMANENT,
                    DeadKind::Exhausted => DEAD_EXHAUSTED,
                    DeadKind::InDoubt => DEAD_IN_DOUBT,
                };
                (tag, None)
            }
            Entry::DeadNotKept(kind) => {
                let tag = match kind {
                    DeadKind::Permanent => DEAD_PERMANENT_SHORT,
                    DeadKind::Exhausted => DEAD_EXHAUSTED_SHORT,
                    DeadKind::InDoubt => DEAD_IN_DOUBT_SHORT,
                };
                (tag, None)
            }
            Entry::Pending => (PENDING, None),
        };
        self.chunks
            .entry(line / CHUNK_LINES)
            .or_default()
            .push(Packed {
                offset: line % CHUNK_LINES,
                tag,
                body,
                at,
            });
    }

    /// Each chunk and its blob.
    pub(crate) fn into_blobs(self) -> Vec<(u64, Vec<u8>)> {
        self.chunks
            .into_iter()
            .map(|(chunk, entries)| {
                let base = entries.iter().filter_map(|e| e.at).min().unwrap_or(0);
                let mut out = Vec::with_capacity(8 + entries.len() * 8);
                put_u64(&mut out, base);
                for Packed {
                    offset,
                    tag,
                    body,
                    at,
                } in entries
                {
                    put_u64(&mut out, offset);
                    out.push(tag);
                    out.extend_from_slice(&body);
                    if let Some(at) = at {
                        put_u64(&mut out, at - base);
                    }
                }
                (chunk, out)
            })
            .collect()
    }
}

/// The last outcome of `line` in a chunk's rows (oldest row first):
/// `Some(None)` when it is pending again, `None` when no row names it.
pub(crate) fn find_outcome(rows: &[Vec<u8>], line: u64) -> Result<Option<Option<LineOutcome>>> {
    let offset = line % CHUNK_LINES;
    let mut found = None;
    for row in rows {
        let mut r = Reader::new(row, "outcome chunk");
        let base = r.u64()?;
        while !r.is_empty() {
            let at_offset = r.u64()?;
            let tag = r.u8()?;
            let outcome = match tag {
                DELIVERED => {
                    let status = r.u64()?;
                    let attempt = r.u32()?;
                    let latency_ms = r.u64()?;
                    let at_ms = base + r.u64()?;
                    Some(LineOutcome::Delivered {
                        receipt: Receipt {
                            status: status
                                .checked_sub(1)
                                .map(|s| u16::try_from(s).unwrap_or(u16::MAX)),
                            attempt,
                            latency_ms,
                            at_ms,
                        },
                    })
                }
                DEAD_PERMANENT | DEAD_EXHAUSTED | DEAD_IN_DOUBT => {
                    let detail = r.str()?;
                    let kind = match tag {
                        DEAD_PERMANENT => DeadKind::Permanent,
                        DEAD_EXHAUSTED => DeadKind::Exhausted,
                        _ => DeadKind::InDoubt,
                    };
                    Some(LineOutcome::Dead {
                        reason: DeadReason { kind, detail },
                    })
                }
                DEAD_PERMANENT_SHORT | DEAD_EXHAUSTED_SHORT | DEAD_IN_DOUBT_SHORT => {
                    let kind = match tag {
                        DEAD_PERMANENT_SHORT => DeadKind::Permanent,
                        DEAD_EXHAUSTED_SHORT => DeadKind::Exhausted,
                        _ => DeadKind::InDoubt,
                    };
                    Some(LineOutcome::Dead {
                        reason: DeadReason {
                            kind,
                            detail: DETAIL_NOT_KEPT.into(),
                        },
                    })
                }
                PENDING => None,
                _ => return Err(r.corrupt("unknown outcome tag")),
            };
            if at_offset == offset {
                found = Some(outcome);
            }
        }
    }
    Ok(found)
}

/// Encodes the rejects of one push (in line order, all at or after `first`).
pub(crate) fn encode_rejects(first: u64, rejects: &[Reject]) -> Vec<u8> {
    // Each distinct reason once per row: the lines of one file tend to be
    // invalid for the same few reasons.
    let mut reasons: Vec<&str> = Vec::new();
    let mut index: HashMap<&str, u64> = HashMap::new();
    for reject in rejects {
        if let RejectKind::Invalid { reason } = &reject.kind {
            index.entry(reason.as_str()).or_insert_with(|| {
                reasons.push(reason);
                reasons.len() as u64 - 1
            });
        }
    }
    let mut out = Vec::with_capacity(rejects.len() * 4 + 32);
    put_u64(&mut out, reasons.len() as u64);
    for reason in &reasons {
        put_str(&mut out, reason);
    }
    for reject in rejects {
        put_u64(&mut out, reject.line.saturating_sub(first));
        match &reject.kind {
            RejectKind::Invalid { reason } => {
                out.push(INVALID);
                put_u64(&mut out, index.get(reason.as_str()).copied().unwrap_or(0));
            }
            RejectKind::Duplicate { of_line } => {
                out.push(DUPLICATE);
                put_u64(&mut out, reject.line.saturating_sub(*of_line));
            }
        }
    }
    out
}

/// Decodes a row made by [`encode_rejects`] whose first line is `first`.
pub(crate) fn decode_rejects(first: u64, bytes: &[u8]) -> Result<Vec<Reject>> {
    let mut r = Reader::new(bytes, "rejects");
    let count = r.u64()?;
    let mut reasons = Vec::new();
    for _ in 0..count {
        reasons.push(r.str()?);
    }
    let mut out = Vec::new();
    while !r.is_empty() {
        let line = first + r.u64()?;
        let kind = match r.u8()? {
            INVALID => {
                let i = r.u64()?;
                let reason = usize::try_from(i)
                    .ok()
                    .and_then(|i| reasons.get(i))
                    .ok_or_else(|| r.corrupt("reason index out of range"))?;
                RejectKind::Invalid {
                    reason: reason.clone(),
                }
            }
            DUPLICATE => RejectKind::Duplicate {
                of_line: line.saturating_sub(r.u64()?),
            },
            _ => return Err(r.corrupt("unknown reject tag")),
        };
        out.push(Reject { line, kind });
    }
    Ok(out)
}

/// Encodes rejected lines (in line order, at least one) as runs of one
/// kind; returns the first line and the runs.
pub(crate) fn encode_runs(rejects: &[Reject]) -> (u64, Vec<u8>) {
    let first = rejects.first().map_or(0, |r| r.line);
    let mut out = Vec::with_capacity(8);
    // The run being built: first line, length, kind; and where the last one ended.
    let mut run: Option<(u64, u64, u64)> = None;
    let mut end = first;
    let flush = |out: &mut Vec<u8>, (start, len, kind): (u64, u64, u64), end: &mut u64| {
        put_u64(out, start.saturating_sub(*end));
        put_u64(out, len << 1 | kind);
        *end = start + len;
    };
    for reject in rejects {
        let kind = match reject.kind {
            RejectKind::Invalid { .. } => u64::from(INVALID),
            RejectKind::Duplicate { .. } => u64::from(DUPLICATE),
        };
        run = match run {
            Some((start, len, k)) if k == kind && start + len == reject.line => {
                Some((start, len + 1, k))
            }
            Some(done) => {
                flush(&mut out, done, &mut end);
                Some((reject.line, 1, kind))
            }
            None => Some((reject.line, 1, kind)),
        };
    }
    if let Some(done) = run {
        flush(&mut out, done, &mut end);
    }
    (first, out)
}

/// The kind of `line` in runs made by [`encode_runs`] from `first`, as its
/// outcome says it (the detail not kept), or `None` when no run holds it.
pub(crate) fn find_in_runs(first: u64, bytes: &[u8], line: u64) -> Result<Option<RejectKind>> {
    let mut r = Reader::new(bytes, "reject runs");
    let mut end = first;
    while !r.is_empty() {
        let start = end
            .checked_add(r.u64()?)
            .ok_or_else(|| r.corrupt("line out of range"))?;
        let run = r.u64()?;
        end = start
            .checked_add(run >> 1)
            .ok_or_else(|| r.corrupt("line out of range"))?;
        if line < start {
            return Ok(None);
        }
        if line < end {
            return Ok(Some(if run & 1 == u64::from(DUPLICATE) {
                RejectKind::Duplicate { of_line: 0 }
            } else {
                RejectKind::Invalid {
                    reason: DETAIL_NOT_KEPT.into(),
                }
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(job: &str, line: u64) -> Message {
        let mut m = Message::fresh(
            &JobId::new(job),
            line,
            format!("user-{line}"),
            "héllo, \"world\"",
        );
        m.attempts = 2;
        m.first_attempt_ms = Some(1_700_000_000_000 + line);
        m
    }

    fn attributes(line: u64) -> Attributes {
        Attributes::try_from_pairs([
            ("orderId", serde_json::json!(format!("A-{line}"))),
            ("items", serde_json::json!(line)),
            (
                "gift",
                serde_json::json!({"wrap": true, "note": "é\"\u{1}"}),
            ),
        ])
        .unwrap()
    }

    #[test]
    fn attributes_round_trip_and_a_payload_without_them_is_unchanged() {
        // A payload as stored before attributes existed (the layout of
        // `encode_messages` then, written out by hand): one job "a", one
        // message at line 3, "u", "hi", 1 attempt, no first attempt.
        let old = [1, 1, b'a', 1, 0, 3, 1, b'u', 2, b'h', b'i', 1, 0];
        let decoded = decode_messages(&old).unwrap();
        let mut expected = Message::fresh(&JobId::new("a"), 3, "u", "hi");
        expected.attempts = 1;
        assert_eq!(decoded, [expected.clone()]);
        assert_eq!(encode_messages(&decoded), old);
        // Some messages with attributes, some without, across jobs.
        let mut messages: Vec<Message> = (1..20).map(|l| message("a", l)).collect();
        messages.push(message("b", 7));
        for i in [0, 5, 19] {
            messages[i].attributes = attributes(i as u64);
        }
        let bytes = encode_messages(&messages);
        let back = decode_messages(&bytes).unwrap();
        assert_eq!(back, messages);
        let order: Vec<&str> = back[5].attributes.iter().map(|(n, _)| n).collect();
        assert_eq!(order, ["orderId", "items", "gift"]);
        // Cut anywhere, it is an error, except just before the trailer:
        // that is a whole payload without attributes (SQLite writes a blob
        // whole, so this is no case that happens).
        let plain: Vec<Message> = messages
            .iter()
            .cloned()
            .map(|m| m.with_attributes(Attributes::new()))
            .collect();
        let trailer = encode_messages(&plain).len();
        for cut in (0..bytes.len()).filter(|&cut| cut != trailer) {
            assert!(decode_messages(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn messages_round_trip_across_jobs() {
        let mut messages: Vec<Message> = (1..50).map(|l| message("a", l)).collect();
        messages.push(message("b", 7));
        messages[3].first_attempt_ms = None;
        messages[4].first_attempt_ms = Some(0);
        let bytes = encode_messages(&messages);
        assert_eq!(decode_messages(&bytes).unwrap(), messages);
    }

    #[test]
    fn damaged_payloads_are_errors_not_panics() {
        let bytes = encode_messages(&[message("a", 1), message("a", 2)]);
        for cut in 0..bytes.len() {
            assert!(decode_messages(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode_messages(&[0xff; 12]).is_err());
    }

    #[test]
    fn last_outcome_of_a_line_wins() {
        let receipt = Receipt {
            status: Some(200),
            attempt: 1,
            latency_ms: 3,
            at_ms: 1_700_000_000_123,
        };
        let reason = DeadReason {
            kind: DeadKind::InDoubt,
            detail: "worker died".into(),
        };
        let mut first = Chunks::default();
        first.add(5, Entry::Dead(&reason));
        first.add(6, Entry::Delivered(&receipt));
        let mut second = Chunks::default();
        second.add(5, Entry::Pending);
        let rows: Vec<Vec<u8>> = first
            .into_blobs()
            .into_iter()
            .chain(second.into_blobs())
            .map(|(chunk, blob)| {
                assert_eq!(chunk, 0);
                blob
            })
            .collect();
        assert_eq!(
            find_outcome(&rows[..1], 5).unwrap(),
            Some(Some(LineOutcome::Dead { reason }))
        );
        assert_eq!(find_outcome(&rows, 5).unwrap(), Some(None));
        assert_eq!(
            find_outcome(&rows, 6).unwrap(),
            Some(Some(LineOutcome::Delivered { receipt }))
        );
        assert_eq!(find_outcome(&rows, 7).unwrap(), None);
    }

    #[test]
    fn a_delivered_line_costs_a_few_bytes() {
        let mut chunks = Chunks::default();
        let receipts: Vec<Receipt> = (0..100)
            .map(|i| Receipt {
                status: Some(200),
                attempt: 1,
                latency_ms: 2,
                at_ms: 1_700_000_000_000 + i,
            })
            .collect();
        for (i, r) in receipts.iter().enumerate() {
            chunks.add(2048 + i as u64, Entry::Delivered(r));
        }
        let blobs = chunks.into_blobs();
        let bytes: usize = blobs.iter().map(|(_, b)| b.len()).sum();
        assert!(bytes <= 100 * 8 + 8, "{bytes} bytes for 100 lines");
    }

    #[test]
    fn runs_keep_each_line_kind_in_a_few_bytes() {
        let invalid = |line| Reject {
            line,
            kind: RejectKind::Invalid {
                reason: format!("a long reason for line {line}"),
            },
        };
        let duplicate = |line| Reject {
            line,
            kind: RejectKind::Duplicate { of_line: 1 },
        };
        let mut rejects: Vec<Reject> = (100..1100).map(invalid).collect();
        rejects.extend((1100..1103).map(duplicate));
        rejects.push(invalid(1200));
        rejects.push(duplicate(1201));
        let (first, runs) = encode_runs(&rejects);
        assert_eq!(first, 100);
        assert!(runs.len() <= 12, "{} bytes", runs.len());
        let not_kept = Some(RejectKind::Invalid {
            reason: DETAIL_NOT_KEPT.into(),
        });
        let dup = Some(RejectKind::Duplicate { of_line: 0 });
        for (line, want) in [
            (99, None),
            (100, not_kept.clone()),
            (1099, not_kept.clone()),
            (1100, dup.clone()),
            (1102, dup.clone()),
            (1103, None),
            (1199, None),
            (1200, not_kept),
            (1201, dup),
            (1202, None),
        ] {
            assert_eq!(
                find_in_runs(first, &runs, line).unwrap(),
                want,
                "line {line}"
            );
        }
        for cut in 0..runs.len() {
            let _ = find_in_runs(first, &runs[..cut], 1201);
        }
    }

    #[test]
    fn rejects_round_trip() {
        let mut rejects = vec![
            Reject {
                line: 10,
                kind: RejectKind::Invalid {
                    reason: "empty user id".into(),
                },
            },
            Reject {
                line: 12,
                kind: RejectKind::Duplicate { of_line: 3 },
            },
        ];
        for line in 13..113 {
            rejects.push(Reject {
                line,
                kind: RejectKind::Invalid {
                    reason: if line % 2 == 0 {
                        "empty user id"
                    } else {
                        "no message"
                    }
                    .into(),
                },
            });
        }
        let bytes = encode_rejects(10, &rejects);
        assert_eq!(decode_rejects(10, &bytes).unwrap(), rejects);
        assert!(
            bytes.len() <= 102 * 4 + 40,
            "{} bytes for 102 rejects",
            bytes.len()
        );
        for cut in 0..bytes.len() {
            let _ = decode_rejects(10, &bytes[..cut]);
        }
    }
}
