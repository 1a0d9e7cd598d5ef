//! Network namespaces: open one by path, run code inside it, and create or delete named ones
//! the way `ip netns add/del` does.
//!
//! `setns` only moves the calling thread: [`NetNs::run`] moves it into the namespace for the
//! length of one closure and back (a fresh thread per entry cost eight times as much), and a
//! thread that cannot get back ends the process rather than act in the wrong namespace.

// The named-netns half of this API is used by the tests now and by upcoming plugins.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::statfs::{NSFS_MAGIC, PROC_SUPER_MAGIC, statfs};

#[cfg_attr(not(test), allow(dead_code))] // only the tests use it in this build
/// Where iproute2 keeps named namespaces; `ip netns list` reads this directory.
const NETNS_RUN_DIR: &str = "/run/netns";

/// The calling thread's own namespace. `/proc/self` would be the thread-group leader's.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// `ioctl(NS_GET_NSTYPE)` from `linux/nsfs.h`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: u32 = 0xb703;

#[derive(Debug)]
pub enum NetnsError {
    /// The path does not exist; DEL treats this as "already gone".
    NotFound(PathBuf),
    /// The path exists but is not a network namespace.
    NotNetns(PathBuf),
    #[cfg_attr(not(test), allow(dead_code))] // only the tests use it in this build
    /// A namespace name that would escape `/run/netns` or is empty.
    InvalidName(String),
    Io {
        what: String,
        source: io::Error,
    },
}

impl NetnsError {
    fn io(what: impl Into<String>, source: impl Into<io::Error>) -> Self {
        NetnsError::Io {
            what: what.into(),
            source: source.into(),
        }
    }
}

impl fmt::Display for NetnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetnsError::NotFound(path) => {
                write!(f, "network namespace {} does not exist", path.display())
            }
            NetnsError::NotNetns(path) => {
                write!(f, "{} is not a network namespace", path.display())
            }
            NetnsError::InvalidName(name) => {
                write!(f, "invalid network namespace name {name:?}")
            }
            NetnsError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for NetnsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NetnsError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// An open handle on a network namespace. Holding the file keeps the namespace alive even if
/// its bind mount is removed meanwhile.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the namespace at `path` (`/run/netns/NAME`, `/proc/PID/ns/net`, ...).
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs, NetnsError> {
        let path = path.as_ref();
        let not_found_or = |errno: Errno, what: &str| {
            if errno == Errno::ENOENT {
                NetnsError::NotFound(path.to_path_buf())
            } else {
                NetnsError::io(format!("{what} {}", path.display()), errno)
            }
        };
        let fs = statfs(path).map_err(|e| not_found_or(e, "statfs"))?;
        // procfs is accepted like the Go reference does: kernels before 3.19 kept ns files there.
        if fs.filesystem_type() != NSFS_MAGIC && fs.filesystem_type() != PROC_SUPER_MAGIC {
            return Err(NetnsError::NotNetns(path.to_path_buf()));
        }
        let file = File::open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => NetnsError::NotFound(path.to_path_buf()),
            _ => NetnsError::io(format!("open {}", path.display()), e),
        })?;
        // /proc/PID/ns/mnt is on nsfs too: ask the kernel which kind of namespace this is.
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the open descriptor.
        let nstype = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if nstype != libc::CLONE_NEWNET {
            return Err(NetnsError::NotNetns(path.to_path_buf()));
        }
        Ok(NetNs {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The namespace of the calling thread.
    pub fn current() -> io::Result<NetNs> {
        Ok(NetNs {
            file: File::open(THREAD_NETNS)?,
            path: PathBuf::from(THREAD_NETNS),
        })
    }

    /// The namespace descriptor, e.g. for `IFLA_NET_NS_FD`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    #[cfg(test)] // the tests' guard; the own-namespace check compares paths (`is_current`)
    /// True if both handles refer to the same namespace (same nsfs inode).
    pub fn is_same(&self, other: &NetNs) -> bool {
        use nix::sys::stat::fstat;
        match (fstat(self.file.as_fd()), fstat(other.file.as_fd())) {
            (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
            _ => false,
        }
    }

    /// Runs `f` inside this namespace on the calling thread, which then returns to the
    /// namespace it was in (also when `f` unwinds). Open netlink and other sockets inside `f`:
    /// a socket stays in the namespace it was created in.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetnsError> {
        let origin = File::open(THREAD_NETNS)
            .map_err(|e| NetnsError::io(format!("open {THREAD_NETNS}"), e))?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
            NetnsError::io(
                format!("enter network namespace {}", self.path.display()),
                e,
            )
        })?;
        let _back = Return { origin };
        Ok(f())
    }
}

/// Whether `path` names the calling thread's own namespace: `Ok(None)` if `path` cannot be
/// looked at. Two `stat`s (which follow nsfs links to the namespace's inode) rather than
/// opening both.
pub fn is_current(path: &Path) -> io::Result<Option<bool>> {
    let Ok(target) = nix::sys::stat::stat(path) else {
        return Ok(None);
    };
    let own = nix::sys::stat::stat(THREAD_NETNS)?;
    Ok(Some(
        (target.st_dev, target.st_ino) == (own.st_dev, own.st_ino),
    ))
}

/// Takes the thread back to `origin` when dropped.
struct Return {
    origin: File,
}

impl Drop for Return {
    fn drop(&mut self) {
        if let Err(e) = setns(self.origin.as_fd(), CloneFlags::CLONE_NEWNET) {
            // Only ENOMEM can get here (the thread was in `origin` a moment ago), and no line of
            // a plugin may run in a namespace it did not choose: end like an allocation failure.
            eprintln!("cnibox: cannot return to the plugin's network namespace: {e}");
            std::process::abort();
        }
    }
}

#[cfg_attr(not(test), allow(dead_code))] // only the tests use it in this build
/// Creates a persistent namespace `/run/netns/NAME`, exactly like `ip netns add NAME`.
pub fn create_named(name: &str) -> Result<PathBuf, NetnsError> {
    let path = named_path(name)?;
    prepare_run_dir()?;
    // Mode 0 like iproute2: the file is only a mount point, and the mount supplies the mode.
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&path)
        .map_err(|e| NetnsError::io(format!("create {}", path.display()), e))?;
    if let Err(e) = bind_new_netns(&path) {
        // Leave nothing half-made behind; the mount error is the one worth reporting.
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

#[cfg_attr(not(test), allow(dead_code))] // only the tests use it in this build
/// Removes `/run/netns/NAME` like `ip netns del NAME`. A missing namespace is not an error.
pub fn delete_named(name: &str) -> Result<(), NetnsError> {
    let path = named_path(name)?;
    match umount2(&path, MntFlags::MNT_DETACH) {
        // EINVAL: the file exists but nothing is mounted on it (a failed or foreign create).
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(NetnsError::io(format!("unmount {}", path.display()), e)),
    }
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(NetnsError::io(format!("remove {}", path.display()), e))
        }
        _ => Ok(()),
    }
}

#[cfg_attr(not(test), allow(dead_code))] // only the tests use it in this build
fn named_path(name: &str) -> Result<PathBuf, NetnsError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(NetnsError::InvalidName(name.to_string()));
    }
    Ok(Path::new(NETNS_RUN_DIR).join(name))
}

#[cfg_attr(not(test), allow(dead_code))] // only the tests use it in this build
/// Makes `/run/netns` exist and be a shared mount, so that namespaces mounted here later also
/// show up in other mount namespaces (iproute2's `netns_add` does the same).
fn prepare_run_dir() -> Result<(), NetnsError> {
    // Two threads racing here would both bind-mount the directory onto itself.
    static PREPARE: Mutex<()> = Mutex::new(());
    let _guard = PREPARE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());

    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(NETNS_RUN_DIR)
        .map_err(|e| NetnsError::io(format!("create {NETNS_RUN_DIR}"), e))?;
    let make_shared = || {
        mount(
            Some(""),
            NETNS_RUN_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match make_shared() {
        Ok(()) => return Ok(()),
        // EINVAL: not a mount point yet; turn it into one below.
        Err(Errno::EINVAL) => {}
        Err(e) => return Err(NetnsError::io(format!("make {NETNS_RUN_DIR} shared"), e)),
    }
    mount(
        Some(NETNS_RUN_DIR),
        NETNS_RUN_DIR,
        Some("none"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| NetnsError::io(format!("bind-mount {NETNS_RUN_DIR} onto itself"), e))?;
    make_shared().map_err(|e| NetnsError::io(format!("make {NETNS_RUN_DIR} shared"), e))
}

#[cfg_attr(not(test), allow(dead_code))] // only the tests use it in this build
/// Creates a namespace on a throwaway thread and pins it by bind-mounting it onto `target`.
fn bind_new_netns(target: &Path) -> Result<(), NetnsError> {
    let what = format!("create network namespace {}", target.display());
    thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name("netns-add".into())
            .spawn_scoped(scope, || {
                unshare(CloneFlags::CLONE_NEWNET)?;
                mount(
                    Some(THREAD_NETNS),
                    target,
                    Some("none"),
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
            })
            .map_err(|e| NetnsError::io(&what, e))?;
        match worker.join() {
            Ok(result) => result.map_err(|e| NetnsError::io(&what, e)),
            Err(_) => Err(NetnsError::io(
                &what,
                io::Error::other("worker thread panicked"),
            )),
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A named namespace for one test, deleted on drop so a failing test leaves nothing behind.
    pub(crate) struct ScratchNetns {
        pub name: String,
        pub ns: NetNs,
    }

    impl ScratchNetns {
        pub(crate) fn new() -> ScratchNetns {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "cnbt-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let path = create_named(&name).expect("create scratch netns");
            let ns = NetNs::open(&path).expect("open scratch netns");
            ScratchNetns { name, ns }
        }

        /// `ip -j -n NAME ARGS...`, parsed.
        pub(crate) fn ip_json(&self, args: &[&str]) -> serde_json::Value {
            let out = Command::new("ip")
                .args(["-j", "-n", &self.name])
                .args(args)
                .output()
                .expect("run ip");
            assert!(out.status.success(), "ip {args:?}: {out:?}");
            serde_json::from_slice(&out.stdout).expect("ip -j output is JSON")
        }
    }

    impl Drop for ScratchNetns {
        fn drop(&mut self) {
            if let Err(e) = delete_named(&self.name) {
                eprintln!("cleanup of netns {} failed: {e}", self.name);
            }
        }
    }

    fn ip_netns_list() -> String {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn netns_named_create_interoperates_with_iproute2() {
        let scratch = ScratchNetns::new();
        assert!(
            ip_netns_list()
                .lines()
                .any(|l| l.split_whitespace().next() == Some(scratch.name.as_str())),
            "ip netns list lacks {}",
            scratch.name
        );
        let host = NetNs::current().unwrap();
        assert!(!scratch.ns.is_same(&host), "named netns is the host netns");
        // A new namespace has only lo.
        let links = scratch.ip_json(&["link", "show"]);
        let names: Vec<_> = links
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["lo"]);

        let name = scratch.name.clone();
        drop(scratch);
        assert!(!Path::new(NETNS_RUN_DIR).join(&name).exists());
        assert!(!ip_netns_list().contains(&name));
        // Deleting again is fine: DEL must be idempotent.
        delete_named(&name).unwrap();
    }

    #[test]
    fn netns_named_delete_after_ip_netns_add() {
        let name = format!("cnbt-{}-ipadd", std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(status.success());
        let ns = NetNs::open(Path::new(NETNS_RUN_DIR).join(&name));
        delete_named(&name).unwrap();
        assert!(ns.is_ok(), "open of an ip-netns-added namespace: {ns:?}");
        assert!(!ip_netns_list().contains(&name));
    }

    #[test]
    fn netns_create_named_twice_fails() {
        let scratch = ScratchNetns::new();
        let err = create_named(&scratch.name).unwrap_err();
        assert!(
            matches!(&err, NetnsError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{err:?}"
        );
        // The failed second create must not have unmounted the first.
        assert!(NetNs::open(Path::new(NETNS_RUN_DIR).join(&scratch.name)).is_ok());
    }

    #[test]
    fn netns_invalid_names_are_rejected() {
        for name in ["", ".", "..", "a/b", "../etc"] {
            assert!(
                matches!(create_named(name), Err(NetnsError::InvalidName(_))),
                "{name:?}"
            );
            assert!(
                matches!(delete_named(name), Err(NetnsError::InvalidName(_))),
                "{name:?}"
            );
        }
    }

    #[test]
    fn netns_open_classifies_bad_paths() {
        let missing = format!("/run/netns/cnbt-{}-missing", std::process::id());
        assert!(
            matches!(NetNs::open(&missing), Err(NetnsError::NotFound(p)) if p == Path::new(&missing))
        );

        let regular = std::env::temp_dir().join(format!("cnbt-{}-regular", std::process::id()));
        fs::write(&regular, b"").unwrap();
        let result = NetNs::open(&regular);
        fs::remove_file(&regular).unwrap();
        assert!(matches!(result, Err(NetnsError::NotNetns(_))), "{result:?}");

        // On procfs but not a namespace file.
        assert!(matches!(
            NetNs::open("/proc/version"),
            Err(NetnsError::NotNetns(_))
        ));
        // A namespace, but not a network one.
        assert!(matches!(
            NetNs::open("/proc/thread-self/ns/mnt"),
            Err(NetnsError::NotNetns(_))
        ));
        // Display names the path.
        let text = NetNs::open(&missing).unwrap_err().to_string();
        assert!(text.contains(&missing), "{text}");
    }

    #[test]
    fn netns_is_same() {
        let a = NetNs::current().unwrap();
        let b = NetNs::open("/proc/thread-self/ns/net").unwrap();
        assert!(a.is_same(&b));
        let scratch = ScratchNetns::new();
        assert!(!a.is_same(&scratch.ns));
        assert!(scratch.ns.is_same(&scratch.ns));
    }

    #[test]
    fn netns_run_enters_target_and_leaves_caller_alone() {
        let before = NetNs::current().unwrap();
        let scratch = ScratchNetns::new();
        let (inside_is_target, inside_is_caller) = scratch
            .ns
            .run(|| {
                let here = NetNs::current().unwrap();
                (here.is_same(&scratch.ns), here.is_same(&before))
            })
            .unwrap();
        assert!(inside_is_target);
        assert!(!inside_is_caller);
        assert!(NetNs::current().unwrap().is_same(&before));
    }

    #[test]
    fn netns_run_nests_and_returns_after_a_panic() {
        let before = NetNs::current().unwrap();
        let outer = ScratchNetns::new();
        let inner = ScratchNetns::new();
        let seen = outer
            .ns
            .run(|| {
                let in_inner = inner
                    .ns
                    .run(|| NetNs::current().unwrap().is_same(&inner.ns))
                    .unwrap();
                (in_inner, NetNs::current().unwrap().is_same(&outer.ns))
            })
            .unwrap();
        assert_eq!(seen, (true, true), "(inside inner, back in outer)");
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            outer.ns.run(|| panic!("a failure inside the namespace"))
        }));
        assert!(unwound.is_err());
        assert!(NetNs::current().unwrap().is_same(&before));
    }

    #[test]
    fn netns_is_current_compares_namespaces_by_path() {
        let scratch = ScratchNetns::new();
        let path = Path::new(NETNS_RUN_DIR).join(&scratch.name);
        assert_eq!(is_current(&path).unwrap(), Some(false));
        assert_eq!(is_current(Path::new(THREAD_NETNS)).unwrap(), Some(true));
        let inside = scratch.ns.run(|| is_current(&path).unwrap()).unwrap();
        assert_eq!(inside, Some(true));
        assert_eq!(is_current(&path.with_extension("missing")).unwrap(), None);
    }

    #[test]
    fn netns_run_reports_setns_failure() {
        // A mount-namespace fd passes fstat but setns(CLONE_NEWNET) refuses it.
        let not_net = NetNs {
            file: File::open("/proc/thread-self/ns/mnt").unwrap(),
            path: PathBuf::from("/proc/thread-self/ns/mnt"),
        };
        let err = not_net.run(|| ()).unwrap_err();
        assert!(err.to_string().contains("enter network namespace"), "{err}");
    }
}
