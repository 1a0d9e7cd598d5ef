//! `cnibox install DIR`: the binary installs itself, for images `FROM scratch` with no shell.
//!
//! Same placement as a default `install.sh` run (see its `--help`):
//! - the running binary (`/proc/self/exe`) goes to `DIR/cnibox` through a temp file in DIR
//!   (`.cnibox.new.<pid>`), fsync and `rename(2)`: a running plugin keeps its old inode, nobody
//!   sees a half-written file, no "text file busy";
//! - one relative symlink `NAME -> cnibox` per applet (hard links, or copies where a hard link is
//!   impossible, with `--copy`), each made under a temp name and renamed over the old name;
//! - a file or link of an applet's name that cnibox did not put there is foreign: it is kept as
//!   `NAME.orig` (unless `--no-backup`) or left alone (`--skip-existing`);
//! - what is already in place is left untouched, so a re-run changes nothing;
//! - `DIR/.cnibox.manifest` records what was placed and backed up, for `install.sh --uninstall`.
//!
//! Output: messages and the summary go to stderr (`[INFO]`/`[WARN]`/`[ERROR]`), stdout stays
//! empty. Exit codes: 0 installed, 2 usage error, 4 install failed (as install.sh).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use crate::applets::APPLETS;

const EXIT_OK: i32 = 0;
const EXIT_USAGE: i32 = 2;
const EXIT_INSTALL: i32 = 4;

/// The binary's name in DIR; every applet link points at it.
const BINARY: &str = "cnibox";
/// What was placed and backed up; shared format with install.sh.
pub const MANIFEST: &str = ".cnibox.manifest";

struct Options {
    dir: PathBuf,
    only: Option<Vec<String>>,
    copy: bool,
    skip_existing: bool,
    backup: bool,
    sleep: bool,
}

/// `args` are what follows `cnibox install`; returns the exit status.
pub fn main(args: &[OsString]) -> i32 {
    let opts = match parse(args) {
        Ok(opts) => opts,
        Err(code) => return code,
    };
    let code = match install(&opts) {
        Ok(()) => EXIT_OK,
        Err(msg) => {
            error(&msg);
            EXIT_INSTALL
        }
    };
    if opts.sleep && code == EXIT_OK {
        info("installed; sleeping until SIGTERM/SIGINT (--sleep)");
        wait_for_signal();
        info("signal received, exiting");
    }
    code
}

fn parse(args: &[OsString]) -> Result<Options, i32> {
    use clap::{Arg, ArgAction, Command};
    let cli = Command::new("cnibox install")
        .about(
            "Install this cnibox binary into DIR with one relative symlink per applet \
             (same placement as install.sh); messages on stderr",
        )
        .after_help(
            "Exit codes: 0 installed, 2 usage error, 4 install failed.\n\
             Image use: ENTRYPOINT [\"/cnibox\",\"install\",\"/host/opt/cni/bin\"], with the \
             host's /opt/cni/bin mounted at /host/opt/cni/bin.",
        )
        .arg(
            Arg::new("dir")
                .required(true)
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("The CNI bin dir to install into (created if missing)"),
        )
        .arg(
            Arg::new("only")
                .long("only")
                .value_name("A,B,...")
                .value_delimiter(',')
                .help("Install only these applets (the binary is always installed)"),
        )
        .arg(
            Arg::new("copy")
                .long("copy")
                .action(ArgAction::SetTrue)
                .help("Hard links (copies where impossible) instead of symlinks"),
        )
        .arg(
            Arg::new("skip-existing")
                .long("skip-existing")
                .action(ArgAction::SetTrue)
                .help("Leave files of an applet's name that cnibox did not install alone"),
        )
        .arg(
            Arg::new("no-backup")
                .long("no-backup")
                .action(ArgAction::SetTrue)
                .help("Replace foreign files without keeping them as NAME.orig"),
        )
        .arg(
            Arg::new("sleep")
                .long("sleep")
                .action(ArgAction::SetTrue)
                .help("After installing, sleep until SIGTERM (DaemonSet main container)"),
        );
    let argv = std::iter::once(OsString::from("cnibox install")).chain(args.iter().cloned());
    let m = match cli.try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return Err(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let only: Option<Vec<String>> = m
        .get_many::<String>("only")
        .map(|v| v.filter(|s| !s.is_empty()).cloned().collect());
    if let Some(only) = &only {
        if only.is_empty() {
            error("--only needs at least one applet name");
            return Err(EXIT_USAGE);
        }
        for name in only {
            if !APPLETS.iter().any(|a| a.name == name) {
                let known: Vec<&str> = APPLETS.iter().map(|a| a.name).collect();
                error(&format!(
                    "--only: {name:?} is not an applet of this cnibox (known: {})",
                    known.join(", ")
                ));
                return Err(EXIT_USAGE);
            }
        }
    }
    Ok(Options {
        dir: m.get_one::<PathBuf>("dir").cloned().unwrap_or_default(),
        only,
        copy: m.get_flag("copy"),
        skip_existing: m.get_flag("skip-existing"),
        backup: !m.get_flag("no-backup"),
        sleep: m.get_flag("sleep"),
    })
}

fn info(msg: &str) {
    eprintln!("[INFO] {msg}");
}

fn warn(msg: &str) {
    eprintln!("[WARN] {msg}");
}

fn error(msg: &str) {
    eprintln!("[ERROR] {msg}");
}

/// The binary before this run replaced it: its links and copies are ours too.
struct Previous {
    content: Vec<u8>,
    id: (u64, u64),
}

#[derive(Default)]
struct Report {
    new: Vec<String>,
    updated: Vec<String>,
    unchanged: Vec<String>,
    replaced: Vec<String>,
    skipped: Vec<String>,
}

struct Installer<'a> {
    opts: &'a Options,
    dir: &'a Path,
    binary: Vec<u8>,
    previous: Option<Previous>,
    report: Report,
    backups: BTreeSet<String>,
}

fn install(opts: &Options) -> Result<(), String> {
    let dir = opts.dir.as_path();
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        info(&format!("created {}", dir.display()));
    }
    let binary = fs::read("/proc/self/exe")
        .or_else(|_| std::env::current_exe().and_then(fs::read))
        .map_err(|e| format!("cannot read the running cnibox binary: {e}"))?;
    let dst = dir.join(BINARY);
    let previous = match fs::symlink_metadata(&dst) {
        Ok(meta) if meta.is_file() => Some(Previous {
            content: fs::read(&dst).map_err(|e| format!("cannot read {}: {e}", dst.display()))?,
            id: (meta.dev(), meta.ino()),
        }),
        _ => None,
    };
    let mut inst = Installer {
        opts,
        dir,
        binary,
        previous,
        report: Report::default(),
        backups: BTreeSet::new(),
    };
    inst.place_binary()?;
    let names: Vec<&str> = APPLETS
        .iter()
        .map(|a| a.name)
        .filter(|n| opts.only.as_ref().is_none_or(|o| o.iter().any(|x| x == n)))
        .collect();
    let mut failures = Vec::new();
    for name in names {
        if let Err(e) = inst.place_applet(name) {
            error(&e);
            failures.push(name);
        }
    }
    inst.write_manifest()?;
    inst.summary();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("could not install: {}", failures.join(" ")))
    }
}

impl Installer<'_> {
    fn tmp_path(&self, name: &str, what: &str) -> PathBuf {
        self.dir
            .join(format!(".{name}.{what}.{}", std::process::id()))
    }

    fn place_binary(&mut self) -> Result<(), String> {
        let dst = self.dir.join(BINARY);
        if self
            .previous
            .as_ref()
            .is_some_and(|p| p.content == self.binary)
            && fs::metadata(&dst).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
        {
            self.report.unchanged.push(BINARY.into());
            return Ok(());
        }
        let existed = match fs::symlink_metadata(&dst) {
            Ok(m) if m.is_dir() => {
                return Err(format!(
                    "{} is a directory; refusing to replace it",
                    dst.display()
                ));
            }
            Ok(_) => true,
            Err(_) => false,
        };
        let tmp = self.tmp_path(BINARY, "new");
        write_new_file(&tmp, &self.binary)
            .and_then(|()| fs::rename(&tmp, &dst))
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                format!("cannot install {}: {e}", dst.display())
            })?;
        sync_dir(self.dir);
        if existed {
            info(&format!("replaced {}", dst.display()));
            self.report.updated.push(BINARY.into());
        } else {
            self.report.new.push(BINARY.into());
        }
        Ok(())
    }

    /// Whether `path` (not followed) is cnibox's: a link to `cnibox`, or a hard link or copy of
    /// the new or the previous binary.
    fn is_ours(&self, path: &Path, meta: &fs::Metadata) -> bool {
        if meta.file_type().is_symlink() {
            return fs::read_link(path).is_ok_and(|t| {
                t == Path::new(BINARY)
                    || (t.file_name().is_some_and(|f| f == BINARY)
                        && same_file(path, &self.dir.join(BINARY)))
            });
        }
        if !meta.is_file() {
            return false;
        }
        let id = (meta.dev(), meta.ino());
        if self.previous.as_ref().is_some_and(|p| p.id == id)
            || fs::metadata(self.dir.join(BINARY)).is_ok_and(|m| (m.dev(), m.ino()) == id)
        {
            return true;
        }
        let len = meta.len();
        let candidates =
            std::iter::once(&self.binary).chain(self.previous.as_ref().map(|p| &p.content));
        let mut content = None;
        for c in candidates {
            if c.len() as u64 == len {
                let data = content.get_or_insert_with(|| fs::read(path).unwrap_or_default());
                if data == c {
                    return true;
                }
            }
        }
        false
    }

    /// Whether `path` already is exactly what this run would put there.
    fn is_in_place(&self, path: &Path, meta: &fs::Metadata) -> bool {
        if !self.opts.copy {
            return meta.file_type().is_symlink()
                && fs::read_link(path).is_ok_and(|t| t == Path::new(BINARY));
        }
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return false;
        }
        let same_inode = fs::metadata(self.dir.join(BINARY))
            .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()));
        same_inode
            || (meta.len() == self.binary.len() as u64
                && fs::read(path).is_ok_and(|d| d == self.binary))
    }

    fn place_applet(&mut self, name: &str) -> Result<(), String> {
        let path = self.dir.join(name);
        let foreign = match fs::symlink_metadata(&path) {
            Err(_) => None,
            Ok(meta) if self.is_in_place(&path, &meta) => {
                self.report.unchanged.push(name.into());
                return Ok(());
            }
            Ok(meta) if self.is_ours(&path, &meta) => Some(false),
            Ok(meta) if meta.is_dir() => {
                return Err(format!(
                    "{} is a directory; refusing to replace it",
                    path.display()
                ));
            }
            Ok(_) => Some(true),
        };
        if foreign == Some(true) {
            if self.opts.skip_existing {
                info(&format!(
                    "{} exists and is not cnibox's; left alone (--skip-existing)",
                    path.display()
                ));
                self.report.skipped.push(name.into());
                return Ok(());
            }
            if self.opts.backup {
                self.backup(name)?;
            } else {
                warn(&format!(
                    "replacing {} without a backup (--no-backup)",
                    path.display()
                ));
            }
        }
        let tmp = self.tmp_path(name, "tmp");
        let _ = fs::remove_file(&tmp);
        let made = if self.opts.copy {
            self.make_copy(&tmp)
        } else {
            symlink(BINARY, &tmp)
        };
        made.and_then(|()| fs::rename(&tmp, &path)).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            format!("cannot install {}: {e}", path.display())
        })?;
        match foreign {
            None => self.report.new.push(name.into()),
            Some(false) => self.report.updated.push(name.into()),
            Some(true) => self.report.replaced.push(name.into()),
        }
        Ok(())
    }

    /// A hard link to DIR/cnibox, or a copy where the file system refuses one.
    fn make_copy(&self, tmp: &Path) -> io::Result<()> {
        let bin = self.dir.join(BINARY);
        match fs::hard_link(&bin, tmp) {
            Ok(()) => Ok(()),
            Err(e) => {
                warn(&format!(
                    "hard link to {} impossible ({e}); copying",
                    bin.display()
                ));
                write_new_file(tmp, &self.binary)
            }
        }
    }

    /// Keep the foreign NAME as NAME.orig; NAME itself stays in place until it is replaced.
    fn backup(&mut self, name: &str) -> Result<(), String> {
        let path = self.dir.join(name);
        let orig = self.dir.join(format!("{name}.orig"));
        let tmp = self.tmp_path(name, "orig");
        let _ = fs::remove_file(&tmp);
        if fs::symlink_metadata(&orig).is_ok() {
            warn(&format!(
                "{} exists; replacing it with the current {name}",
                orig.display()
            ));
        }
        let meta = fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let made = if meta.file_type().is_symlink() {
            fs::read_link(&path).and_then(|target| symlink(target, &tmp))
        } else {
            fs::hard_link(&path, &tmp).or_else(|_| {
                fs::copy(&path, &tmp).and_then(|_| fs::set_permissions(&tmp, meta.permissions()))
            })
        };
        made.and_then(|()| fs::rename(&tmp, &orig)).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            format!(
                "cannot back up {} as {}: {e}",
                path.display(),
                orig.display()
            )
        })?;
        info(&format!("kept the existing {name} as {}", orig.display()));
        self.backups.insert(name.into());
        Ok(())
    }

    /// Merge this run into DIR/.cnibox.manifest (format shared with install.sh).
    fn write_manifest(&self) -> Result<(), String> {
        let path = self.dir.join(MANIFEST);
        let mut entries = BTreeSet::new();
        if let Ok(old) = fs::read_to_string(&path) {
            for line in old.lines() {
                if let Some((kind @ ("file" | "backup"), name)) = line.split_once(' ') {
                    entries.insert((kind.to_string(), name.to_string()));
                }
            }
        }
        let r = &self.report;
        for name in r
            .new
            .iter()
            .chain(&r.updated)
            .chain(&r.unchanged)
            .chain(&r.replaced)
        {
            entries.insert(("file".into(), name.clone()));
        }
        for name in &self.backups {
            entries.insert(("backup".into(), name.clone()));
        }
        // A backup whose .orig is gone (restored or removed by hand) is forgotten.
        entries.retain(|(kind, name)| {
            kind != "backup" || fs::symlink_metadata(self.dir.join(format!("{name}.orig"))).is_ok()
        });
        let mut text = format!(
            "# cnibox install manifest: what cnibox placed here; read by install.sh --uninstall\n\
             version {}\nmode {}\n",
            env!("CARGO_PKG_VERSION"),
            if self.opts.copy { "copy" } else { "symlink" }
        );
        for (kind, name) in &entries {
            text.push_str(&format!("{kind} {name}\n"));
        }
        if fs::read_to_string(&path).is_ok_and(|old| old == text) {
            return Ok(());
        }
        let tmp = self.tmp_path("cnibox.manifest", "tmp");
        let _ = fs::remove_file(&tmp);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
            .and_then(|()| fs::rename(&tmp, &path));
        written.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            format!("cannot write {}: {e}", path.display())
        })
    }

    fn summary(&self) {
        let r = &self.report;
        info(&format!(
            "installed into {}: {} new, {} updated, {} unchanged, {} replaced, {} skipped",
            self.dir.display(),
            r.new.len(),
            r.updated.len(),
            r.unchanged.len(),
            r.replaced.len(),
            r.skipped.len()
        ));
        let replaced = if self.opts.backup {
            "replaced (kept as .orig)"
        } else {
            "replaced"
        };
        for (label, list) in [
            ("new", &r.new),
            ("updated", &r.updated),
            ("unchanged", &r.unchanged),
            (replaced, &r.replaced),
            ("skipped", &r.skipped),
        ] {
            if !list.is_empty() {
                info(&format!("  {label}: {}", list.join(" ")));
            }
        }
        info(&format!("cnibox {}", env!("CARGO_PKG_VERSION")));
    }
}

/// Create `path` (must not exist) with mode 0755, write `data`, fsync.
fn write_new_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let _ = fs::remove_file(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(path)?;
    file.write_all(data)?;
    // The umask may have narrowed the mode.
    file.set_permissions(fs::Permissions::from_mode(0o755))?;
    file.sync_all()
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => (x.dev(), x.ino()) == (y.dev(), y.ino()),
        _ => false,
    }
}

/// Block SIGTERM, SIGINT and SIGHUP and wait for one. As PID 1 in a container a process with
/// default signal dispositions is not killed by SIGTERM, so the wait must be explicit.
fn wait_for_signal() {
    // SAFETY: sigset_t is plain data initialised by sigemptyset before use; the calls only
    // read and write that local set and this thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut sig: libc::c_int = 0;
        while libc::sigwait(&set, &mut sig) != 0 {}
    }
}
