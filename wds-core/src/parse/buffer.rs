//! The parsers' own read buffer, which knows the byte offset and line number
//! (for JSON arrays, the element number) of the next byte it holds.
//!
//! A `BufReader` would hide how far the parser really got; resuming a job
//! needs the exact offset of the next record, so the parsers read through
//! this instead.

use std::fmt;
use std::io::{self, Read};

use super::Position;

/// How much is read from the underlying reader at a time.
pub(super) const CHUNK: usize = 64 * 1024;

/// A sliding window over a reader: `buf[pos..end]` is read but not consumed.
pub(super) struct Buffer<R> {
    reader: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// The most `buf` may grow to; bounds the memory of a parser.
    max_len: usize,
    /// Where `buf[pos]` is in the input.
    at: Position,
    /// Whether consuming a newline advances `at.line`. JSON arrays number
    /// their elements instead, with [`Buffer::next_line`].
    count_lines: bool,
    eof: bool,
}

impl<R: Read> Buffer<R> {
    /// A buffer over `reader`, which is positioned at `start`. It holds up to
    /// `max_len` bytes of unconsumed input (at least a few bytes, so that a
    /// BOM can always be inspected). With `count_lines`, `start.line` is a
    /// physical line and consuming a newline advances it; without, the line
    /// moves only by [`Buffer::next_line`].
    pub(super) fn new(reader: R, start: Position, max_len: usize, count_lines: bool) -> Self {
        let max_len = max_len.max(16);
        Buffer {
            reader,
            // Start small and grow on demand: most records are short, and a
            // generous `max_record_bytes` should not cost memory up front.
            buf: vec![0; CHUNK.min(max_len)],
            pos: 0,
            end: 0,
            max_len,
            at: start,
            count_lines,
            eof: false,
        }
    }

    /// The bytes read but not yet consumed.
    #[inline]
    pub(super) fn available(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// The offset and line of the first unconsumed byte.
    #[inline]
    pub(super) fn position(&self) -> Position {
        self.at
    }

    /// Whether the unconsumed bytes fill the buffer to its limit, so that
    /// [`Buffer::fill`] cannot add more until something is consumed.
    pub(super) fn is_full(&self) -> bool {
        self.end - self.pos >= self.max_len
    }

    /// Consumes `n` available bytes, counting the newlines among them if
    /// the buffer counts lines.
    #[inline]
    pub(super) fn consume(&mut self, n: usize) {
        let newlines = if self.count_lines {
            count_newlines(&self.buf[self.pos..self.pos + n])
        } else {
            0
        };
        self.consume_counted(n, newlines);
    }

    /// Advances the line number by one: for a buffer that does not count
    /// lines, whose "line" is the number of the next JSON array element.
    #[inline]
    pub(super) fn next_line(&mut self) {
        debug_assert!(!self.count_lines);
        self.at.line += 1;
    }

    /// Consumes `n` available bytes that the caller knows hold `newlines`
    /// newlines (the CSV state machine counts them as it goes).
    #[inline]
    pub(super) fn consume_counted(&mut self, n: usize, newlines: u64) {
        debug_assert!(n <= self.end - self.pos);
        debug_assert!(self.count_lines || newlines == 0);
        self.pos += n;
        self.at.byte += n as u64;
        self.at.line += newlines;
    }

    /// Reads more input after the available bytes. Returns `false` at the
    /// end of the input. Callers must not call it when [`Buffer::is_full`].
    pub(super) fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.is_full() {
            // A parser bug, not bad data: say so rather than loop forever.
            return Err(io::Error::other(
                "parse buffer full (record limit logic error)",
            ));
        }
        if self.end == self.buf.len() {
            if self.pos > 0 {
                self.buf.copy_within(self.pos..self.end, 0);
                self.end -= self.pos;
                self.pos = 0;
            }
            // Grow only when the unconsumed bytes (one long record) already
            // fill the buffer, or nearly so, so reads stay large.
            if self.buf.len() - self.end < CHUNK / 4 && self.buf.len() < self.max_len {
                let len = (self.buf.len() * 2).max(CHUNK).min(self.max_len);
                self.buf.resize(len, 0);
            }
        }
        loop {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads until at least `n` bytes are available or the input ends.
    /// Returns whether `n` bytes are available.
    pub(super) fn ensure(&mut self, n: usize) -> io::Result<bool> {
        while self.available().len() < n {
            if self.is_full() || !self.fill()? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl<R> fmt::Debug for Buffer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The buffered bytes are noise; the position is what matters.
        f.debug_struct("Buffer")
            .field("at", &self.at)
            .field("count_lines", &self.count_lines)
            .field("buffered", &(self.end - self.pos))
            .field("capacity", &self.buf.len())
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

/// The number of `\n` bytes in `bytes`.
#[inline]
pub(super) fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}
