//! An owner index beside the data directory, so that ADD's duplicate check, DEL and CHECK find a
//! container's reservations without reading every file.
//!
//! The reservation files stay the only truth (the Go plugin knows nothing of the index). The index
//! lives in `<dataDir>/.cnibox/<network>/`: 256 bucket files `bXX` (by a hash of the container
//! ID) of `<file name> <container ID> [<ifname>]` lines, and a `stamp` describing the network
//! directory as it was when the buckets last matched it: boot ID, the directory's device, inode,
//! mtime and ctime (any file created or removed there changes them; since Linux 6.13 they are
//! fine-grained once read), and the inode, size, mtime and a hash of the content of every
//! `last_reserved_ip.*` file (which every Go ADD rewrites). Any difference means someone else
//! changed the directory: the next lookup reads every file once and rebuilds the buckets.
//!
//! Crash safety: the stamp is voided (its start overwritten with `void`) before the first change
//! of an operation and written again only after the buckets are, so an interrupted operation
//! leaves no valid stamp (a torn stamp matches nothing; after a power loss the boot ID differs).
//! Files are rewritten in place: on ext4 a new inode or a rename over a file costs far more than
//! the whole rest of an ADD. The stamp and the buckets read stay open from their reading to their
//! rewriting.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, fstat, fstatat, mkdirat};

use super::store::{
    Holder, Holding, LAST_RESERVED_PREFIX, errno, file_size, open_dir, open_regular, overwrite,
    read_to_limit, rewrite,
};

/// The hidden directory under `dataDir` holding one index directory per network.
const INDEX_DIR: &str = ".cnibox";
const STAMP: &str = "stamp";
const STAMP_VERSION: &str = "cnibox-host-local-index 1";
/// What a voided stamp starts with.
const VOID: &[u8] = b"void\n";
const BUCKETS: usize = 256;
const SMALL: u64 = 64 * 1024;
const BUCKET_LIMIT: u64 = 64 * 1024 * 1024;

/// FNV-1a, 64 bit: stable across builds and versions, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn bucket_of(id: &str) -> usize {
    (fnv1a(id.as_bytes()) % BUCKETS as u64) as usize
}

fn bucket_name(bucket: usize) -> String {
    format!("b{bucket:02x}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No index directory: every lookup reads the data directory.
    Disabled,
    /// The stamp did not match: the buckets say nothing until rebuilt.
    Stale,
    /// The buckets describe the data directory.
    Trusted,
}

/// The stamp file as opening the index found it.
enum Stamp {
    /// None yet: voiding it needs nothing, the commit creates it.
    Missing,
    /// Open for reading and writing, so that voiding and rewriting it reopen nothing.
    Open(OpenFile),
    /// Something that cannot be opened as a regular file: the index cannot be kept current.
    Unusable,
}

/// What this operation knows of one `last_reserved_ip.*` file.
struct LastFile {
    /// Its stamp line; `None` once rewritten here, until the commit looks at it again.
    line: Option<String>,
    /// What it holds (empty if not a readable regular file), for the allocator.
    content: Vec<u8>,
}

/// A file as read, kept open to be rewritten in place; `size` is its length now.
struct OpenFile {
    file: File,
    size: u64,
}

pub struct Index {
    dir: Option<OwnedFd>,
    stamp: Stamp,
    state: State,
    /// Buckets read or rebuilt in this operation.
    buckets: BTreeMap<usize, Vec<Holding>>,
    bucket_files: BTreeMap<usize, OpenFile>,
    dirty: BTreeSet<usize>,
    /// The `last_reserved_ip.*` names the stamp fingerprints.
    lasts: BTreeSet<String>,
    /// The `last_reserved_ip.*` files looked at or written in this operation, by name.
    last_files: BTreeMap<String, LastFile>,
    stamp_voided: bool,
}

impl Index {
    /// Opens (creating) the index of `network` and checks its stamp against `net_dir`.
    /// `set_count` range sets are configured: their `last_reserved_ip.<N>` files must be known.
    pub fn open(data_dir: &Path, network: &str, net_dir: &OwnedFd, set_count: usize) -> Index {
        let mut index = Index {
            dir: open_index_dir(data_dir, network).ok(),
            stamp: Stamp::Missing,
            state: State::Disabled,
            buckets: BTreeMap::new(),
            bucket_files: BTreeMap::new(),
            dirty: BTreeSet::new(),
            lasts: BTreeSet::new(),
            last_files: BTreeMap::new(),
            stamp_voided: false,
        };
        let Some(dir) = &index.dir else {
            return index;
        };
        index.state = State::Stale;
        let stamp = match open_regular(dir, STAMP, OFlag::O_RDWR) {
            Ok((file, st)) => {
                let size = file_size(&st);
                let text = read_to_limit(&file, size, SMALL);
                index.stamp = Stamp::Open(OpenFile { file, size });
                text
            }
            Err(Errno::ENOENT) => return index,
            Err(_) => {
                index.stamp = Stamp::Unusable;
                return index;
            }
        };
        let Ok(stamp) = stamp else {
            return index;
        };
        let Ok(stamp) = String::from_utf8(stamp) else {
            return index;
        };
        let lasts: BTreeSet<String> = stamp
            .lines()
            .filter_map(|line| line.strip_prefix("last "))
            .filter_map(|rest| rest.split(' ').next())
            .map(str::to_string)
            .collect();
        let unknown_last_exists = (0..set_count).any(|n| {
            let name = format!("{LAST_RESERVED_PREFIX}{n}");
            !lasts.contains(&name)
                && fstatat(net_dir.as_fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    != Err(Errno::ENOENT)
        });
        if unknown_last_exists {
            return index;
        }
        for name in &lasts {
            match look_at_last(net_dir, name) {
                Some(found) => index.last_files.insert(name.clone(), found),
                None => return index,
            };
        }
        if index.fingerprint(net_dir, &lasts).as_deref() == Some(stamp.as_str()) {
            index.state = State::Trusted;
            index.lasts = lasts;
        }
        index
    }

    pub fn trusted(&self) -> bool {
        self.state == State::Trusted
    }

    /// The reservations the index lists for container `id`; `None` when it cannot tell.
    pub fn lookup(&mut self, id: &str) -> Option<Vec<Holding>> {
        let bucket = bucket_of(id);
        let lines = self.bucket(bucket)?;
        Some(
            lines
                .iter()
                .filter(|h| h.holder.id == id)
                .cloned()
                .collect(),
        )
    }

    /// Replaces the whole index with what a full read of the data directory found.
    pub fn rebuild(&mut self, holdings: &[Holding], lasts: impl IntoIterator<Item = String>) {
        if self.state == State::Disabled {
            return;
        }
        self.buckets = (0..BUCKETS).map(|b| (b, Vec::new())).collect();
        for holding in holdings {
            if !indexable(holding) {
                // Cannot be written as a line: go on without an index for this directory.
                self.state = State::Stale;
                return;
            }
            if let Some(lines) = self.buckets.get_mut(&bucket_of(&holding.holder.id)) {
                lines.push(holding.clone());
            }
        }
        self.dirty = (0..BUCKETS).collect();
        self.lasts = lasts.into_iter().collect();
        self.state = State::Trusted;
    }

    /// Called before the data directory changes: the stamp is voided first.
    pub fn before_change(&mut self) {
        if self.void_stamp().is_err() {
            self.state = State::Stale;
        }
    }

    fn void_stamp(&mut self) -> nix::Result<()> {
        if self.dir.is_none() || self.stamp_voided {
            return Ok(());
        }
        match &mut self.stamp {
            // A stamp starting so matches no fingerprint. The rest stays: truncating the file to
            // nothing would free its block, and ext4 flushes a file rewritten after that on close.
            Stamp::Open(stamp) => {
                stamp.file.write_all_at(VOID, 0).map_err(errno)?;
                stamp.size = stamp.size.max(VOID.len() as u64);
            }
            Stamp::Missing => {}
            Stamp::Unusable => return Err(Errno::EINVAL),
        }
        self.stamp_voided = true;
        Ok(())
    }

    pub fn added(&mut self, holding: &Holding) {
        if !indexable(holding) {
            self.distrust();
        }
        let bucket = bucket_of(&holding.holder.id);
        if let Some(lines) = self.bucket(bucket) {
            lines.retain(|h| h.name != holding.name);
            lines.push(holding.clone());
            self.dirty.insert(bucket);
        }
    }

    pub fn removed(&mut self, holding: &Holding) {
        let bucket = bucket_of(&holding.holder.id);
        if let Some(lines) = self.bucket(bucket) {
            lines.retain(|h| h.name != holding.name);
            self.dirty.insert(bucket);
        }
    }

    /// `last_reserved_ip.<N>` was (re)written with `content`.
    pub fn wrote_last(&mut self, name: &str, content: &[u8]) {
        self.lasts.insert(name.to_string());
        self.last_files.insert(
            name.to_string(),
            LastFile {
                line: None,
                content: content.to_vec(),
            },
        );
    }

    /// The content of `last_reserved_ip.*` file `name` when this operation has seen it (empty
    /// when it was missing or unreadable): under the lock it is still that.
    pub fn known_last(&self, name: &str) -> Option<&[u8]> {
        self.last_files.get(name).map(|f| f.content.as_slice())
    }

    /// Something does not match what the index said: rebuild next time.
    pub fn distrust(&mut self) {
        if self.state == State::Trusted {
            self.state = State::Stale;
        }
    }

    /// Writes the changed buckets, then the stamp. Failures only leave the index stale.
    pub fn commit(&mut self, net_dir: &OwnedFd) {
        if self.state != State::Trusted || (self.dirty.is_empty() && !self.stamp_voided) {
            return;
        }
        // Buckets change only under a void stamp, or a crash could pair them with an old one.
        if self.void_stamp().is_err() {
            return;
        }
        let Some(dir) = &self.dir else { return };
        for bucket in &self.dirty {
            let text: String = self
                .buckets
                .get(bucket)
                .into_iter()
                .flatten()
                .map(line)
                .collect();
            let written = match self.bucket_files.get(bucket) {
                Some(OpenFile { file, size }) => rewrite(file, *size, text.as_bytes()),
                // An empty bucket that has no file needs none.
                None => overwrite(
                    dir,
                    &bucket_name(*bucket),
                    text.as_bytes(),
                    !text.is_empty(),
                ),
            };
            match written {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(_) => return,
            }
        }
        let Some(stamp) = self.fingerprint(net_dir, &self.lasts) else {
            return;
        };
        match &self.stamp {
            Stamp::Open(OpenFile { file, size }) => {
                let _ = rewrite(file, *size, stamp.as_bytes());
            }
            Stamp::Missing => {
                let _ = overwrite(dir, STAMP, stamp.as_bytes(), true);
            }
            // Voiding it failed, so the commit stopped above.
            Stamp::Unusable => {}
        }
    }

    /// What the stamp records about the data directory and its `lasts` now; `None` if it cannot
    /// be read. A `last_reserved_ip.*` file looked at before in this operation is described as it
    /// was then: under the lock only this operation changes it, and notes what it wrote.
    fn fingerprint(&self, net_dir: &OwnedFd, lasts: &BTreeSet<String>) -> Option<String> {
        let st = fstat(net_dir.as_fd()).ok()?;
        let mut text = format!(
            "{STAMP_VERSION}\nboot {}\ndir {} {} {}.{} {}.{}\n",
            boot_id(),
            st.st_dev,
            st.st_ino,
            st.st_mtime,
            st.st_mtime_nsec,
            st.st_ctime,
            st.st_ctime_nsec
        );
        for name in lasts {
            let line = match self.last_files.get(name) {
                Some(LastFile {
                    line: Some(line), ..
                }) => line.clone(),
                // Rewritten here: its metadata changed, its content is what was written.
                Some(LastFile {
                    line: None,
                    content,
                }) => match fstatat(net_dir.as_fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => last_line(name, &st, content),
                    Err(Errno::ENOENT) => absent_line(name),
                    Err(_) => return None,
                },
                None => look_at_last(net_dir, name)?.line?,
            };
            text.push_str(&line);
        }
        Some(text)
    }

    /// A bucket's lines, read on first use; `None` (and the index distrusted) when unusable.
    fn bucket(&mut self, bucket: usize) -> Option<&mut Vec<Holding>> {
        if self.state != State::Trusted {
            return None;
        }
        if !self.buckets.contains_key(&bucket) {
            let read = self.dir.as_ref().and_then(|d| read_bucket(d, bucket));
            match read {
                Some((lines, file)) => {
                    self.buckets.insert(bucket, lines);
                    if let Some(file) = file {
                        self.bucket_files.insert(bucket, file);
                    }
                }
                None => {
                    self.state = State::Stale;
                    return None;
                }
            }
        }
        self.buckets.get_mut(&bucket)
    }
}

/// Opens `<dataDir>/.cnibox/<network>`, creating what is missing, never through a symlink.
fn open_index_dir(data_dir: &Path, network: &str) -> nix::Result<OwnedFd> {
    let top = open_or_make_dir(AT_FDCWD, &data_dir.join(INDEX_DIR))?;
    open_or_make_dir(top.as_fd(), network)
}

/// Opens directory `path` in `parent`, creating it (mode 0700) first only if it is missing.
fn open_or_make_dir<P: ?Sized + nix::NixPath>(
    parent: BorrowedFd,
    path: &P,
) -> nix::Result<OwnedFd> {
    match open_dir(parent, path) {
        Err(Errno::ENOENT) => {
            match mkdirat(parent, path, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            open_dir(parent, path)
        }
        opened => opened,
    }
}

/// Lines hold whitespace-separated fields: names and owners with whitespace cannot be indexed.
fn indexable(h: &Holding) -> bool {
    let clean = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace);
    clean(&h.name) && clean(&h.holder.id) && h.holder.ifname.as_deref().is_none_or(clean)
}

fn line(h: &Holding) -> String {
    match &h.holder.ifname {
        Some(ifname) => format!("{} {} {ifname}\n", h.name, h.holder.id),
        None => format!("{} {}\n", h.name, h.holder.id),
    }
}

/// A bucket's lines and its file (none when it has none); `None` when it cannot be used.
fn read_bucket(dir: &OwnedFd, bucket: usize) -> Option<(Vec<Holding>, Option<OpenFile>)> {
    let (file, bytes) = match open_regular(dir, &bucket_name(bucket), OFlag::O_RDWR) {
        Ok((file, st)) => {
            let bytes = read_to_limit(&file, file_size(&st), BUCKET_LIMIT).ok()?;
            (file, bytes)
        }
        Err(Errno::ENOENT) => return Some((Vec::new(), None)),
        Err(_) => return None,
    };
    let size = bytes.len() as u64;
    let text = String::from_utf8(bytes).ok()?;
    let lines = text
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let (name, id, ifname) = match fields[..] {
                [name, id] => (name, id, None),
                [name, id, ifname] => (name, id, Some(ifname.to_string())),
                _ => return None,
            };
            let holding = Holding {
                name: name.to_string(),
                holder: Holder {
                    id: id.to_string(),
                    ifname,
                },
            };
            (indexable(&holding) && bucket_of(id) == bucket).then_some(holding)
        })
        .collect::<Option<Vec<Holding>>>()?;
    Some((lines, Some(OpenFile { file, size })))
}

/// This boot's ID, read once per process.
fn boot_id() -> &'static str {
    static BOOT_ID: OnceLock<String> = OnceLock::new();
    BOOT_ID.get_or_init(|| {
        // One read: the kernel hands out the whole 37-byte line at once.
        let mut line = [0; 64];
        let path = "/proc/sys/kernel/random/boot_id";
        let read = openat(
            AT_FDCWD,
            path,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .and_then(|fd| nix::unistd::read(&fd, &mut line));
        let text = read.ok().and_then(|n| std::str::from_utf8(&line[..n]).ok());
        text.unwrap_or_default().trim().to_string()
    })
}

fn last_line(name: &str, st: &FileStat, content: &[u8]) -> String {
    format!(
        "last {name} {} {} {}.{} {:016x}\n",
        st.st_ino,
        st.st_size,
        st.st_mtime,
        st.st_mtime_nsec,
        fnv1a(content)
    )
}

fn absent_line(name: &str) -> String {
    format!("last {name} absent\n")
}

/// Describes `last_reserved_ip.*` file `name` for the stamp, reading it once for both the line
/// and its content; `None` if it cannot be looked at.
fn look_at_last(net_dir: &OwnedFd, name: &str) -> Option<LastFile> {
    let (st, content) = match open_regular(net_dir, name, OFlag::O_RDONLY) {
        Ok((file, st)) => {
            let content = read_to_limit(&file, file_size(&st), SMALL).unwrap_or_default();
            (st, content)
        }
        // Not a regular file it may open (a symlink, say): described by its own metadata.
        Err(_) => match fstatat(net_dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => (st, Vec::new()),
            Err(Errno::ENOENT) => {
                return Some(LastFile {
                    line: Some(absent_line(name)),
                    content: Vec::new(),
                });
            }
            Err(_) => return None,
        },
    };
    Some(LastFile {
        line: Some(last_line(name, &st, &content)),
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_the_reference_function() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn lines_round_trip_and_reject_garbage() {
        let h = |name: &str, id: &str, ifname: Option<&str>| Holding {
            name: name.into(),
            holder: Holder {
                id: id.into(),
                ifname: ifname.map(String::from),
            },
        };
        assert_eq!(
            line(&h("10.0.0.2", "c1", Some("eth0"))),
            "10.0.0.2 c1 eth0\n"
        );
        assert_eq!(line(&h("10.0.0.3", "c1", None)), "10.0.0.3 c1\n");
        assert!(indexable(&h("10.0.0.2", "c1", Some("eth0"))));
        assert!(!indexable(&h("10.0.0.2", "c 1", None)));
        assert!(!indexable(&h("a b", "c1", None)));
        assert!(!indexable(&h("x", "c1", Some(""))));
    }
}
