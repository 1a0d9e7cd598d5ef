//! Helpers shared by the integration tests (`tests/*.rs` do `mod common;`).
//!
//! - [`cnibox`]: the binary under test (env `CNIBOX_BIN`, set by tests/run.sh).
//! - [`AppletDir`]: a temp dir of `<applet> -> cnibox` symlinks, like /opt/cni/bin.
//! - [`Netns`]: a named network namespace deleted on drop, even when the test panics.
//! - [`run_plugin`] / [`Invocation`]: run a plugin with a cleared environment.
//! - [`ip_json`], [`ip`]: inspect and set up namespaces with iproute2.
//! - [`go_plugin`]: the Go reference plugins in /usr/lib/cni (Debian's
//!   containernetworking-plugins) as a differential oracle. Debian 12 ships
//!   v1.1.1, which speaks CNI spec versions up to 1.0.0 only, so differential
//!   tests must send `"cniVersion":"1.0.0"` to it.
//!
//! Tests that create namespaces need root (CI runs as root).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

pub use serde_json::{Value, json};

/// Default time a plugin may run before [`Invocation::run`] kills it and panics.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Where Debian's containernetworking-plugins installs the Go reference plugins.
pub const GO_PLUGIN_DIR: &str = "/usr/lib/cni";

/// Every CNI spec version, oldest first.
pub const VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn next_id() -> usize {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// The crate root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
        Some(d) => repo_root().join(d),
        None => repo_root().join("target"),
    }
}

/// Print a line that libtest does not capture (unlike `eprintln!`), so it shows
/// in a passing run too. Used for SKIP notices and for which binary is tested.
pub fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// The current test's name (libtest names each test thread after its test).
pub fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_string()
}

/// Report that the current test skips `what` because of `reason`, visibly.
pub fn skip(what: &str, reason: &str) {
    note(&format!("SKIP: {} {what} because {reason}", test_name()));
}

/// Whether the tests run as root (namespaces, netlink writes).
pub fn is_root() -> bool {
    // Effective uid from /proc: no unsafe libc call needed.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

// ------------------------------------------------------------------ binary

/// Path of the cnibox binary under test, resolved once per test process:
/// 1. env `CNIBOX_BIN` (tests/run.sh exports the musl release build);
/// 2. target/x86_64-unknown-linux-musl/release/cnibox, then target/release/cnibox,
///    then target/debug/cnibox, skipping any that is older than src/ or
///    Cargo.toml/Cargo.lock (a stale build would test old code);
/// 3. the binary cargo built for this test run (`CARGO_BIN_EXE_cnibox`);
/// 4. otherwise `cargo build` once and use target/debug/cnibox.
pub fn cnibox() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = find_cnibox();
        note(&format!("cnibox under test: {}", bin.display()));
        bin
    })
    .clone()
}

fn find_cnibox() -> PathBuf {
    if let Some(p) = std::env::var_os("CNIBOX_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        let p = if p.is_absolute() {
            p
        } else {
            repo_root().join(p)
        };
        assert!(p.is_file(), "CNIBOX_BIN={} does not exist", p.display());
        return p;
    }

    let newest_source = newest_mtime(&[
        repo_root().join("src"),
        repo_root().join("Cargo.toml"),
        repo_root().join("Cargo.lock"),
    ]);
    let target = target_dir();
    for candidate in [
        target.join(MUSL_TARGET).join("release/cnibox"),
        target.join("release/cnibox"),
        target.join("debug/cnibox"),
    ] {
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        match (meta.modified().ok(), newest_source) {
            (Some(built), Some(src)) if built < src => {
                note(&format!(
                    "note: skipping {} (older than the sources)",
                    candidate.display()
                ));
            }
            _ => return candidate,
        }
    }

    if let Some(p) = option_env!("CARGO_BIN_EXE_cnibox").map(PathBuf::from)
        && p.is_file()
    {
        return p;
    }

    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let status = Command::new(cargo)
        .arg("build")
        .current_dir(repo_root())
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build failed: {status}");
    let p = target.join("debug/cnibox");
    assert!(p.is_file(), "cargo build did not produce {}", p.display());
    p
}

fn newest_mtime(paths: &[PathBuf]) -> Option<SystemTime> {
    fn walk(p: &Path, newest: &mut Option<SystemTime>) {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return;
        };
        if let Ok(m) = meta.modified()
            && newest.is_none_or(|n| m > n)
        {
            *newest = Some(m);
        }
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(p)
        {
            for e in entries.flatten() {
                walk(&e.path(), newest);
            }
        }
    }
    let mut newest = None;
    for p in paths {
        walk(p, &mut newest);
    }
    newest
}

/// Applet names from `cnibox --list`, resolved once per test process.
pub fn applets() -> Vec<String> {
    static LIST: OnceLock<Vec<String>> = OnceLock::new();
    LIST.get_or_init(|| {
        let out = Command::new(cnibox())
            .arg("--list")
            .output()
            .expect("running cnibox --list");
        assert!(
            out.status.success(),
            "cnibox --list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("cnibox --list is not UTF-8")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    })
    .clone()
}

// ------------------------------------------------------------------ applet dir

/// A temp dir laid out like /opt/cni/bin: `cnibox` (a symlink to the binary
/// under test) and one relative symlink `<applet> -> cnibox` per `--list`
/// applet. Removed on drop. Use [`AppletDir::dir`] as CNI_PATH.
pub struct AppletDir {
    dir: PathBuf,
}

impl AppletDir {
    pub fn new() -> AppletDir {
        let dir = std::env::temp_dir().join(format!(
            "cnibox-applets-{}-{}",
            std::process::id(),
            next_id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating applet dir");
        let d = AppletDir { dir };
        std::os::unix::fs::symlink(cnibox(), d.dir.join("cnibox")).expect("symlink cnibox");
        for a in applets() {
            std::os::unix::fs::symlink("cnibox", d.dir.join(&a))
                .unwrap_or_else(|e| panic!("symlink {a} -> cnibox: {e}"));
        }
        d
    }

    /// The directory itself (for CNI_PATH).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of one applet's symlink; panics if `--list` does not have it.
    pub fn path(&self, applet: &str) -> PathBuf {
        let p = self.dir.join(applet);
        assert!(
            p.symlink_metadata().is_ok(),
            "applet {applet:?} is not in `cnibox --list` ({:?})",
            applets()
        );
        p
    }
}

impl Default for AppletDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for AppletDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------------------ netns

/// A named network namespace (`ip netns add cnbt-<tag>-<pid>-<n>`), deleted
/// on drop, so it is cleaned up when the test panics too.
pub struct Netns {
    pub name: String,
    /// /run/netns/<name>, what CNI_NETNS takes.
    pub path: PathBuf,
}

impl Netns {
    /// Create the namespace; panics (with the reason) if that fails, e.g. not root.
    pub fn new(tag: &str) -> Netns {
        let name = format!("cnbt-{tag}-{}-{}", std::process::id(), next_id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("running ip netns add (is iproute2 installed?)");
        assert!(
            out.status.success(),
            "ip netns add {name} failed (root needed): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let path = PathBuf::from("/run/netns").join(&name);
        Netns { name, path }
    }

    /// CNI_NETNS value.
    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("netns path is UTF-8")
    }

    /// `ip -n <name> <args>`, asserting success; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        ip(&self.name, args)
    }

    /// `ip -j -n <name> <args>` parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        ip_json(&self.name, args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        match Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => note(&format!(
                "warning: ip netns delete {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => note(&format!("warning: ip netns delete {}: {e}", self.name)),
        }
    }
}

fn ip_command(netns: &str, json: bool, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    if json {
        cmd.arg("-j");
    }
    if !netns.is_empty() {
        cmd.args(["-n", netns]);
    }
    cmd.args(args);
    cmd
}

/// `ip -n NETNS ARGS...` (host namespace if `netns` is ""), asserting
/// success; returns stdout.
pub fn ip(netns: &str, args: &[&str]) -> String {
    let out = ip_command(netns, false, args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip -n {netns} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip -j -n NETNS ARGS...` (host namespace if `netns` is "") parsed as
/// JSON; empty output is `[]`. Panics if ip fails.
pub fn ip_json(netns: &str, args: &[&str]) -> Value {
    let out = ip_command(netns, true, args)
        .output()
        .expect("running ip -j");
    assert!(
        out.status.success(),
        "ip -j -n {netns} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Value::Array(vec![]);
    }
    parse_json(&text)
}

// ------------------------------------------------------------------ running plugins

/// What a plugin run produced.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code; 128+N if killed by signal N.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// Panic with everything the plugin said unless it exited 0.
    pub fn assert_success(&self) -> &Self {
        assert!(self.success(), "plugin failed: {self}");
        self
    }

    /// Panic unless it failed (non-zero exit).
    pub fn assert_failure(&self) -> &Self {
        assert!(!self.success(), "plugin unexpectedly succeeded: {self}");
        self
    }

    /// stdout parsed as JSON (the result or the error object).
    pub fn json(&self) -> Value {
        parse_json(&self.stdout)
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// One plugin run: `Invocation::new(bin).command("ADD").netns(..)...run()`.
/// The environment is cleared (only PATH is kept), so only what the test
/// sets reaches the plugin.
#[derive(Debug, Clone)]
pub struct Invocation {
    bin: PathBuf,
    env: Vec<(String, String)>,
    stdin: String,
    timeout: Duration,
}

impl Invocation {
    pub fn new(bin: impl AsRef<Path>) -> Invocation {
        Invocation {
            bin: bin.as_ref().to_path_buf(),
            env: Vec::new(),
            stdin: String::new(),
            timeout: PLUGIN_TIMEOUT,
        }
    }

    /// Set (or replace) one environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn envs(mut self, vars: &[(&str, &str)]) -> Self {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    /// CNI_COMMAND
    pub fn command(self, cmd: &str) -> Self {
        self.env("CNI_COMMAND", cmd)
    }

    /// CNI_CONTAINERID
    pub fn container_id(self, id: &str) -> Self {
        self.env("CNI_CONTAINERID", id)
    }

    /// CNI_NETNS
    pub fn netns(self, path: impl AsRef<Path>) -> Self {
        let p = path.as_ref().to_string_lossy().into_owned();
        self.env("CNI_NETNS", &p)
    }

    /// CNI_IFNAME
    pub fn ifname(self, name: &str) -> Self {
        self.env("CNI_IFNAME", name)
    }

    /// CNI_PATH
    pub fn cni_path(self, dir: impl AsRef<Path>) -> Self {
        let p = dir.as_ref().to_string_lossy().into_owned();
        self.env("CNI_PATH", &p)
    }

    /// CNI_ARGS
    pub fn args(self, args: &str) -> Self {
        self.env("CNI_ARGS", args)
    }

    /// Raw stdin.
    pub fn stdin(mut self, stdin: &str) -> Self {
        self.stdin = stdin.to_string();
        self
    }

    /// stdin from a JSON value (the network config).
    pub fn config(self, config: &Value) -> Self {
        let s = config.to_string();
        self.stdin(&s)
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Run the plugin; panics if it cannot be started or outlives the timeout.
    pub fn run(&self) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.env_clear();
        cmd.env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        );
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // A wrapper script just written by this test can be briefly "text file busy" when
        // another test thread forks while holding its write descriptor: retry as libcni does.
        let mut attempts = 0;
        let mut child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(26) && attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                spawned => {
                    break spawned
                        .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
                }
            }
        };

        let mut stdin = child.stdin.take().expect("child stdin");
        let input = self.stdin.clone();
        // A plugin may exit without reading stdin: ignore EPIPE.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let mut out_pipe = child.stdout.take().expect("child stdout");
        let mut err_pipe = child.stderr.take().expect("child stderr");
        let out_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out_pipe.read_to_end(&mut buf);
            buf
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err_pipe.read_to_end(&mut buf);
            buf
        });

        let deadline = Instant::now() + self.timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for plugin") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not finish within {:?} (env {:?})",
                    self.bin.display(),
                    self.timeout,
                    self.env
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let _ = writer.join();
        let stdout = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        Output {
            status: status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

/// Run `bin` with exactly `env` (plus PATH) and `stdin`.
pub fn run_plugin(bin: &Path, env: &[(&str, &str)], stdin: &str) -> Output {
    Invocation::new(bin).envs(env).stdin(stdin).run()
}

/// Parse JSON or panic showing the text.
pub fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("invalid JSON ({e}):\n{text}"))
}

// ------------------------------------------------------------------ Go oracle

/// The Go reference plugin `/usr/lib/cni/<name>`, if installed. When it is
/// missing this prints a visible `SKIP: <test> ... because ...` line and
/// returns None, so the caller skips its differential part; if env
/// `CNIBOX_REQUIRE_GO=1` (tests/run.sh sets it) it panics instead.
pub fn go_plugin(name: &str) -> Option<PathBuf> {
    let p = Path::new(GO_PLUGIN_DIR).join(name);
    if p.is_file() {
        return Some(p);
    }
    let reason = format!(
        "{} is missing (apt-get install containernetworking-plugins)",
        p.display()
    );
    if std::env::var("CNIBOX_REQUIRE_GO").is_ok_and(|v| v == "1") {
        panic!("CNIBOX_REQUIRE_GO=1 but {reason}");
    }
    skip(&format!("the Go {name} comparison"), &reason);
    None
}

// ------------------------------------------------------------------ kernel features

/// Whether env `CNIBOX_VM=1` is set: the tests run inside the full-kernel VM
/// lane (tests/vm), where every kernel feature must be there. Everything runs
/// 10-20x slower there (software emulation: a process start costs ~50 ms, an
/// `ip` call ~100 ms), so stress tests can scale their loops down with it.
pub fn in_vm_lane() -> bool {
    std::env::var("CNIBOX_VM").is_ok_and(|v| v == "1")
}

/// Run one probe in a throwaway namespace: `Ok(())` if every `ip -n NS ...`
/// command succeeded, else the failing command and its error.
fn probe_in_netns(tag: &str, cmds: &[Vec<String>]) -> Result<(), String> {
    let ns = Netns::new(tag);
    for args in cmds {
        let out = ip_command(
            &ns.name,
            false,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`ip -n {} {}`: {}",
                ns.name,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// Probe results per feature, so each test process probes a feature once.
fn probe_cached(key: &str, probe: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static CACHE: OnceLock<Mutex<HashMap<String, Result<(), String>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(r) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(key) {
        return r.clone();
    }
    let r = probe();
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.to_string(), r.clone());
    r
}

/// Report a kernel feature the current test needs: true if present. If it is
/// missing this prints `SKIP: <test> because this kernel lacks <what> (runs
/// in the VM lane, tests/vm)` and returns false, so the caller returns early;
/// inside the VM lane (env `CNIBOX_VM=1`) it panics instead.
fn require_feature(what: &str, result: Result<(), String>) -> bool {
    match result {
        Ok(()) => true,
        Err(e) if in_vm_lane() => {
            panic!("CNIBOX_VM=1 but this kernel lacks {what}: {e}")
        }
        Err(_) => {
            note(&format!(
                "SKIP: {} because this kernel lacks {what} (runs in the VM lane, tests/vm)",
                test_name()
            ));
            record_vm_needed();
            false
        }
    }
}

/// Tell the VM lane that the current test needs it: an empty file
/// `target/vm-needed/<test binary>/<test name>`. By default the lane runs just
/// the recorded tests (the whole suite does not fit its time budget under
/// software emulation); `CNIBOX_VM_SELECT=all` runs everything.
fn record_vm_needed() {
    let Some(exe) = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
    else {
        return;
    };
    // cargo names test executables <target>-<16 hex digits>
    let bin = match exe.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => exe,
    };
    let dir = target_dir().join("vm-needed").join(bin);
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join(test_name()), "");
    }
}

/// For a test that only makes sense on the VM lane's full kernel: true inside
/// the lane (`CNIBOX_VM=1`); elsewhere it prints `SKIP: <test> because it runs
/// only in the VM lane (tests/vm)`, records the test for the lane and returns
/// false.
pub fn require_vm_lane() -> bool {
    if in_vm_lane() {
        return true;
    }
    note(&format!(
        "SKIP: {} because it runs only in the VM lane (tests/vm)",
        test_name()
    ));
    record_vm_needed();
    false
}

/// Whether the kernel can create links of `kind` (`dummy`, `vlan`, `ipvlan`,
/// `vrf`, `macvlan`, ...), probed once per test process with `ip link add` in
/// a throwaway namespace (kinds that need a parent get a veth one). When the
/// kind is missing it prints a visible SKIP line and returns false (the test
/// then returns early); with `CNIBOX_VM=1` it panics, since the VM lane's
/// kernel has them all.
///
/// ```ignore
/// if !common::require_link_kind("vlan") { return; }
/// ```
pub fn require_link_kind(kind: &str) -> bool {
    let s = |line: &str| {
        line.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<String>>()
    };
    let parent = s("link add cnbprobe-p type veth peer name cnbprobe-q");
    let on_parent = |ty: &str| {
        vec![
            parent.clone(),
            s(&format!(
                "link add link cnbprobe-p name cnbprobe0 type {ty}"
            )),
        ]
    };
    let cmds = match kind {
        "vlan" => on_parent("vlan id 5"),
        "macvlan" | "macvtap" | "ipvlan" | "ipvtap" => on_parent(kind),
        "vrf" => vec![s("link add cnbprobe0 type vrf table 10")],
        "veth" => vec![parent.clone()],
        "vxlan" => vec![s("link add cnbprobe0 type vxlan id 42 dstport 4789")],
        _ => vec![s(&format!("link add cnbprobe0 type {kind}"))],
    };
    let result = probe_cached(&format!("link kind {kind}"), || {
        probe_in_netns("probe", &cmds)
    });
    require_feature(&format!("the {kind} link kind"), result)
}

/// Whether bridges support VLAN filtering (`vlan_filtering 1`; the bridge
/// plugin's `vlan`/`vlanTrunk` need it). Same SKIP / `CNIBOX_VM=1` panic
/// behaviour as [`require_link_kind`].
pub fn require_bridge_vlan_filtering() -> bool {
    let result = probe_cached("bridge vlan_filtering", || {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<String>>();
        probe_in_netns(
            "probe",
            &[
                s(&["link", "add", "cnbprobe-br", "type", "bridge"]),
                s(&[
                    "link",
                    "set",
                    "cnbprobe-br",
                    "type",
                    "bridge",
                    "vlan_filtering",
                    "1",
                ]),
            ],
        )
    });
    require_feature("bridge VLAN filtering", result)
}
