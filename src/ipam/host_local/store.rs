//! The data directory, in the Go plugin's layout: `<dataDir>/<network>/` holds one file per
//! reserved address named by the address and holding `<containerID>\r\n<ifname>` (older versions
//! wrote the container ID alone), `last_reserved_ip.<N>` per range set, and `lock`, which every
//! operation holds with `flock(LOCK_EX)` for its whole read-modify-write, as the Go plugin does
//! per allocator call: the two exclude each other.
//!
//! Every access goes through the directory's descriptor and never follows a symlink: a
//! reservation is written to a temporary file and hard-linked to its name (which fails if the
//! name exists in any form, a dangling symlink included), so it is never half-written.

use std::fs::{DirBuilder, File};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};

use nix::NixPath;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, Flock, FlockArg, OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::{AccessFlags, UnlinkatFlags, faccessat, linkat, unlinkat};

use super::index::Index;
use super::range::canonical;
use crate::cni::{CniError, CniResult};

pub const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const LOCK: &str = "lock";
/// The staging name of files being written; only ever present under the lock.
const TEMP: &str = ".cnibox-tmp";
/// More than any container ID and interface name; larger files hold no owner.
const CONTENT_LIMIT: u64 = 64 * 1024;

/// Who a reservation file names: `ifname` is `None` in the ID-only files of old versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub id: String,
    pub ifname: Option<String>,
}

impl Holder {
    pub fn new(id: &str, ifname: &str) -> Holder {
        Holder {
            id: id.trim().to_string(),
            ifname: Some(ifname.to_string()),
        }
    }

    /// The file content the reference writes: `<id>\r\n<ifname>`.
    pub fn content(&self) -> String {
        match &self.ifname {
            Some(ifname) => format!("{}\r\n{ifname}", self.id),
            None => self.id.clone(),
        }
    }

    /// Reads a file's content the way the reference compares it: whitespace-trimmed, then either
    /// `<id>\r\n<ifname>` or a bare ID.
    pub fn parse(bytes: &[u8]) -> Option<Holder> {
        let text = std::str::from_utf8(bytes).ok()?.trim();
        if text.is_empty() {
            return None;
        }
        Some(match text.split_once("\r\n") {
            Some((id, ifname)) => Holder {
                id: id.to_string(),
                ifname: Some(ifname.to_string()),
            },
            None => Holder {
                id: text.to_string(),
                ifname: None,
            },
        })
    }

    /// Whether a file with this holder counts as `key`'s: the same ID and interface, or the
    /// same ID in an old ID-only file.
    pub fn belongs_to(&self, key: &Holder) -> bool {
        self.id == key.id && (self.ifname.is_none() || self.ifname == key.ifname)
    }
}

/// A reservation file and its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub name: String,
    pub holder: Holder,
}

impl Holding {
    pub fn ip(&self) -> Option<IpAddr> {
        reservation_ip(&self.name)
    }
}

/// The address a file name stands for: only names in the canonical form the plugins write.
pub fn reservation_ip(name: &str) -> Option<IpAddr> {
    let ip: IpAddr = name.parse().ok()?;
    (canonical(ip) == ip && ip.to_string() == name).then_some(ip)
}

/// What a directory entry turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    Held(Holder),
    /// A regular file naming no owner: empty, too large, or not text.
    Unowned,
    Symlink,
    /// A directory, device, FIFO or socket: never ours.
    Other,
}

/// How every file here is opened: never through a symlink, never waiting for a FIFO's other end,
/// never becoming a controlling terminal.
const FILE_FLAGS: OFlag = OFlag::O_NOFOLLOW
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_CLOEXEC);

pub fn errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Opens the regular file `name` in `dir` with `flags` (created mode 0600 with `O_CREAT`), never
/// through a symlink (`ELOOP`), refusing other file types (`EINVAL`). Returns it and its `fstat`.
pub fn open_regular(dir: &OwnedFd, name: &str, flags: OFlag) -> Result<(File, FileStat), Errno> {
    let fd = openat(
        dir,
        name,
        flags | FILE_FLAGS,
        Mode::from_bits_truncate(0o600),
    )?;
    let st = fstat(fd.as_fd())?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(Errno::EINVAL);
    }
    Ok((File::from(fd), st))
}

pub fn file_size(st: &FileStat) -> u64 {
    u64::try_from(st.st_size).unwrap_or(0)
}

/// Reads `file`, `size` bytes long by its `fstat`, to the end; over `limit` bytes is `EFBIG`.
pub fn read_to_limit(mut file: &File, size: u64, limit: u64) -> Result<Vec<u8>, Errno> {
    // Room for more than `size`, so that a read stopping right at `size` is known to have hit the
    // end without one more read returning nothing.
    let mut bytes = vec![0; size.min(limit) as usize + 1];
    let mut len = 0;
    loop {
        let n = match file.read(&mut bytes[len..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(errno(e)),
        };
        len += n;
        if n == 0 || (len as u64 == size && len < bytes.len()) {
            break;
        }
        if len as u64 > limit {
            return Err(Errno::EFBIG);
        }
        if len == bytes.len() {
            bytes.resize((2 * len).min(limit as usize + 1), 0);
        }
    }
    bytes.truncate(len);
    Ok(bytes)
}

/// Reads the regular file `name` in `dir` without following a symlink (`ELOOP`), refusing other
/// file types (`EINVAL`) and files over `limit` bytes (`EFBIG`).
pub fn read_limited(dir: &OwnedFd, name: &str, limit: u64) -> Result<Vec<u8>, Errno> {
    let (file, st) = open_regular(dir, name, OFlag::O_RDONLY)?;
    read_to_limit(&file, file_size(&st), limit)
}

/// Replaces the content of `file`, `size` bytes long, with `bytes` in place. Not atomic: for
/// files whose torn content is harmless.
pub fn rewrite(file: &File, size: u64, bytes: &[u8]) -> Result<(), Errno> {
    file.write_all_at(bytes, 0).map_err(errno)?;
    // Content no shorter than the old covers all of it: nothing to cut off.
    if (bytes.len() as u64) < size {
        file.set_len(bytes.len() as u64).map_err(errno)?;
    }
    Ok(())
}

/// Rewrites the regular file `name` in `dir` in place (created, mode 0600, if `create`), never
/// through a symlink (`ELOOP`) nor into another file type (`EINVAL`). Not atomic: for files
/// whose torn content is harmless.
pub fn overwrite(dir: &OwnedFd, name: &str, bytes: &[u8], create: bool) -> Result<(), Errno> {
    let mut flags = OFlag::O_WRONLY;
    if create {
        flags |= OFlag::O_CREAT;
    }
    let (file, st) = open_regular(dir, name, flags)?;
    rewrite(&file, file_size(&st), bytes)
}

/// Opens directory `path` (relative to `parent`) without following a symlink at its end.
pub fn open_dir<P: ?Sized + NixPath>(parent: impl AsFd, path: &P) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    openat(parent, path, flags, Mode::empty())
}

fn inspect(dir: &OwnedFd, name: &str) -> Result<Option<Found>, Errno> {
    match read_limited(dir, name, CONTENT_LIMIT) {
        Ok(bytes) => Ok(Some(
            Holder::parse(&bytes).map_or(Found::Unowned, Found::Held),
        )),
        Err(Errno::ENOENT) => Ok(None),
        Err(Errno::ELOOP) => Ok(Some(Found::Symlink)),
        Err(Errno::EFBIG) => Ok(Some(Found::Unowned)),
        Err(Errno::EINVAL) => Ok(Some(Found::Other)),
        Err(e) => Err(e),
    }
}

/// The directory's entries but `lock` and `last_reserved_ip.*`, and the names of the latter.
struct Listing {
    entries: Vec<(String, Found)>,
    lasts: Vec<String>,
}

/// The open, locked data directory of one network.
pub struct Store {
    path: PathBuf,
    dir: OwnedFd,
    _lock: Flock<File>,
    index: Index,
}

impl Store {
    /// Creates `<dataDir>/<network>` if needed (mode 0755, as the reference), then takes the lock.
    /// `set_count` is the number of configured range sets.
    pub fn open(data_dir: &Path, network: &str, set_count: usize) -> CniResult<Store> {
        let path = data_dir.join(network);
        // It exists but on a network's first call, so open first; when that fails, create it
        // (which also reports a file in the way as the reference does) and open again.
        let dir = match open_dir(AT_FDCWD, &path) {
            Ok(dir) => dir,
            Err(_) => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&path)
                    .map_err(|e| CniError::internal(format!("mkdir {}: {e}", path.display())))?;
                open_dir(AT_FDCWD, &path).map_err(|e| {
                    CniError::internal(format!("open {}: {}", path.display(), e.desc()))
                })?
            }
        };
        let lock_flags = OFlag::O_CREAT | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        // The reference's lock (go-filemutex) is created with mode 0750.
        let mut lock_file = File::from(
            openat(&dir, LOCK, lock_flags, Mode::from_bits_truncate(0o750)).map_err(|e| {
                CniError::internal(format!("open {}: {}", path.join(LOCK).display(), e.desc()))
            })?,
        );
        let lock = loop {
            match Flock::lock(lock_file, FlockArg::LockExclusive) {
                Ok(lock) => break lock,
                Err((file, Errno::EINTR)) => lock_file = file,
                Err((_, e)) => {
                    return Err(CniError::internal(format!(
                        "flock {}: {}",
                        path.join(LOCK).display(),
                        e.desc()
                    )));
                }
            }
        };
        let index = Index::open(data_dir, network, &dir, set_count);
        Ok(Store {
            path,
            dir,
            _lock: lock,
            index,
        })
    }

    /// Like [`Store::open`], but `None` when the network has no directory yet.
    pub fn open_existing(
        data_dir: &Path,
        network: &str,
        set_count: usize,
    ) -> CniResult<Option<Store>> {
        match std::fs::symlink_metadata(data_dir.join(network)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            _ => Store::open(data_dir, network, set_count).map(Some),
        }
    }

    fn error(&self, op: &str, name: &str, e: Errno) -> CniError {
        CniError::internal(format!(
            "{op} {}: {}",
            self.path.join(name).display(),
            e.desc()
        ))
    }

    /// The address last reserved in range set `set`, if the file holds one.
    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        let name = format!("{LAST_RESERVED_PREFIX}{set}");
        // Checking the index stamp has usually read it already.
        let read;
        let bytes = match self.index.known_last(&name) {
            Some(bytes) => bytes,
            None => {
                read = read_limited(&self.dir, &name, CONTENT_LIMIT).ok()?;
                &read
            }
        };
        std::str::from_utf8(bytes).ok()?.parse().ok().map(canonical)
    }

    /// Every reservation whose file names container `id` (with any interface, or none).
    pub fn holdings(&mut self, id: &str) -> CniResult<Vec<Holding>> {
        if let Some(listed) = self.index.lookup(id) {
            // Cheap insurance: the few files the index names must say what it says.
            let mut confirmed = Vec::with_capacity(listed.len());
            for holding in listed {
                match inspect(&self.dir, &holding.name) {
                    Ok(Some(Found::Held(holder))) if holder == holding.holder => {
                        confirmed.push(holding)
                    }
                    _ => {
                        self.index.distrust();
                        break;
                    }
                }
            }
            if self.index.trusted() {
                return Ok(confirmed);
            }
        }
        let mut all = self.read_all()?;
        all.retain(|h| h.holder.id == id);
        Ok(all)
    }

    /// Reads every file of the directory and rebuilds the index from what it finds.
    fn read_all(&mut self) -> CniResult<Vec<Holding>> {
        let Listing { entries, lasts } = self.listing()?;
        let holdings: Vec<Holding> = entries
            .into_iter()
            .filter_map(|(name, found)| match found {
                Found::Held(holder) => Some(Holding { name, holder }),
                _ => None,
            })
            .collect();
        self.index.rebuild(&holdings, lasts);
        Ok(holdings)
    }

    /// Every entry, sorted by name; a staging file left by a crash is removed.
    fn listing(&mut self) -> CniResult<Listing> {
        let entries = std::fs::read_dir(&self.path)
            .map_err(|e| CniError::internal(format!("read {}: {e}", self.path.display())))?;
        let mut listing = Vec::new();
        let mut lasts = Vec::new();
        for entry in entries {
            let entry = entry
                .map_err(|e| CniError::internal(format!("read {}: {e}", self.path.display())))?;
            // Names that are not UTF-8 are nothing a plugin wrote.
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name == LOCK {
                continue;
            }
            if name.starts_with(LAST_RESERVED_PREFIX) {
                lasts.push(name);
                continue;
            }
            if name == TEMP {
                self.index.before_change();
                let _ = unlinkat(&self.dir, TEMP, UnlinkatFlags::NoRemoveDir);
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                listing.push((name, Found::Other));
                continue;
            }
            match inspect(&self.dir, &name) {
                Ok(Some(found)) => listing.push((name, found)),
                Ok(None) => {}
                // Unreadable (a socket, no permission): skipped like the reference, never removed.
                Err(_) => listing.push((name, Found::Other)),
            }
        }
        listing.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Listing {
            entries: listing,
            lasts,
        })
    }

    /// Reserves `ip` for `holder` in range set `set`; `false` if its name is taken.
    pub fn reserve(&mut self, ip: IpAddr, holder: &Holder, set: usize) -> CniResult<bool> {
        let name = ip.to_string();
        self.index.before_change();
        if !self.place(&name, holder.content().as_bytes())? {
            return Ok(false);
        }
        let last = format!("{LAST_RESERVED_PREFIX}{set}");
        if let Err(err) = self.write_last(&last, name.as_bytes()) {
            if unlinkat(&self.dir, name.as_str(), UnlinkatFlags::NoRemoveDir).is_err() {
                self.index.distrust();
            }
            return Err(err);
        }
        self.index.wrote_last(&last, name.as_bytes());
        self.index.added(&Holding {
            name,
            holder: holder.clone(),
        });
        Ok(true)
    }

    /// Writes the staging file: created fresh, never through a symlink.
    fn stage(&self, bytes: &[u8]) -> CniResult<()> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let create = || openat(&self.dir, TEMP, flags, Mode::from_bits_truncate(0o600));
        let fd = match create() {
            // Left by a crash (it only exists under the lock): remove it and start again.
            Err(Errno::EEXIST) => {
                match unlinkat(&self.dir, TEMP, UnlinkatFlags::NoRemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(self.error("remove", TEMP, e)),
                }
                create()
            }
            created => created,
        }
        .map_err(|e| self.error("open", TEMP, e))?;
        let written = File::from(fd).write_all(bytes);
        if let Err(e) = written {
            let _ = unlinkat(&self.dir, TEMP, UnlinkatFlags::NoRemoveDir);
            return Err(CniError::internal(format!(
                "write {}: {e}",
                self.path.join(TEMP).display()
            )));
        }
        Ok(())
    }

    /// Creates `name` with `bytes` unless the name exists (in any form): `false` then.
    fn place(&self, name: &str, bytes: &[u8]) -> CniResult<bool> {
        self.stage(bytes)?;
        let linked = linkat(&self.dir, TEMP, &self.dir, name, AtFlags::empty());
        let _ = unlinkat(&self.dir, TEMP, UnlinkatFlags::NoRemoveDir);
        match linked {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => Ok(false),
            Err(e) => Err(self.error("create", name, e)),
        }
    }

    /// Rewrites `last_reserved_ip.<N>` in place, as the reference does (a torn one only moves
    /// the round robin's start); anything but a regular file there is replaced, not followed.
    fn write_last(&self, name: &str, bytes: &[u8]) -> CniResult<()> {
        if overwrite(&self.dir, name, bytes, true).is_ok() {
            return Ok(());
        }
        self.stage(bytes)?;
        renameat(&self.dir, TEMP, &self.dir, name).map_err(|e| {
            let _ = unlinkat(&self.dir, TEMP, UnlinkatFlags::NoRemoveDir);
            self.error("write", name, e)
        })
    }

    /// Removes a reservation that [`Store::holdings`] or [`Store::reserve`] gave in this
    /// operation: its file was read or written under the lock held since, so it is not read
    /// again.
    pub fn release(&mut self, holding: &Holding) -> CniResult<()> {
        self.index.before_change();
        match unlinkat(&self.dir, holding.name.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {
                self.index.removed(holding);
                Ok(())
            }
            Err(e) => Err(self.error("remove", &holding.name, e)),
        }
    }

    /// GC: removes every address-named entry whose holder `keep` rejects, files naming no holder
    /// and symlinks (unlinked, never followed); `lock` and `last_reserved_ip.*` are not touched.
    /// Returns the failures; it carries on past them.
    pub fn collect(&mut self, keep: impl Fn(&Holder) -> bool) -> CniResult<Vec<String>> {
        let Listing { entries, lasts } = self.listing()?;
        let mut survivors = Vec::new();
        let mut errors = Vec::new();
        for (name, found) in entries {
            let doomed = reservation_ip(&name).is_some()
                && match &found {
                    Found::Held(holder) => !keep(holder),
                    Found::Unowned | Found::Symlink => true,
                    Found::Other => false,
                };
            if doomed {
                self.index.before_change();
                match unlinkat(&self.dir, name.as_str(), UnlinkatFlags::NoRemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => continue,
                    Err(e) => errors.push(self.error("remove", &name, e).msg),
                }
            }
            if let Found::Held(holder) = found {
                survivors.push(Holding { name, holder });
            }
        }
        self.index.rebuild(&survivors, lasts);
        Ok(errors)
    }

    /// Whether nothing occupies the name of `ip`.
    pub fn is_free(&self, ip: IpAddr) -> CniResult<bool> {
        let name = ip.to_string();
        match fstatat(
            self.dir.as_fd(),
            name.as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(_) => Ok(false),
            Err(Errno::ENOENT) => Ok(true),
            Err(e) => Err(self.error("stat", &name, e)),
        }
    }

    /// Whether reservations can be created here.
    pub fn writable(&self) -> CniResult<()> {
        faccessat(
            &self.dir,
            ".",
            AccessFlags::W_OK | AccessFlags::X_OK,
            AtFlags::empty(),
        )
        .map_err(|e| self.error("access", "", e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Saves the index; the lock goes with `self`.
    pub fn commit(mut self) {
        self.index.commit(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("cnibox-store-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn holder_parsing_matches_the_reference_comparison() {
        let h = Holder::parse(b"c1\r\neth0").unwrap();
        assert_eq!(h, Holder::new("c1", "eth0"));
        assert_eq!(Holder::parse(b"  c1\r\neth0\n").unwrap(), h);
        assert_eq!(Holder::parse(b"c1").unwrap().ifname, None);
        assert_eq!(Holder::parse(b"c1\r\n").unwrap().ifname, None);
        assert_eq!(Holder::parse(b""), None);
        assert_eq!(Holder::parse(b" \n"), None);
        assert_eq!(Holder::parse(b"\xff\xfe"), None);
        assert_eq!(h.content(), "c1\r\neth0");
        let key = Holder::new("c1", "eth0");
        assert!(Holder::parse(b"c1").unwrap().belongs_to(&key));
        assert!(!Holder::parse(b"c1\r\neth1").unwrap().belongs_to(&key));
        assert!(!Holder::parse(b"c2\r\neth0").unwrap().belongs_to(&key));
    }

    #[test]
    fn reservation_names_are_canonical_addresses() {
        assert_eq!(reservation_ip("10.0.0.5"), Some(ip("10.0.0.5")));
        assert_eq!(reservation_ip("fd00::5"), Some(ip("fd00::5")));
        for name in [
            "lock",
            "last_reserved_ip.0",
            "010.0.0.5",
            "FD00::5",
            "fd00:0::5",
            "::ffff:10.0.0.5",
        ] {
            assert_eq!(reservation_ip(name), None, "{name}");
        }
    }

    #[test]
    fn reserve_release_and_layout() {
        let tmp = TempDir::new("layout");
        let mut store = Store::open(&tmp.0, "net", 1).unwrap();
        let c1 = Holder::new("c1", "eth0");
        assert!(store.reserve(ip("10.0.0.2"), &c1, 0).unwrap());
        assert!(
            !store
                .reserve(ip("10.0.0.2"), &Holder::new("c2", "eth0"), 0)
                .unwrap()
        );
        assert_eq!(store.last_reserved(0), Some(ip("10.0.0.2")));
        assert_eq!(store.last_reserved(1), None);
        let held = store.holdings("c1").unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].ip(), Some(ip("10.0.0.2")));
        store.commit();
        let dir = tmp.0.join("net");
        assert_eq!(files(&dir), ["10.0.0.2", "last_reserved_ip.0", "lock"]);
        assert_eq!(std::fs::read(dir.join("10.0.0.2")).unwrap(), b"c1\r\neth0");
        assert_eq!(
            std::fs::read(dir.join("last_reserved_ip.0")).unwrap(),
            b"10.0.0.2"
        );
        let mode = |name: &str| {
            std::fs::metadata(dir.join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("10.0.0.2"), 0o600);
        assert!(mode("lock") & 0o7027 == 0, "{:o}", mode("lock"));

        // The next operation trusts the index; a DEL-style release empties it again.
        let mut store = Store::open(&tmp.0, "net", 1).unwrap();
        assert!(store.index.trusted());
        let held = store.holdings("c1").unwrap();
        store.release(&held[0]).unwrap();
        assert!(store.holdings("c1").unwrap().is_empty());
        store.commit();
        assert_eq!(files(&dir), ["last_reserved_ip.0", "lock"]);
        assert!(files(&tmp.0.join(".cnibox/net")).contains(&"stamp".to_string()));
    }

    #[test]
    fn reads_stop_at_the_end_and_at_the_limit() {
        let tmp = TempDir::new("read");
        let dir = open_dir(AT_FDCWD, &tmp.0).unwrap();
        for (len, limit) in [(0, 8), (5, 8), (8, 8), (9, 8), (300, 1000)] {
            let bytes: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            std::fs::write(tmp.0.join("f"), &bytes).unwrap();
            let read = read_limited(&dir, "f", limit);
            if len as u64 > limit {
                assert_eq!(read, Err(Errno::EFBIG), "{len}");
            } else {
                assert_eq!(read.unwrap(), bytes, "{len}");
            }
        }
    }

    #[test]
    fn an_interrupted_operation_leaves_the_index_untrusted() {
        let tmp = TempDir::new("interrupted");
        let c1 = Holder::new("c1", "eth0");
        let mut store = Store::open(&tmp.0, "net", 1).unwrap();
        // The first full read builds the index.
        assert!(store.holdings("c1").unwrap().is_empty());
        assert!(store.reserve(ip("10.0.0.2"), &c1, 0).unwrap());
        store.commit();
        // Dropped after a change but before its commit, as by a crash.
        let mut store = Store::open(&tmp.0, "net", 1).unwrap();
        assert!(store.index.trusted());
        assert!(store.reserve(ip("10.0.0.3"), &c1, 0).unwrap());
        drop(store);
        let stamp = std::fs::read(tmp.0.join(".cnibox/net/stamp")).unwrap();
        assert!(stamp.starts_with(b"void\n"));
        let mut store = Store::open(&tmp.0, "net", 1).unwrap();
        assert!(!store.index.trusted());
        assert_eq!(store.holdings("c1").unwrap().len(), 2);
        assert_eq!(store.last_reserved(0), Some(ip("10.0.0.3")));
        store.commit();
        let store = Store::open(&tmp.0, "net", 1).unwrap();
        assert!(store.index.trusted());
    }

    #[test]
    fn foreign_changes_are_noticed() {
        let tmp = TempDir::new("foreign");
        let dir = tmp.0.join("net");
        let mut store = Store::open(&tmp.0, "net", 1).unwrap();
        assert!(
            store
                .reserve(ip("10.0.0.2"), &Holder::new("c1", "eth0"), 0)
                .unwrap()
        );
        store.commit();
        // What the Go plugin does on ADD: a new file and last_reserved_ip rewritten in place.
        std::fs::write(dir.join("10.0.0.3"), "c1\r\neth1").unwrap();
        std::fs::write(dir.join("last_reserved_ip.0"), "10.0.0.3").unwrap();
        let mut store = Store::open(&tmp.0, "net", 1).unwrap();
        assert!(!store.index.trusted());
        assert_eq!(store.holdings("c1").unwrap().len(), 2);
        store.commit();
        // A Go DEL: a file removed.
        std::fs::remove_file(dir.join("10.0.0.2")).unwrap();
        let mut store = Store::open(&tmp.0, "net", 1).unwrap();
        let held = store.holdings("c1").unwrap();
        assert_eq!(
            held.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            ["10.0.0.3"]
        );
        store.commit();
        // A bucket changed behind the stamp's back is caught when read.
        for entry in std::fs::read_dir(tmp.0.join(".cnibox/net")).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() != "stamp" {
                std::fs::write(&path, "garbage\n").unwrap();
            }
        }
        let mut store = Store::open(&tmp.0, "net", 1).unwrap();
        assert_eq!(store.holdings("c1").unwrap().len(), 1);
        store.commit();
        // Without the index directory at all, everything still works.
        std::fs::remove_dir_all(tmp.0.join(".cnibox")).unwrap();
        std::fs::write(tmp.0.join(".cnibox"), "not a directory").unwrap();
        let mut store = Store::open(&tmp.0, "net", 1).unwrap();
        assert_eq!(store.holdings("c1").unwrap().len(), 1);
        assert!(
            store
                .reserve(ip("10.0.0.4"), &Holder::new("c1", "eth2"), 0)
                .unwrap()
        );
        assert_eq!(store.holdings("c1").unwrap().len(), 2);
        store.commit();
    }

    #[test]
    fn symlinks_are_never_followed() {
        let tmp = TempDir::new("symlink");
        let target = tmp.0.join("target");
        std::fs::write(&target, "c1\r\neth0").unwrap();
        let dir = tmp.0.join("net");
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(&target, dir.join("10.0.0.2")).unwrap();
        std::os::unix::fs::symlink(&target, dir.join("last_reserved_ip.0")).unwrap();
        std::os::unix::fs::symlink(tmp.0.join("nowhere"), dir.join("10.0.0.3")).unwrap();
        let mut store = Store::open(&tmp.0, "net", 1).unwrap();
        assert_eq!(store.last_reserved(0), None);
        assert!(store.holdings("c1").unwrap().is_empty());
        assert!(
            !store
                .reserve(ip("10.0.0.2"), &Holder::new("c2", "eth0"), 0)
                .unwrap()
        );
        assert!(
            !store
                .reserve(ip("10.0.0.3"), &Holder::new("c2", "eth0"), 0)
                .unwrap()
        );
        assert!(!store.is_free(ip("10.0.0.3")).unwrap());
        assert!(
            store
                .reserve(ip("10.0.0.4"), &Holder::new("c2", "eth0"), 0)
                .unwrap()
        );
        // last_reserved_ip.0 was a symlink: replaced, the target untouched.
        assert!(
            !std::fs::symlink_metadata(dir.join("last_reserved_ip.0"))
                .unwrap()
                .is_symlink()
        );
        assert!(!tmp.0.join("nowhere").exists());
        let errors = store.collect(|_| true).unwrap();
        assert!(errors.is_empty());
        store.commit();
        assert_eq!(std::fs::read(&target).unwrap(), b"c1\r\neth0");
        assert_eq!(files(&dir), ["10.0.0.4", "last_reserved_ip.0", "lock"]);
        // A symlink as the network directory or as the lock is refused.
        std::os::unix::fs::symlink(&dir, tmp.0.join("alias")).unwrap();
        assert!(Store::open(&tmp.0, "alias", 1).is_err());
        let other = tmp.0.join("other");
        std::fs::create_dir(&other).unwrap();
        std::os::unix::fs::symlink(&target, other.join("lock")).unwrap();
        assert!(Store::open(&tmp.0, "other", 1).is_err());
    }

    #[test]
    fn collect_keeps_what_it_is_told_and_the_bookkeeping() {
        let tmp = TempDir::new("gc");
        let dir = tmp.0.join("net");
        let mut store = Store::open(&tmp.0, "net", 1).unwrap();
        for (n, id) in [(2, "keep"), (3, "drop"), (4, "keep")] {
            let holder = Holder::new(id, if n == 4 { "eth1" } else { "eth0" });
            assert!(
                store
                    .reserve(ip(&format!("10.0.0.{n}")), &holder, 0)
                    .unwrap()
            );
        }
        store.commit();
        std::fs::write(dir.join("10.0.0.5"), "").unwrap();
        std::fs::write(dir.join("10.0.0.6"), "keep").unwrap();
        std::fs::write(dir.join("notes"), "drop\r\neth0").unwrap();
        std::fs::write(dir.join(TEMP), "half").unwrap();
        let mut store = Store::open(&tmp.0, "net", 1).unwrap();
        let errors = store
            .collect(|h| h.id == "keep" && h.ifname.as_deref() != Some("eth1"))
            .unwrap();
        assert!(errors.is_empty());
        assert_eq!(store.holdings("keep").unwrap().len(), 2);
        store.commit();
        assert_eq!(
            files(&dir),
            [
                "10.0.0.2",
                "10.0.0.6",
                "last_reserved_ip.0",
                "lock",
                "notes"
            ]
        );
    }
}
