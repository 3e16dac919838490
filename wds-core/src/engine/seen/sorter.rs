//! An external sort of fixed-size records: kept in memory up to a budget,
//! then written as sorted runs to unnamed temporary files and merged on the
//! way out. Memory stays at the budget whatever the number of records.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A record of a fixed size in bytes, ordered as it must come out.
pub(super) trait Record: Copy + Ord {
    /// Its size on disk.
    const SIZE: usize;
    /// Writes it into `out` (`SIZE` bytes).
    fn encode(&self, out: &mut [u8]);
    /// Reads it back from `bytes` (`SIZE` bytes).
    fn decode(bytes: &[u8]) -> Self;
}

/// Runs on disk at most: past it they are merged into one, so a sorter
/// holds a bounded number of files open whatever its budget.
const MAX_RUNS: usize = 32;

/// Every this many records of a run, one is kept in memory, so a lookup
/// reads one block of a run rather than searching the file.
const INDEX_EVERY: usize = 1024;

/// Collects records; [`finish`](Sorter::finish) returns them sorted.
#[derive(Debug)]
pub(super) struct Sorter<R> {
    budget: usize,
    dir: PathBuf,
    buffer: Vec<R>,
    runs: Vec<Run<R>>,
}

/// One sorted run on disk, and every [`INDEX_EVERY`]th of its records.
#[derive(Debug)]
pub(super) struct Run<R> {
    file: File,
    len: usize,
    index: Vec<R>,
}

/// Records in order: all in memory when they fitted the budget, else runs.
#[derive(Debug)]
pub(super) enum Sorted<R> {
    Memory(Vec<R>),
    Runs(Vec<Run<R>>),
}

impl<R: Record> Sorter<R> {
    /// A sorter that holds at most `budget` records in memory and spills
    /// to unnamed files in `dir`.
    pub(super) fn new(budget: usize, dir: &Path) -> Self {
        Sorter {
            budget: budget.max(1),
            dir: dir.to_path_buf(),
            buffer: Vec::new(),
            runs: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, record: R) -> io::Result<()> {
        self.buffer.push(record);
        if self.buffer.len() >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> io::Result<()> {
        self.buffer.sort_unstable();
        let run = self.write_run(self.buffer.iter().copied().map(Ok))?;
        self.runs.push(run);
        self.buffer.clear();
        if self.runs.len() >= MAX_RUNS {
            let runs = std::mem::take(&mut self.runs);
            let merged = Merge::<std::vec::IntoIter<R>, R>::of_runs(
                runs.into_iter().map(|r| (r.file, r.len)).collect(),
            )?;
            let run = self.write_run(merged)?;
            self.runs.push(run);
        }
        Ok(())
    }

    /// Writes records (in order) to a new run.
    fn write_run(&self, records: impl Iterator<Item = io::Result<R>>) -> io::Result<Run<R>> {
        // Unnamed: gone with its handle, whatever way the process ends.
        let file = std::fs::create_dir_all(&self.dir)
            .and_then(|()| tempfile::tempfile_in(&self.dir))
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot create a spill file in {}: {e}", self.dir.display()),
                )
            })?;
        let mut out = BufWriter::with_capacity(256 * 1024, &file);
        let mut bytes = vec![0; R::SIZE];
        let mut index = Vec::new();
        let mut len: usize = 0;
        for record in records {
            let record = record?;
            if len.is_multiple_of(INDEX_EVERY) {
                index.push(record);
            }
            record.encode(&mut bytes);
            out.write_all(&bytes)?;
            len += 1;
        }
        out.flush()?;
        drop(out);
        Ok(Run { file, len, index })
    }

    /// Every record pushed, in order.
    pub(super) fn finish(mut self) -> io::Result<Sorted<R>> {
        if self.runs.is_empty() {
            self.buffer.sort_unstable();
            return Ok(Sorted::Memory(self.buffer));
        }
        if !self.buffer.is_empty() {
            self.spill()?;
        }
        Ok(Sorted::Runs(self.runs))
    }
}

impl<R: Record> Sorted<R> {
    /// Reads every record in order (a k-way merge of the runs).
    pub(super) fn iter(&self) -> io::Result<Merge<std::iter::Copied<std::slice::Iter<'_, R>>, R>> {
        match self {
            Sorted::Memory(records) => Ok(Merge::Memory(records.iter().copied())),
            Sorted::Runs(runs) => {
                let files = runs.iter().map(|r| Ok((r.file.try_clone()?, r.len)));
                Merge::of_runs(files.collect::<io::Result<Vec<_>>>()?)
            }
        }
    }

    /// [`iter`](Self::iter), consuming the records.
    pub(super) fn into_iter(self) -> io::Result<Merge<std::vec::IntoIter<R>, R>> {
        match self {
            Sorted::Memory(records) => Ok(Merge::Memory(records.into_iter())),
            Sorted::Runs(runs) => {
                Merge::of_runs(runs.into_iter().map(|r| (r.file, r.len)).collect())
            }
        }
    }

    /// From each run, the first record that is not `before` the one looked
    /// for (`before` is true for every record ordered before it): the
    /// candidates for a lookup. Reads one block per run.
    pub(super) fn lower_bounds(&self, before: impl Fn(&R) -> bool) -> io::Result<Vec<R>> {
        match self {
            Sorted::Memory(records) => {
                let at = records.partition_point(&before);
                Ok(records.get(at).copied().into_iter().collect())
            }
            Sorted::Runs(runs) => {
                let mut found = Vec::with_capacity(runs.len());
                for run in runs {
                    // The index entries before the target say which block
                    // holds the first record not before it: the one that
                    // starts at the last such entry, up to and including
                    // the next entry (which is not before the target).
                    let entries = run.index.partition_point(&before);
                    if entries == 0 {
                        found.extend(run.index.first().copied());
                        continue;
                    }
                    let start = (entries - 1) * INDEX_EVERY;
                    let count = (INDEX_EVERY + 1).min(run.len - start);
                    let mut bytes = vec![0; count * R::SIZE];
                    let mut file = &run.file;
                    file.seek(SeekFrom::Start((start * R::SIZE) as u64))?;
                    file.read_exact(&mut bytes)?;
                    let block: Vec<R> = bytes.chunks_exact(R::SIZE).map(R::decode).collect();
                    found.extend(block.get(block.partition_point(&before)).copied());
                }
                Ok(found)
            }
        }
    }

    /// Runs written to disk (0 when everything fitted in memory).
    pub(super) fn runs(&self) -> usize {
        match self {
            Sorted::Memory(_) => 0,
            Sorted::Runs(runs) => runs.len(),
        }
    }
}

#[derive(Debug)]
pub(super) struct RunReader {
    input: BufReader<File>,
    left: usize,
    bytes: Vec<u8>,
}

impl RunReader {
    fn next<R: Record>(&mut self) -> io::Result<Option<R>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.input.read_exact(&mut self.bytes)?;
        self.left -= 1;
        Ok(Some(R::decode(&self.bytes)))
    }
}

/// The records of a [`Sorted`], in order.
#[derive(Debug)]
pub(super) enum Merge<I, R> {
    Memory(I),
    Runs {
        readers: Vec<RunReader>,
        heap: BinaryHeap<Reverse<(R, usize)>>,
    },
}

impl<I, R: Record> Merge<I, R> {
    fn of_runs(runs: Vec<(File, usize)>) -> io::Result<Self> {
        let mut readers = Vec::with_capacity(runs.len());
        let mut heap = BinaryHeap::with_capacity(runs.len());
        for (i, (mut file, len)) in runs.into_iter().enumerate() {
            file.seek(SeekFrom::Start(0))?;
            let mut reader = RunReader {
                input: BufReader::with_capacity(64 * 1024, file),
                left: len,
                bytes: vec![0; R::SIZE],
            };
            if let Some(first) = reader.next()? {
                heap.push(Reverse((first, i)));
            }
            readers.push(reader);
        }
        Ok(Merge::Runs { readers, heap })
    }
}

impl<I: Iterator<Item = R>, R: Record> Iterator for Merge<I, R> {
    type Item = io::Result<R>;

    fn next(&mut self) -> Option<io::Result<R>> {
        match self {
            Merge::Memory(records) => records.next().map(Ok),
            Merge::Runs { readers, heap } => {
                let Reverse((record, run)) = heap.pop()?;
                match readers[run].next() {
                    Ok(Some(next)) => heap.push(Reverse((next, run))),
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
                Some(Ok(record))
            }
        }
    }
}
