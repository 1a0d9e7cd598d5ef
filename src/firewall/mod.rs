//! IP masquerade for bridge and ptp (`ipMasq`), on two backends laid out exactly like the Go
//! reference (`pkg/ip/ipmasq_*` of containernetworking/plugins v1.9.1), so that state made by
//! either implementation is removed by the other:
//!
//! * `iptables`: the `iptables`/`ip6tables` commands with `--wait`, a nat chain
//!   `CNI-<24 hex of sha512(network + containerID)>` per attachment (see [`iptables`]).
//! * `nftables`: table `inet cni_plugins_masquerade`, one rule per address in `masq_checks`,
//!   each commented with hashes of network, ifname and container ID, written by one atomic
//!   `nft -f -` batch (see [`nftables`]).
//!
//! Everything runs in the network namespace of the calling thread: the commands are child
//! processes, which inherit it.

// bridge and ptp are the callers; they land after this layer.

pub mod filter;
pub mod firewalld;
mod iptables;
mod macspoof;
mod nftables;
pub mod portmap;
mod portmap_iptables;
mod portmap_nftables;

#[cfg(test)]
mod tests;

pub use macspoof::{setup_mac_spoof_check, teardown_mac_spoof_check};

use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipnetwork::IpNetwork;

use crate::cni::{CniError, CniResult};

/// Where binaries are looked for after `PATH`: runtimes may exec plugins with an empty `PATH`.
const FALLBACK_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasqBackend {
    Iptables,
    Nftables,
}

/// Picks the backend for `ipMasqBackend`. Unset: iptables, unless iptables is unusable and
/// nftables usable, as the reference does; and, unlike it, nftables when there is no
/// `iptables` binary but an `nft` one (containernetworking/plugins issue 1280: its `nft`
/// probe needs CAP_NET_ADMIN, so such nodes fell back to the missing iptables).
pub fn choose_backend(configured: Option<&str>) -> CniResult<MasqBackend> {
    choose_backend_with(configured, &Tools::find())
}

fn choose_backend_with(configured: Option<&str>, tools: &Tools) -> CniResult<MasqBackend> {
    match configured {
        Some("iptables") => Ok(MasqBackend::Iptables),
        Some("nftables") => Ok(MasqBackend::Nftables),
        Some(other) => Err(CniError::config(format!(
            "unknown ipmasq backend {}",
            go_quote(other)
        ))),
        None => Ok(match (&tools.iptables, &tools.nft) {
            (None, Some(_)) => MasqBackend::Nftables,
            (Some(ipt), Some(nft)) if !iptables::usable(ipt) && nftables::usable(nft) => {
                MasqBackend::Nftables
            }
            // Setup reports a missing iptables binary with a clear message.
            _ => MasqBackend::Iptables,
        }),
    }
}

/// Masquerades traffic from each address of `ips` (address with its subnet prefix, as in an
/// IPAM result) to anything outside that subnet except multicast.
pub fn setup_ip_masq(
    backend: MasqBackend,
    network: &str,
    ifname: &str,
    container_id: &str,
    ips: &[IpNetwork],
) -> CniResult<()> {
    let tools = Tools::find();
    match backend {
        MasqBackend::Iptables => iptables::setup(&tools, network, container_id, ips),
        MasqBackend::Nftables => {
            let nft = tools.nft.as_deref().ok_or_else(|| missing_binary("nft"))?;
            nftables::setup(nft, network, ifname, container_id, ips)
        }
    }
    .map_err(|e| e.context("failed to set up IP masquerading"))
}

/// Removes what [`setup_ip_masq`] (or the Go plugins) made for this attachment, on both
/// backends. Idempotent; `ips` may be empty (DEL after the netns is gone): the iptables jumps
/// are then found by listing POSTROUTING, the nftables rules by their comment. Every step is
/// tried and all failures are reported together. A backend whose binary is absent is skipped,
/// and, as in the reference, the failures of a backend that fails its usability probe are
/// dropped (nothing can have been set up through it), so DEL cannot get stuck on it.
pub fn teardown_ip_masq(
    network: &str,
    ifname: &str,
    container_id: &str,
    ips: &[IpNetwork],
) -> CniResult<()> {
    teardown_with(&Tools::find(), network, ifname, container_id, ips)
}

fn teardown_with(
    tools: &Tools,
    network: &str,
    ifname: &str,
    container_id: &str,
    ips: &[IpNetwork],
) -> CniResult<()> {
    let mut errors = Errors::default();
    let mut ipt_errors = Errors::default();
    iptables::teardown(tools, network, container_id, ips, &mut ipt_errors);
    errors.absorb(ipt_errors, || tools.iptables_usable());
    if let Some(nft) = &tools.nft {
        let mut nft_errors = Errors::default();
        nftables::teardown(nft, network, ifname, container_id, &mut nft_errors);
        errors.absorb(nft_errors, || nftables::usable(nft));
    }
    errors.into_result("failed to tear down IP masquerading")
}

/// Removes the masquerade state of every attachment of `network` that is not in `keep`
/// (`(containerID, ifname)` pairs, from `cni.dev/valid-attachments`), on both backends.
///
/// nftables rules carry network, ifname and container ID, so they are matched exactly. The
/// iptables state carries no ifname (chain and comment are made of network and container ID
/// only), so an iptables chain is kept when any kept attachment has its container ID. Chains
/// are found through the comments of their rules; a chain without any rule is not found.
pub fn gc_ip_masq(network: &str, keep: &[(String, String)]) -> CniResult<()> {
    gc_with(&Tools::find(), network, keep)
}

fn gc_with(tools: &Tools, network: &str, keep: &[(String, String)]) -> CniResult<()> {
    let mut errors = Errors::default();
    let mut ipt_errors = Errors::default();
    iptables::gc(tools, network, keep, &mut ipt_errors);
    errors.absorb(ipt_errors, || tools.iptables_usable());
    if let Some(nft) = &tools.nft {
        let mut nft_errors = Errors::default();
        nftables::gc(nft, network, keep, &mut nft_errors);
        errors.absorb(nft_errors, || nftables::usable(nft));
    }
    errors.into_result("failed to garbage-collect IP masquerading")
}

/// The firewall binaries found on this node.
#[derive(Debug, Default, Clone)]
struct Tools {
    iptables: Option<PathBuf>,
    ip6tables: Option<PathBuf>,
    nft: Option<PathBuf>,
}

impl Tools {
    /// Looks in `PATH`, then in [`FALLBACK_DIRS`].
    fn find() -> Tools {
        Tools::find_in(&search_dirs(std::env::var_os("PATH")))
    }

    /// The reference's `SupportsIPTables`: the IPv4 probe decides for both families.
    fn iptables_usable(&self) -> bool {
        self.iptables.as_deref().is_some_and(iptables::usable)
    }

    fn find_in(dirs: &[PathBuf]) -> Tools {
        Tools {
            iptables: lookup(dirs, "iptables"),
            ip6tables: lookup(dirs, "ip6tables"),
            nft: lookup(dirs, "nft"),
        }
    }
}

fn search_dirs(path: Option<OsString>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    // Relative entries would depend on the runtime's working directory.
    dirs.retain(|d| d.is_absolute());
    for dir in FALLBACK_DIRS {
        if !dirs.iter().any(|d| d == Path::new(dir)) {
            dirs.push(PathBuf::from(dir));
        }
    }
    dirs
}

/// The first regular file called `name` with an execute bit, like Go's `exec.LookPath`.
fn lookup(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(name)).find(|p| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

fn missing_binary(name: &str) -> CniError {
    CniError::internal(format!(
        "{name} not found in PATH or {}",
        FALLBACK_DIRS.join(":")
    ))
}

/// A failed command: how it was run and what it said.
#[derive(Debug)]
struct RunError {
    command: String,
    /// Exit status; `None` if it could not be started or was killed by a signal.
    status: Option<i32>,
    /// stderr, or the spawn error.
    message: String,
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => write!(
                f,
                "running {}: exit status {status}: {}",
                self.command,
                self.message.trim_end()
            ),
            None => write!(f, "running {}: {}", self.command, self.message.trim_end()),
        }
    }
}

impl From<RunError> for CniError {
    fn from(e: RunError) -> CniError {
        CniError::internal(e)
    }
}

/// Runs `bin args...` with `stdin` fed in and returns its stdout.
fn run(bin: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, RunError> {
    let fail = |status, message: String| RunError {
        command: format!("{} {}", bin.display(), args.join(" ")),
        status,
        message,
    };
    let mut child = Command::new(bin)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(None, e.to_string()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A write error shows up as the command's own failure below.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(None, e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(fail(
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

/// Failures collected over all steps of a teardown or GC, reported together at the end.
#[derive(Debug, Default)]
struct Errors(Vec<String>);

impl Errors {
    fn push(&mut self, error: impl fmt::Display) {
        let text = error.to_string();
        tracing::debug!("{text}");
        self.0.push(text);
    }

    /// Takes over the failures of one backend, unless that backend is unusable here.
    fn absorb(&mut self, other: Errors, usable: impl FnOnce() -> bool) {
        if other.0.is_empty() {
            return;
        }
        if usable() {
            self.0.extend(other.0);
        } else {
            tracing::debug!("ignoring failures of an unusable backend: {:?}", other.0);
        }
    }

    fn into_result(self, what: &str) -> CniResult<()> {
        match self.0.as_slice() {
            [] => Ok(()),
            [one] => Err(CniError::internal(format!("{what}: {one}"))),
            many => {
                let mut msg = format!("{what}: {} errors:", many.len());
                for e in many {
                    let _ = write!(msg, "\n\t* {e}");
                }
                Err(CniError::internal(msg))
            }
        }
    }
}

/// The objects (`{"table": ...}`, `{"chain": ...}`, `{"rule": ...}`) that `nft -j list ...`
/// printed.
fn nft_objects(json: &str) -> CniResult<Vec<serde_json::Value>> {
    let mut value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| CniError::internal(format!("could not parse nft output: {e}")))?;
    match value.get_mut("nftables").map(serde_json::Value::take) {
        Some(serde_json::Value::Array(items)) => Ok(items),
        _ => Err(CniError::internal("could not find result in nft output")),
    }
}

/// `length` characters of the hex SHA-512 of `text` (the reference's `MustFormatHashWithPrefix`
/// without prefix).
fn hash_hex(text: &str, length: usize) -> String {
    let mut hex = crate::sha512::hex_digest(text.as_bytes());
    hex.truncate(length);
    hex
}

/// Go's `%q` for the strings that occur here: ASCII escapes as Go writes them, other printable
/// characters verbatim. Network names and container IDs are `[a-zA-Z0-9_.-]`, so this only
/// matters for odd input.
fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0b' => out.push_str("\\v"),
            '\x0c' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
