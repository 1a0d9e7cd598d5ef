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
//! Crash safety: the stamp is voided before the first change of an operation and written again
//! only after the buckets are, so an interrupted operation leaves no valid stamp (a torn stamp
//! matches nothing; after a power loss the boot ID differs). Files are rewritten in place: on
//! ext4 a new inode or a rename over a file costs far more than the whole rest of an ADD.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, fstat, fstatat};

use super::store::{Holder, Holding, LAST_RESERVED_PREFIX, overwrite, read_limited};

/// The hidden directory under `dataDir` holding one index directory per network.
const INDEX_DIR: &str = ".cnibox";
const STAMP: &str = "stamp";
const STAMP_VERSION: &str = "cnibox-host-local-index 1";
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

pub struct Index {
    dir: Option<OwnedFd>,
    state: State,
    /// Buckets read or rebuilt in this operation.
    buckets: BTreeMap<usize, Vec<Holding>>,
    dirty: BTreeSet<usize>,
    /// The `last_reserved_ip.*` names the stamp fingerprints.
    lasts: BTreeSet<String>,
    stamp_voided: bool,
}

impl Index {
    /// Opens (creating) the index of `network` and checks its stamp against `net_dir`.
    /// `set_count` range sets are configured: their `last_reserved_ip.<N>` files must be known.
    pub fn open(data_dir: &Path, network: &str, net_dir: &OwnedFd, set_count: usize) -> Index {
        let mut index = Index {
            dir: open_index_dir(data_dir, network).ok(),
            state: State::Disabled,
            buckets: BTreeMap::new(),
            dirty: BTreeSet::new(),
            lasts: BTreeSet::new(),
            stamp_voided: false,
        };
        let Some(dir) = &index.dir else {
            return index;
        };
        index.state = State::Stale;
        let Ok(stamp) = read_limited(dir, STAMP, SMALL) else {
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
        if !unknown_last_exists && fingerprint(net_dir, &lasts).as_deref() == Some(stamp.as_str()) {
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
        let Some(dir) = &self.dir else { return Ok(()) };
        if !self.stamp_voided {
            match overwrite(dir, STAMP, b"void\n", false) {
                Ok(()) | Err(Errno::ENOENT) => self.stamp_voided = true,
                Err(e) => return Err(e),
            }
        }
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

    /// `last_reserved_ip.<N>` was (re)written.
    pub fn wrote_last(&mut self, name: &str) {
        self.lasts.insert(name.to_string());
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
            let name = bucket_name(*bucket);
            let text: String = self
                .buckets
                .get(bucket)
                .into_iter()
                .flatten()
                .map(line)
                .collect();
            // An empty bucket that has no file needs none.
            match overwrite(dir, &name, text.as_bytes(), !text.is_empty()) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(_) => return,
            }
        }
        if let Some(stamp) = fingerprint(net_dir, &self.lasts) {
            let _ = overwrite(dir, STAMP, stamp.as_bytes(), true);
        }
    }

    /// A bucket's lines, read on first use; `None` (and the index distrusted) when unusable.
    fn bucket(&mut self, bucket: usize) -> Option<&mut Vec<Holding>> {
        if self.state != State::Trusted {
            return None;
        }
        if !self.buckets.contains_key(&bucket) {
            let lines = self.dir.as_ref().and_then(|d| read_bucket(d, bucket));
            match lines {
                Some(lines) => {
                    self.buckets.insert(bucket, lines);
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

fn open_index_dir(data_dir: &Path, network: &str) -> nix::Result<OwnedFd> {
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let data = nix::fcntl::open(
        data_dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut parent = data;
    for component in [INDEX_DIR, network] {
        match nix::sys::stat::mkdirat(&parent, component, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        parent = openat(&parent, component, dir_flags, Mode::empty())?;
    }
    Ok(parent)
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

fn read_bucket(dir: &OwnedFd, bucket: usize) -> Option<Vec<Holding>> {
    let bytes = match read_limited(dir, &bucket_name(bucket), BUCKET_LIMIT) {
        Ok(bytes) => bytes,
        Err(Errno::ENOENT) => return Some(Vec::new()),
        Err(_) => return None,
    };
    let text = String::from_utf8(bytes).ok()?;
    text.lines()
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
        .collect()
}

/// What the stamp records about the data directory now; `None` if it cannot be read.
fn fingerprint(net_dir: &OwnedFd, lasts: &BTreeSet<String>) -> Option<String> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let st = fstat(net_dir.as_fd()).ok()?;
    let mut text = format!(
        "{STAMP_VERSION}\nboot {}\ndir {} {} {}.{} {}.{}\n",
        boot_id.trim(),
        st.st_dev,
        st.st_ino,
        st.st_mtime,
        st.st_mtime_nsec,
        st.st_ctime,
        st.st_ctime_nsec
    );
    for name in lasts {
        match fstatat(net_dir.as_fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let content = read_limited(net_dir, name, SMALL).unwrap_or_default();
                text.push_str(&format!(
                    "last {name} {} {} {}.{} {:016x}\n",
                    st.st_ino,
                    st.st_size,
                    st.st_mtime,
                    st.st_mtime_nsec,
                    fnv1a(&content)
                ));
            }
            Err(Errno::ENOENT) => text.push_str(&format!("last {name} absent\n")),
            Err(_) => return None,
        }
    }
    Some(text)
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
