//! The folder source's system calls: listing the folder, opening a
//! candidate once (no symlinks, regular files only), reading its sidecar,
//! asking whether a process still writes it, and moving it out through its
//! handle, across file systems if need be.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::scan::{is_data_file_name, Stamp, SIDECAR_SUFFIX};

/// A sidecar is a short message; anything larger is a mistake, not a message.
const MAX_SIDECAR_BYTES: u64 = 64 * 1024;

/// What a directory entry with a data file name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A regular file, with its stamp.
    File(Stamp),
    /// Anything else (symlink, FIFO, device, directory, socket): never read.
    Other(&'static str),
}

impl Stamp {
    pub(super) fn of(meta: &Metadata) -> Self {
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let (dev, ino) = (0, 0);
        Stamp {
            len: meta.len(),
            mtime: meta.modified().ok(),
            dev,
            ino,
        }
    }
}

/// What `meta` (from `lstat` or `fstat`) is.
pub(super) fn kind_of(meta: &Metadata) -> Kind {
    let t = meta.file_type();
    if t.is_file() {
        return Kind::File(Stamp::of(meta));
    }
    if t.is_symlink() {
        return Kind::Other("a symbolic link");
    }
    if t.is_dir() {
        return Kind::Other("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Kind::Other("a FIFO");
        }
        if t.is_block_device() || t.is_char_device() {
            return Kind::Other("a device");
        }
        if t.is_socket() {
            return Kind::Other("a socket");
        }
    }
    Kind::Other("not a regular file")
}

/// What `path` is, without following a symlink; `None` when it is gone.
pub(super) fn look(path: &Path) -> io::Result<Option<Kind>> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(kind_of(&meta))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The entries of `dir` with a data file name, and what each is.
pub(super) fn list(dir: &Path) -> io::Result<Vec<(PathBuf, io::Result<Option<Kind>>)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(e) => {
                tracing::debug!(dir = %dir.display(), error = %e, "cannot read a folder entry");
                continue;
            }
        };
        if is_data_file_name(&path) {
            let kind = look(&path);
            files.push((path, kind));
        }
    }
    Ok(files)
}

/// Opens `path` for reading without following a symlink and without
/// blocking on a FIFO, and checks through the handle that it is a regular
/// file. Everything after this reads that handle, never the path again.
pub(super) fn open_regular(path: &Path) -> io::Result<Result<(File, Stamp), &'static str>> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    }
    let file = match options.open(path) {
        Ok(file) => file,
        // O_NOFOLLOW on a symlink.
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(Err("a symbolic link")),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    Ok(match kind_of(&meta) {
        Kind::File(stamp) => Ok((file, stamp)),
        Kind::Other(what) => Err(what),
    })
}

/// `X.message` for `X`.
pub(super) fn sidecar_of(path: &Path) -> PathBuf {
    let mut name: OsString = path.as_os_str().to_owned();
    name.push(SIDECAR_SUFFIX);
    PathBuf::from(name)
}

/// The trimmed content of `path`'s sidecar, if it has one (a regular
/// file, opened like a data file).
pub(super) fn read_sidecar(path: &Path) -> io::Result<Option<String>> {
    let file = match open_regular(&sidecar_of(path)) {
        Ok(Ok((file, _))) => file,
        Ok(Err(what)) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the {SIDECAR_SUFFIX} sidecar is {what}"),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(MAX_SIDECAR_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SIDECAR_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the {SIDECAR_SUFFIX} sidecar is larger than {MAX_SIDECAR_BYTES} bytes"),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the {SIDECAR_SUFFIX} sidecar is not UTF-8"),
        )
    })?;
    Ok(Some(text.trim().to_owned()))
}

/// What the source notes in the inbox, beside a file it hands over
/// (`.NAME.wds-claim`): enough for an initiator restarted while the file
/// still grows to recognise it and resume its job, rather than hash the
/// longer content into a second job.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct ClaimNote {
    /// The file (a file renamed over it is another input).
    pub(super) dev: u64,
    pub(super) ino: u64,
    /// How many bytes the identity covers.
    pub(super) len: u64,
    /// The job's default message.
    pub(super) message: Option<String>,
    /// The job's input identity.
    pub(super) identity: String,
}

/// `.NAME.wds-claim` for `NAME` (a dotfile: never an input).
fn claim_note_of(path: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or(OsStr::new("input")));
    name.push(".wds-claim");
    path.with_file_name(name)
}

/// The first [`MAX_SIDECAR_BYTES`] of the regular file `path`, if it can
/// be read.
fn read_note(path: &Path) -> Option<Vec<u8>> {
    let file = match open_regular(path) {
        Ok(Ok((file, _))) => file,
        _ => return None,
    };
    let mut text = Vec::new();
    file.take(MAX_SIDECAR_BYTES).read_to_end(&mut text).ok()?;
    Some(text)
}

/// The note for `path`, if there is a readable one.
pub(super) fn read_claim_note(path: &Path) -> Option<ClaimNote> {
    serde_json::from_slice(&read_note(&claim_note_of(path))?).ok()
}

/// The display name waiting beside `path` (see
/// [`crate::source::display_name_file`]), made fit for display.
pub(super) fn read_display_name(path: &Path) -> Option<String> {
    let text = read_note(&crate::source::display_name_file(path))?;
    crate::parse::text::display_name(&String::from_utf8_lossy(&text))
}

/// Writes the note for `path` (through a temporary name, so a reader never
/// sees half of it).
pub(super) fn write_claim_note(path: &Path, note: &ClaimNote) -> io::Result<()> {
    let target = claim_note_of(path);
    let mut temp = target.clone().into_os_string();
    temp.push(".part");
    let temp = PathBuf::from(temp);
    std::fs::write(&temp, serde_json::to_vec(note).map_err(io::Error::other)?)?;
    std::fs::rename(&temp, &target)
}

/// Removes the notes beside `path` (its claim note and display name), if
/// any.
pub(super) fn remove_claim_note(path: &Path) -> io::Result<()> {
    for note in [claim_note_of(path), crate::source::display_name_file(path)] {
        match std::fs::remove_file(note) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Whether some process holds the file `stamp` names open for writing:
/// `Some(pid)` of one, `None` when none does or when it cannot be known.
///
/// On Linux this looks through `/proc/*/fd` for a descriptor of the same
/// (device, inode) whose flags (`/proc/PID/fdinfo`) allow writing (this
/// process's own read-only handles never count). Only
/// processes whose `/proc` entries this process may read are seen (its own
/// user's, or all for root). Elsewhere it always answers `None`, and the
/// settle time alone says when a quiet file is complete.
pub(super) fn writer_of(stamp: &Stamp) -> Option<u32> {
    #[cfg(target_os = "linux")]
    {
        linux_writer_of(stamp.dev, stamp.ino)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = stamp;
        None
    }
}

/// How long one look through `/proc` answers further questions: a folder
/// of many files costs one scan per this, not one per file. A writer that
/// opens a file within it is seen at the next look (and its writes restart
/// the settle time anyway).
#[cfg(target_os = "linux")]
const OPEN_FILES_FRESH: std::time::Duration = std::time::Duration::from_millis(100);

/// One descriptor of a file: its process, its `/proc/PID/fd/N` link and
/// its `/proc/PID/fdinfo/N`.
#[cfg(target_os = "linux")]
#[derive(Clone, Debug)]
struct Descriptor {
    pid: u32,
    link: PathBuf,
    info: PathBuf,
}

/// Every descriptor of a file in `/proc`, by (device, inode).
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct OpenFiles {
    at: std::time::Instant,
    by_file: std::collections::HashMap<(u64, u64), Vec<Descriptor>>,
}

#[cfg(target_os = "linux")]
static OPEN_FILES: std::sync::Mutex<Option<OpenFiles>> = std::sync::Mutex::new(None);

#[cfg(target_os = "linux")]
fn scan_open_files() -> OpenFiles {
    use std::os::unix::fs::MetadataExt;
    let mut by_file: std::collections::HashMap<_, Vec<_>> = std::collections::HashMap::new();
    let procs = std::fs::read_dir("/proc").into_iter().flatten().flatten();
    for proc_entry in procs {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let base = proc_entry.path();
        let Ok(fds) = std::fs::read_dir(base.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            // Only descriptors of files: pipes, sockets and anonymous
            // inodes read as `pipe:[…]`, `socket:[…]`, `anon_inode:…`.
            let is_file = std::fs::read_link(fd.path())
                .map(|target| target.is_absolute())
                .unwrap_or(false);
            if !is_file {
                continue;
            }
            let Ok(meta) = std::fs::metadata(fd.path()) else {
                continue;
            };
            let info = base.join("fdinfo").join(fd.file_name());
            by_file
                .entry((meta.dev(), meta.ino()))
                .or_default()
                .push(Descriptor {
                    pid,
                    link: fd.path(),
                    info,
                });
        }
    }
    OpenFiles {
        at: std::time::Instant::now(),
        by_file,
    }
}

#[cfg(target_os = "linux")]
fn linux_writer_of(dev: u64, ino: u64) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let fds = {
        let mut cache = OPEN_FILES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache
            .as_ref()
            .is_none_or(|c| c.at.elapsed() >= OPEN_FILES_FRESH)
        {
            *cache = Some(scan_open_files());
        }
        cache.as_ref()?.by_file.get(&(dev, ino))?.clone()
    };
    for Descriptor { pid, link, info } in fds {
        // Still a descriptor of that file (it may be closed or reused since).
        match std::fs::metadata(&link) {
            Ok(meta) if meta.dev() == dev && meta.ino() == ino => {}
            _ => continue,
        }
        let flags = std::fs::read_to_string(info).ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        });
        // Unknown flags count as writing: better late than early.
        let writes = flags.is_none_or(|f| f & (libc::O_ACCMODE as u32) != libc::O_RDONLY as u32);
        if writes {
            return Some(pid);
        }
    }
    None
}

/// Whether `path` still names the file of `stamp`.
pub(super) fn names(path: &Path, stamp: &Stamp) -> io::Result<bool> {
    Ok(matches!(look(path)?, Some(Kind::File(s)) if s.same_file(stamp)))
}

/// Moves the file open as `file` (with `stamp`), found at `path`, into
/// `folder` under its own name (numbered if taken); returns where it went.
///
/// When `path` still names that file it is renamed, or on another file
/// system copied through the handle, synced and then removed. When `path`
/// names another file now (or nothing), the handle's content is copied if
/// `keep_gone` (a rejected file is kept for a person to look at) and `path`
/// is left alone. Returns the target (`None`: nothing was written) and
/// whether `path` was moved.
pub(super) fn move_out(
    file: &File,
    stamp: &Stamp,
    path: &Path,
    folder: &Path,
    keep_gone: bool,
) -> io::Result<(Option<PathBuf>, bool)> {
    std::fs::create_dir_all(folder)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    if !names(path, stamp)? {
        // Archived by another initiator reading the same folder, or
        // removed or replaced by a person.
        if !keep_gone {
            return Ok((None, false));
        }
        let target = free_target(folder, name)?;
        copy_through(file, &target)?;
        return Ok((Some(target), false));
    }
    let target = free_target(folder, name)?;
    match std::fs::rename(path, &target) {
        Ok(()) => return Ok((Some(target), true)),
        Err(e) if is_cross_device(&e) => {}
        Err(e) => return Err(e),
    }
    copy_through(file, &target)?;
    // Remove the original only if it is still ours: a file renamed over it
    // meanwhile is a new input.
    if names(path, stamp)? {
        std::fs::remove_file(path)?;
    }
    Ok((Some(target), true))
}

fn is_cross_device(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(libc::EXDEV)
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// Copies the whole content of `file` to `target` (through a hidden
/// temporary name in the same folder), synced before it gets its name.
fn copy_through(file: &File, target: &Path) -> io::Result<()> {
    copy_from(file, 0, target)
}

/// Hands bytes appended to a finished file back to the folder as a new
/// file: the bytes of `file` from `from` on (appended after its job had
/// read to the end, before the file left the folder) go to
/// `stem.appended-<from>.ext` beside `path`, with a sidecar for `message`,
/// renamed into place so the scanner takes them as a new input. Returns
/// the new file's path.
pub(super) fn hand_back_appended(
    file: &File,
    from: u64,
    path: &Path,
    message: Option<&str>,
) -> io::Result<PathBuf> {
    let folder = path.parent().unwrap_or(Path::new("."));
    let as_path = Path::new(path.file_name().unwrap_or(OsStr::new("input")));
    let mut name = as_path
        .file_stem()
        .unwrap_or(OsStr::new("input"))
        .to_owned();
    name.push(format!(".appended-{from}"));
    if let Some(ext) = as_path.extension() {
        name.push(".");
        name.push(ext);
    }
    let target = free_target(folder, &name)?;
    if let Some(message) = message {
        // The sidecar first: the data file is complete once it has its name.
        std::fs::write(sidecar_of(&target), message)?;
    }
    copy_from(file, from, &target)?;
    Ok(target)
}

/// Copies `file` from byte `from` on to `target`, as [`copy_through`] does.
fn copy_from(file: &File, from: u64, target: &Path) -> io::Result<()> {
    let folder = target.parent().unwrap_or(Path::new("."));
    let mut temp_name = OsString::from(".");
    temp_name.push(target.file_name().unwrap_or(OsStr::new("input")));
    temp_name.push(".part");
    let temp = folder.join(temp_name);
    let result = (|| {
        let mut out = File::create(&temp)?;
        let mut reader = super::opened::PositionalReader::new(file);
        io::Seek::seek(&mut reader, io::SeekFrom::Start(from))?;
        io::copy(&mut reader, &mut out)?;
        out.flush()?;
        out.sync_all()?;
        std::fs::rename(&temp, target)?;
        // The new name is durable once the folder is synced.
        if let Ok(dir) = File::open(folder) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Moves `path`'s sidecar, if any, next to `target`.
pub(super) fn move_sidecar(path: &Path, target: &Path) -> io::Result<()> {
    let from = sidecar_of(path);
    let to = sidecar_of(target);
    match std::fs::rename(&from, &to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if is_cross_device(&e) => {
            // Linux answers EXDEV before looking the name up.
            let file = match open_regular(&from) {
                Ok(Ok((file, _))) => file,
                Ok(Err(_)) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            copy_through(&file, &to)?;
            std::fs::remove_file(&from)
        }
        Err(e) => Err(e),
    }
}

/// `folder/name`, or `folder/stem.N.ext` with the first `N` for which
/// neither the file nor its sidecar exists.
fn free_target(folder: &Path, name: &OsStr) -> io::Result<PathBuf> {
    let taken = |p: &Path| p.symlink_metadata().is_ok() || sidecar_of(p).symlink_metadata().is_ok();
    let candidate = folder.join(name);
    if !taken(&candidate) {
        return Ok(candidate);
    }
    let as_path = Path::new(name);
    let stem = as_path.file_stem().unwrap_or(name).to_owned();
    let ext = as_path.extension().map(OsStr::to_owned);
    for n in 1..=10_000u32 {
        let mut numbered = stem.clone();
        numbered.push(format!(".{n}"));
        if let Some(ext) = &ext {
            numbered.push(".");
            numbered.push(ext);
        }
        let candidate = folder.join(numbered);
        if !taken(&candidate) {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "no free name for {} in {}",
            as_path.display(),
            folder.display()
        ),
    ))
}

/// Writes `reason` next to a rejected file, as `name.reason.txt`.
pub(super) fn write_reason(target: &Path, reason: &str) -> io::Result<()> {
    let mut name = target.as_os_str().to_owned();
    name.push(".reason.txt");
    std::fs::write(PathBuf::from(name), format!("{reason}\n"))
}

/// The file name of `path`, for messages and input names.
pub(super) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_writer_is_seen_until_it_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.csv");
        std::fs::write(&path, "u1\n").unwrap();
        let stamp = Stamp::of(&std::fs::metadata(&path).unwrap());
        // Another process holds it open for appending.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("exec 3>>'{}'; read x", path.display()))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while writer_of(&stamp).is_none() {
            assert!(std::time::Instant::now() < deadline, "writer never seen");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(child.stdin.take());
        child.wait().unwrap();
        assert_eq!(writer_of(&stamp), None);
        // A reader is not a writer.
        let _reader = File::open(&path).unwrap();
        assert_eq!(writer_of(&stamp), None);
    }

    #[test]
    fn symlinks_and_fifos_are_refused_through_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        std::fs::write(&target, "secret\n").unwrap();
        let link = dir.path().join("l.csv");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(open_regular(&link).unwrap().err(), Some("a symbolic link"));
        let fifo = dir.path().join("f.csv");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Opening does not block on a FIFO without a writer.
        assert_eq!(open_regular(&fifo).unwrap().err(), Some("a FIFO"));
        assert_eq!(look(&fifo).unwrap(), Some(Kind::Other("a FIFO")));
        let device = Path::new("/dev/null");
        assert_eq!(look(device).unwrap(), Some(Kind::Other("a device")));
        assert_eq!(open_regular(device).unwrap().err(), Some("a device"));
        assert_eq!(look(dir.path()).unwrap(), Some(Kind::Other("a directory")));
    }
}

#[cfg(all(test, target_os = "linux"))]
mod move_tests {
    use super::*;

    #[test]
    fn a_file_moves_to_another_file_system_through_its_handle() {
        let shm = Path::new("/dev/shm");
        assert!(shm.is_dir(), "needs /dev/shm for a second file system");
        let inbox = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir_in(shm).unwrap();
        let path = inbox.path().join("a.csv");
        std::fs::write(&path, "u1\nu2\n").unwrap();
        std::fs::write(sidecar_of(&path), "hi").unwrap();
        let (file, stamp) = open_regular(&path).unwrap().unwrap();
        let folder = other.path().join("done");
        let (target, moved) = move_out(&file, &stamp, &path, &folder, false).unwrap();
        let target = target.unwrap();
        assert!(moved);
        move_sidecar(&path, &target).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "u1\nu2\n");
        assert_eq!(std::fs::read_to_string(sidecar_of(&target)).unwrap(), "hi");
        assert!(!path.exists() && !sidecar_of(&path).exists());
        assert_eq!(
            std::fs::read_dir(&folder).unwrap().count(),
            2,
            "no temporary left"
        );

        // Without a sidecar.
        let path = inbox.path().join("b.csv");
        std::fs::write(&path, "u3\n").unwrap();
        let (file, stamp) = open_regular(&path).unwrap().unwrap();
        let (target, _) = move_out(&file, &stamp, &path, &folder, false).unwrap();
        let target = target.unwrap();
        move_sidecar(&path, &target).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "u3\n");
        assert!(!path.exists());
        // Gone already (another initiator archived it): nothing to do,
        // unless it is kept for a person to look at (rejected).
        assert_eq!(
            move_out(&file, &stamp, &path, &folder, false).unwrap(),
            (None, false)
        );
        let (kept, moved) = move_out(&file, &stamp, &path, &folder, true).unwrap();
        assert!(!moved);
        assert_eq!(std::fs::read_to_string(kept.unwrap()).unwrap(), "u3\n");
    }

    #[test]
    fn appended_bytes_are_handed_back_as_a_file_of_their_own() {
        let inbox = tempfile::tempdir().unwrap();
        let path = inbox.path().join("users.csv");
        std::fs::write(&path, "u1,a\nu2,b\n").unwrap();
        let (file, _) = open_regular(&path).unwrap().unwrap();
        // Read to its end (6 + 5 bytes), then appended to.
        let mut more = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut more, b"u3,c\nu4,d\n").unwrap();
        let new = hand_back_appended(&file, 10, &path, Some("hello")).unwrap();
        assert_eq!(new, inbox.path().join("users.appended-10.csv"));
        assert_eq!(std::fs::read_to_string(&new).unwrap(), "u3,c\nu4,d\n");
        assert_eq!(std::fs::read_to_string(sidecar_of(&new)).unwrap(), "hello");
        // A second hand-back at the same offset takes a free name.
        let again = hand_back_appended(&file, 10, &path, None).unwrap();
        assert_eq!(again, inbox.path().join("users.appended-10.1.csv"));
        let names: Vec<_> = std::fs::read_dir(inbox.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(names.is_empty(), "temporaries left: {names:?}");
    }
}
