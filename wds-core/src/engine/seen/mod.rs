//! The duplicate filter of a job: which `(userId, alertMessage)` pairs
//! (with their attributes, when a line has any) a job already has, so a repeat is counted as a duplicate of the line where
//! the pair first appears and not enqueued (guarantee G1).
//!
//! Its memory does not grow with the file. Before a job's lines are pushed,
//! a first pass over the file as it is reads every pair's key (a 128-bit
//! keyed hash) and line, sorts them (in memory up to a budget, else as
//! sorted runs in unnamed temporary files: see [`sorter`]) and merges them
//! into the list of duplicate lines, each with the line it repeats, in line
//! order. The pass that pushes then only walks that list. Lines appended to
//! the file after the first pass (a job continues over appends) are checked
//! against the first pass's sorted keys (one block read per run) and a map
//! of the appended pairs.
//!
//! A JSON array is not split at a line end, so it skips the first pass and
//! keeps every pair in the map, as every format did before.

mod sorter;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use sorter::{Merge, Record, Sorted, Sorter};
use tokio_util::sync::CancellationToken;

use crate::model::{Format, Record as Line};
use crate::parse::{Header, Limits, Parsed, Position, RecordReader};

/// Keys of pairs in a job's memory at most, before the first pass spills
/// them to disk (24 bytes each).
pub(crate) const DEFAULT_MEMORY_PAIRS: usize = 1 << 20;

/// The duplicate filter of one job's read; see the [module](self).
#[derive(Debug)]
pub(super) struct Seen {
    keys: PairKeys,
    /// The last line the first pass read: lines up to it are decided by
    /// `duplicates`, later ones by `sorted` and `appended`.
    covered: u64,
    sorted: Sorted<KeyLine>,
    duplicates: Duplicates,
    appended: HashMap<u128, u64, BuildHasherDefault<FoldHasher>>,
    /// The input's CSV header, as the first pass read it: a reader resumed
    /// past it needs it.
    header: Option<Header>,
}

/// What the first pass found, for the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct FirstPass {
    pub(super) pairs: u64,
    pub(super) duplicates: u64,
    pub(super) runs: usize,
}

impl Seen {
    /// Runs the first pass over `file` (from its start, to its last line
    /// end as it is now). `None` when `cancel` fired meanwhile.
    pub(super) fn prepare(
        file: &mut dyn ReadSeekSend,
        format: Format,
        default_message: Option<String>,
        limits: Limits,
        memory_pairs: usize,
        spill_dir: &Path,
        cancel: &CancellationToken,
    ) -> io::Result<Option<(Seen, FirstPass)>> {
        let keys = PairKeys::default();
        let covered_bytes = match format {
            Format::JsonArray => 0,
            _ => last_line_end(file)?,
        };
        file.seek(SeekFrom::Start(0))?;
        let mut reader = RecordReader::new(
            BufReader::with_capacity(256 * 1024, file).take(covered_bytes),
            format,
            default_message,
            limits,
            Position::START,
        );
        let mut pairs = Sorter::new(memory_pairs, spill_dir);
        let mut covered = 0;
        let mut count = 0u64;
        while let Some(item) = reader.next_record()? {
            match item {
                Parsed::Record(r) => {
                    pairs.push(KeyLine {
                        key: keys.key(&r),
                        line: r.line,
                    })?;
                    covered = covered.max(r.line);
                }
                Parsed::Invalid(inv) => covered = covered.max(inv.line),
            }
            count += 1;
            if count.is_multiple_of(65_536) && cancel.is_cancelled() {
                return Ok(None);
            }
        }
        let header = reader.header().cloned();
        let sorted = pairs.finish()?;
        // Equal keys come together, the first line first.
        let mut duplicates = Sorter::new(memory_pairs, spill_dir);
        let mut first: Option<KeyLine> = None;
        let mut repeats = 0;
        for pair in sorted.iter()? {
            let pair = pair?;
            match first {
                Some(f) if f.key == pair.key => {
                    repeats += 1;
                    duplicates.push(DuplicateLine {
                        line: pair.line,
                        of_line: f.line,
                    })?
                }
                _ => first = Some(pair),
            }
        }
        let duplicates = duplicates.finish()?;
        let pass = FirstPass {
            pairs: count,
            duplicates: repeats,
            runs: sorted.runs() + duplicates.runs(),
        };
        Ok(Some((
            Seen {
                keys,
                covered,
                sorted,
                duplicates: Duplicates {
                    next: None,
                    rest: duplicates.into_iter()?,
                },
                appended: HashMap::default(),
                header,
            },
            pass,
        )))
    }

    /// The input's CSV header, if the first pass found one.
    pub(super) fn header(&self) -> Option<Header> {
        self.header.clone()
    }

    /// The line where the pair of `line` first appears, when that is an
    /// earlier line. Lines must be checked in increasing order.
    pub(super) fn check(&mut self, record: &Line) -> io::Result<Option<u64>> {
        let line = record.line;
        if line <= self.covered {
            return self.duplicates.of(line);
        }
        let key = self.keys.key(record);
        if let Some(first) = self.appended.get(&key) {
            return Ok(Some(*first));
        }
        let candidates = self.sorted.lower_bounds(|p| p.key < key)?;
        if let Some(first) = candidates
            .iter()
            .filter(|p| p.key == key)
            .map(|p| p.line)
            .min()
        {
            return Ok(Some(first));
        }
        self.appended.insert(key, line);
        Ok(None)
    }
}

/// The duplicate lines of the first pass, walked in line order.
#[derive(Debug)]
struct Duplicates {
    next: Option<DuplicateLine>,
    rest: Merge<std::vec::IntoIter<DuplicateLine>, DuplicateLine>,
}

impl Duplicates {
    /// The line `line` repeats, if it is a duplicate; lines are asked for
    /// in increasing order.
    fn of(&mut self, line: u64) -> io::Result<Option<u64>> {
        loop {
            match self.next {
                Some(d) if d.line > line => return Ok(None),
                Some(d) if d.line == line => return Ok(Some(d.of_line)),
                _ => match self.rest.next().transpose()? {
                    Some(d) => self.next = Some(d),
                    None => return Ok(None),
                },
            }
        }
    }
}

/// What the first pass reads: a file it can also seek in.
pub(super) trait ReadSeekSend: Read + Seek + Send {}
impl<T: Read + Seek + Send + ?Sized> ReadSeekSend for T {}

/// Where the file's last complete line ends (0 when it has none): the
/// first pass stops there, so a line still being written is read (whole)
/// by the second pass only.
fn last_line_end(file: &mut dyn ReadSeekSend) -> io::Result<u64> {
    const BLOCK: u64 = 64 * 1024;
    let mut end = file.seek(SeekFrom::End(0))?;
    let mut block = vec![0; BLOCK as usize];
    while end > 0 {
        let start = end.saturating_sub(BLOCK);
        let bytes = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(bytes)?;
        if let Some(at) = bytes.iter().rposition(|&b| b == b'\n') {
            return Ok(start + at as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// A pair's key and the line it is on, ordered by key then line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct KeyLine {
    key: u128,
    line: u64,
}

impl Record for KeyLine {
    const SIZE: usize = 24;
    fn encode(&self, out: &mut [u8]) {
        out[..16].copy_from_slice(&self.key.to_le_bytes());
        out[16..24].copy_from_slice(&self.line.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Self {
        let mut key = [0; 16];
        let mut line = [0; 8];
        key.copy_from_slice(&bytes[..16]);
        line.copy_from_slice(&bytes[16..24]);
        KeyLine {
            key: u128::from_le_bytes(key),
            line: u64::from_le_bytes(line),
        }
    }
}

/// A duplicate line and the line it repeats, ordered by line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct DuplicateLine {
    line: u64,
    of_line: u64,
}

impl Record for DuplicateLine {
    const SIZE: usize = 16;
    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.line.to_le_bytes());
        out[8..16].copy_from_slice(&self.of_line.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Self {
        let mut line = [0; 8];
        let mut of_line = [0; 8];
        line.copy_from_slice(&bytes[..8]);
        of_line.copy_from_slice(&bytes[8..16]);
        DuplicateLine {
            line: u64::from_le_bytes(line),
            of_line: u64::from_le_bytes(of_line),
        }
    }
}

/// Keys of `(userId, alertMessage, attributes)`: a 128-bit keyed hash
/// rather than the strings, so a pair costs 24 bytes (with its line)
/// whatever its length and whatever its attributes; 128 bits make an
/// accidental collision (which would drop a user as a "duplicate")
/// practically impossible, and random keys keep crafted ones out.
///
/// Two lines that differ only in their attributes (two orders of one user)
/// are not duplicates. A record without attributes hashes exactly the two
/// strings, as before attributes existed.
#[derive(Debug, Default)]
struct PairKeys(RandomState, RandomState);

impl PairKeys {
    fn key(&self, record: &Line) -> u128 {
        // Non-string values as their JSON text, made once for both hashes.
        let texts: Vec<Option<String>> = record
            .attributes
            .iter()
            .map(|(_, value)| match value {
                serde_json::Value::String(_) => None,
                other => Some(other.to_string()),
            })
            .collect();
        let hash = |state: &RandomState| {
            let mut h = state.build_hasher();
            h.write(record.user_id.as_bytes());
            h.write_u8(0xff); // not valid UTF-8: separates the strings
            h.write(record.alert_message.as_bytes());
            for ((name, value), text) in record.attributes.iter().zip(&texts) {
                h.write_u8(0xff);
                h.write(name.as_bytes());
                // A string and a JSON text apart: "1" is not 1.
                match (value, text) {
                    (serde_json::Value::String(s), _) => {
                        h.write_u8(0xfe);
                        h.write(s.as_bytes());
                    }
                    (_, text) => {
                        h.write_u8(0xfd);
                        h.write(text.as_deref().unwrap_or_default().as_bytes());
                    }
                }
            }
            h.finish()
        };
        (u128::from(hash(&self.0)) << 64) | u128::from(hash(&self.1))
    }
}

/// The keys are already keyed hashes: folding them is enough.
#[derive(Debug, Default)]
struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 ^= (n as u64) ^ ((n >> 64) as u64);
    }
}
