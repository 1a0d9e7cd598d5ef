//! tuning: sets network sysctls and link attributes (MAC, MTU, promiscuous and all-multicast
//! mode, transmit queue length) of `CNI_IFNAME` in the container, and restores the link
//! attributes on DEL from a backup file.
//!
//! Kept from the reference (containernetworking/plugins v1.9.1 `plugins/meta/tuning`):
//! the keys and their `args.cni` overrides (MAC: key < `CNI_ARGS` < `runtimeConfig.mac` <
//! `args.cni.mac`), `IFNAME` substitution and the `/proc/sys/net/` restriction, the allowlist
//! `/etc/cni/tuning/allowlist.conf`, duplicate `sysctl` keys refused, the backup
//! `<dataDir>/<containerID>_<ifname>.json` (default dataDir `/run/cni/tuning`) in the same
//! JSON shape, the error texts, and a DEL that reports nothing but bad configuration.
//!
//! Deliberately different: the whole configuration is validated before anything changes
//! (the reference writes sysctls before it finds a bad MAC or key); `args.cni.sysctl` without a
//! top-level `sysctl` works (the reference panics); a second ADD keeps the first backup's
//! original values; a DEL whose namespace or interface is gone drops the backup file instead
//! of leaking it; GC removes backups of this network's attachments that no longer exist; the
//! backup records the network name for that (an extra key the reference ignores).

mod regex;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::cni::{Applet, CniError, CniOutput, CniResult, Request};
use crate::iface::{in_netns, parse_mac};
use crate::netlink::{LinkFlag, Netlink, format_mac};
use crate::netns::{NetNs, NetnsError};
use crate::plugins::shared::{self, null_default};
use crate::sysctl;

pub const APPLET: Applet = Applet {
    name: "tuning",
    min_version: "0.1.0",
    run,
};

const DEFAULT_DATA_DIR: &str = "/run/cni/tuning";
const ALLOWLIST: &str = "/etc/cni/tuning/allowlist.conf";
const DUPLICATE_SYSCTL: &str = "duplicated sysctl keys are not allowed";

fn run(req: &Request) -> CniResult<Option<CniOutput>> {
    shared::dispatch(req, add, del, check, gc, shared::nothing)
}

// ------------------------------------------------------------------ configuration

/// A JSON object of strings kept in order, refusing repeated keys when `unique`.
#[derive(Debug, Default, Clone)]
struct Entries(Vec<(String, String)>);

struct EntriesVisitor {
    unique: bool,
}

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Entries;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of strings")
    }

    fn visit_unit<E>(self) -> Result<Entries, E> {
        Ok(Entries::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
        let mut entries: Vec<(String, String)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, String>()? {
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some(_) if self.unique => {
                    return Err(serde::de::Error::custom(DUPLICATE_SYSCTL));
                }
                // Later wins, as with a Go map.
                Some(slot) => slot.1 = value,
                None => entries.push((key, value)),
            }
        }
        Ok(Entries(entries))
    }
}

fn unique_entries<'de, D: Deserializer<'de>>(de: D) -> Result<Entries, D::Error> {
    de.deserialize_any(EntriesVisitor { unique: true })
}

fn entries<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Entries>, D::Error> {
    de.deserialize_option(OptionEntries)
}

struct OptionEntries;

impl<'de> Visitor<'de> for OptionEntries {
    type Value = Option<Entries>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object of strings or null")
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(EntriesVisitor { unique: false })
            .map(Some)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    #[serde(default, deserialize_with = "null_default")]
    data_dir: String,
    #[serde(default, deserialize_with = "unique_entries")]
    sysctl: Entries,
    #[serde(default, deserialize_with = "null_default")]
    mac: String,
    #[serde(default, deserialize_with = "null_default")]
    promisc: bool,
    #[serde(default, deserialize_with = "null_default")]
    mtu: i64,
    #[serde(default, rename = "txQLen")]
    tx_qlen: Option<i64>,
    #[serde(default)]
    allmulti: Option<bool>,
    #[serde(default, deserialize_with = "null_default")]
    runtime_config: RuntimeConfig,
    #[serde(default)]
    args: Option<ArgsField>,
}

#[derive(Debug, Default, Deserialize)]
struct RuntimeConfig {
    #[serde(default, deserialize_with = "null_default")]
    mac: String,
}

#[derive(Debug, Default, Deserialize)]
struct ArgsField {
    #[serde(default)]
    cni: Option<CniArgsOverrides>,
}

#[derive(Debug, Default, Deserialize)]
struct CniArgsOverrides {
    #[serde(default, deserialize_with = "entries")]
    sysctl: Option<Entries>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    promisc: Option<bool>,
    #[serde(default)]
    mtu: Option<i64>,
    #[serde(default)]
    allmulti: Option<bool>,
    #[serde(default, rename = "txQLen")]
    tx_qlen: Option<i64>,
}

/// The effective settings after every override, validated.
#[derive(Debug, Default, Clone, PartialEq)]
struct Tuning {
    data_dir: PathBuf,
    /// `(key as configured, value)`, in configuration order.
    sysctl: Vec<(String, String)>,
    /// The configured text and its bytes.
    mac: Option<(String, [u8; 6])>,
    promisc: bool,
    mtu: Option<u32>,
    allmulti: Option<bool>,
    txqlen: Option<u32>,
}

impl Tuning {
    fn changes_link(&self) -> bool {
        self.mac.is_some()
            || self.mtu.is_some()
            || self.promisc
            || self.allmulti.is_some()
            || self.txqlen.is_some()
    }
}

/// The reference's `parseConf`, plus the value checks it leaves to the kernel or to the
/// middle of ADD.
fn parse_conf(req: &Request) -> CniResult<Tuning> {
    let raw: RawConf = serde_json::from_slice(&req.stdin).map_err(|e| {
        if e.to_string().starts_with(DUPLICATE_SYSCTL) {
            CniError::internal(DUPLICATE_SYSCTL)
        } else {
            CniError::internal(format!("failed to load netconf: {e}"))
        }
    })?;
    // The key, then CNI_ARGS, then runtimeConfig, then args.cni (below): the last set wins.
    let mut mac = raw.mac.clone();
    if let Some(env_mac) = req.cni_args(&["MAC"])?.get("MAC")
        && !env_mac.is_empty()
    {
        mac = env_mac.to_string();
    }
    if !raw.runtime_config.mac.is_empty() {
        mac = raw.runtime_config.mac.clone();
    }
    let mut sysctl = raw.sysctl.0;
    let mut promisc = raw.promisc;
    let mut mtu = raw.mtu;
    let mut allmulti = raw.allmulti;
    let mut tx_qlen = raw.tx_qlen;
    if let Some(over) = raw.args.and_then(|a| a.cni) {
        for (key, value) in over.sysctl.map(|e| e.0).unwrap_or_default() {
            match sysctl.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => sysctl.push((key, value)),
            }
        }
        if let Some(m) = over.mac {
            mac = m;
        }
        promisc = over.promisc.unwrap_or(promisc);
        mtu = over.mtu.unwrap_or(mtu);
        allmulti = over.allmulti.or(allmulti);
        tx_qlen = over.tx_qlen.or(tx_qlen);
    }
    let mac = match mac.as_str() {
        "" => None,
        text => Some((
            text.to_string(),
            parse_mac(text).ok_or_else(|| {
                CniError::internal(format!(
                    "invalid args {text} for MAC addr: address {text}: invalid MAC address"
                ))
            })?,
        )),
    };
    let mtu = match mtu {
        0 => None,
        m => Some(u32::try_from(m).map_err(|_| {
            CniError::internal(format!("invalid MTU {m}: must be between 1 and 4294967295"))
        })?),
    };
    let txqlen = tx_qlen
        .map(|q| {
            u32::try_from(q).map_err(|_| {
                CniError::internal(format!(
                    "invalid txQLen {q}: must be between 0 and 4294967295"
                ))
            })
        })
        .transpose()?;
    Ok(Tuning {
        data_dir: PathBuf::from(if raw.data_dir.is_empty() {
            DEFAULT_DATA_DIR
        } else {
            &raw.data_dir
        }),
        sysctl,
        mac,
        promisc,
        mtu,
        allmulti,
        txqlen,
    })
}

/// The allowlist's patterns, or None when the file does not exist.
fn read_allowlist(path: &Path) -> CniResult<Option<Vec<String>>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(
            text.split('\n')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CniError::internal(format!("open {}: {e}", path.display()))),
    }
}

/// Every key must match one pattern of the allowlist, when there is one.
fn check_allowlist(keys: &[(String, String)], allowlist: Option<&[String]>) -> CniResult<()> {
    let Some(patterns) = allowlist else {
        return Ok(());
    };
    let compiled = patterns
        .iter()
        .map(|p| regex::Regex::new(p).map_err(CniError::internal))
        .collect::<CniResult<Vec<_>>>()?;
    for (key, _) in keys {
        if !compiled.iter().any(|re| re.is_match(key)) {
            return Err(CniError::internal(format!(
                "Sysctl {key} is not allowed. Only the following sysctls are allowed: [{}]",
                patterns.join(" ")
            )));
        }
    }
    Ok(())
}

/// Go's `filepath.Clean` for an absolute path.
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The sysctl name (slash form, under `net/`) a configured key stands for: dots become
/// slashes, then the first `IFNAME` becomes the interface name (which may contain dots).
fn sysctl_name(key: &str, ifname: &str) -> CniResult<String> {
    let key = key.replace('.', "/").replacen("IFNAME", ifname, 1);
    let file = clean(&format!("/proc/sys/{key}"));
    match file.strip_prefix("/proc/sys/") {
        Some(name) if name.starts_with("net/") => Ok(name.to_string()),
        _ => Err(CniError::internal(format!(
            "invalid net sysctl key: {key:?}"
        ))),
    }
}

// ------------------------------------------------------------------ backup file

/// What DEL restores; the reference's `configToRestore`, written with one-space indents.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Backup {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    promisc: Option<bool>,
    #[serde(default, skip_serializing_if = "is_zero")]
    mtu: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    allmulti: Option<bool>,
    #[serde(default, rename = "txQLen", skip_serializing_if = "Option::is_none")]
    txqlen: Option<u32>,
    /// Which network made the file, so GC only ever removes its own.
    #[serde(
        default,
        rename = "cniNetwork",
        skip_serializing_if = "String::is_empty"
    )]
    network: String,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn backup_path(dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    dir.join(format!("{container_id}_{ifname}.json"))
}

fn read_backup(path: &Path) -> Option<Backup> {
    let text = fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

fn write_backup(dir: &Path, path: &Path, backup: &Backup) -> CniResult<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| CniError::internal(format!("failed to create backup directory: {e}")))?;
    }
    let mut text = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut text, formatter);
    backup
        .serialize(&mut ser)
        .map_err(|e| CniError::internal(format!("failed to marshall data: {e}")))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let saved = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&text))
        .and_then(|()| fs::rename(&tmp, path));
    saved.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        CniError::internal(format!("failed to save file {name}: {e}"))
    })
}

// ------------------------------------------------------------------ verbs

fn in_container<T>(req: &Request, work: impl FnOnce(&Netlink) -> CniResult<T>) -> CniResult<T> {
    let ns = crate::plugins::shared::open_netns(&req.env.netns)?;
    in_netns(&ns, work)
}

fn link_index(nl: &Netlink, ifname: &str) -> CniResult<u32> {
    match nl.link_by_name(ifname) {
        Ok(Some(link)) => Ok(link.index),
        Ok(None) => Err(CniError::internal(format!(
            "failed to get {ifname:?}: Link not found"
        ))),
        Err(e) => Err(CniError::internal(format!("failed to get {ifname:?}: {e}"))),
    }
}

fn require_prev_result(req: &Request) -> CniResult<CniOutput> {
    if req.config.prev_result.as_ref().is_none_or(|v| v.is_null()) {
        return Err(CniError::internal("Required prevResult missing"));
    }
    req.prev_result()?
        .ok_or_else(|| CniError::internal("Required prevResult missing"))
}

fn validate_ifname(ifname: &str) -> CniResult<()> {
    if ifname.contains('/') {
        return Err(CniError::internal(format!(
            "Interface name ({ifname}) contains an invalid character /"
        )));
    }
    Ok(())
}

fn add(req: &Request) -> CniResult<CniOutput> {
    let conf = parse_conf(req)?;
    check_allowlist(
        &conf.sysctl,
        read_allowlist(Path::new(ALLOWLIST))?.as_deref(),
    )?;
    let ifname = req.env.ifname.as_str();
    validate_ifname(ifname)?;
    let mut result = require_prev_result(req)?;
    let sysctls = conf
        .sysctl
        .iter()
        .map(|(key, value)| Ok((sysctl_name(key, ifname)?, value.as_str())))
        .collect::<CniResult<Vec<_>>>()?;
    let backup_file = backup_path(&conf.data_dir, &req.env.container_id, ifname);

    in_container(req, |nl| {
        for (name, value) in &sysctls {
            sysctl::write(name, value).map_err(|e| {
                CniError::internal(format!("open {}: {e}", sysctl::path(name).display()))
            })?;
        }
        if !conf.changes_link() {
            return Ok(());
        }
        let index = link_index(nl, ifname)?;
        save_originals(nl, index, &conf, &backup_file, &req.config.name)?;
        let fail = |e| CniError::internal(e);
        if let Some((_, mac)) = conf.mac {
            nl.set_mac(index, mac).map_err(fail)?;
        }
        if conf.promisc {
            nl.set_link_flag(index, LinkFlag::Promisc, true)
                .map_err(fail)?;
        }
        if let Some(mtu) = conf.mtu {
            nl.set_mtu(index, mtu).map_err(fail)?;
        }
        if let Some(on) = conf.allmulti {
            nl.set_link_flag(index, LinkFlag::AllMulti, on)
                .map_err(fail)?;
        }
        if let Some(qlen) = conf.txqlen {
            nl.set_link_txqlen(index, qlen).map_err(fail)?;
        }
        Ok(())
    })?;

    if let Some((_, mac)) = conf.mac {
        for iface in result.interfaces.iter_mut().filter(|i| i.name == ifname) {
            iface.mac = format_mac(mac);
        }
    }
    Ok(result)
}

/// Writes the values about to change to the backup file. A backup left by an earlier ADD
/// keeps its values (they are the originals); only attributes it lacks are added.
fn save_originals(
    nl: &Netlink,
    index: u32,
    conf: &Tuning,
    path: &Path,
    network: &str,
) -> CniResult<()> {
    let link = nl
        .link_by_index(index)
        .map_err(CniError::internal)?
        .ok_or_else(|| CniError::internal("link vanished"))?;
    let flags = nl
        .link_flags(index)
        .map_err(CniError::internal)?
        .ok_or_else(|| CniError::internal("link vanished"))?;
    let mut backup = read_backup(path).unwrap_or_default();
    if conf.mac.is_some() && backup.mac.is_empty() {
        backup.mac = link.mac.map(format_mac).unwrap_or_default();
    }
    if conf.promisc && backup.promisc.is_none() {
        backup.promisc = Some(flags.promisc);
    }
    if conf.mtu.is_some() && backup.mtu == 0 {
        backup.mtu = link.mtu;
    }
    if conf.allmulti.is_some() && backup.allmulti.is_none() {
        backup.allmulti = Some(flags.allmulti);
    }
    if conf.txqlen.is_some() && backup.txqlen.is_none() {
        backup.txqlen = Some(flags.txqlen);
    }
    backup.network = network.to_string();
    let dir = path.parent().unwrap_or(Path::new("/"));
    write_backup(dir, path, &backup)
}

/// Restores the saved attributes; every failure is only logged, as the reference does.
fn del(req: &Request) -> CniResult<()> {
    let conf = parse_conf(req)?;
    let ifname = req.env.ifname.clone();
    let path = backup_path(&conf.data_dir, &req.env.container_id, &ifname);
    if !path.exists() {
        return Ok(());
    }
    let Some(backup) = read_backup(&path) else {
        tracing::warn!("backup {} is unreadable; left in place", path.display());
        return Ok(());
    };
    let ns = match NetNs::open(&req.env.netns) {
        Ok(ns) => ns,
        Err(NetnsError::NotFound(_)) => {
            // The interface went with its namespace: nothing left to restore.
            remove_backup(&path);
            return Ok(());
        }
        Err(e) if req.env.netns.is_empty() => {
            tracing::debug!("no netns: {e}");
            remove_backup(&path);
            return Ok(());
        }
        Err(e) => {
            tracing::warn!("cannot restore {ifname}: {e}");
            return Ok(());
        }
    };
    let restored = in_netns(&ns, |nl| restore(nl, &ifname, &backup));
    match restored {
        Ok(()) => remove_backup(&path),
        Err(e) => tracing::warn!("restoring {ifname} from {}: {e}", path.display()),
    }
    Ok(())
}

fn remove_backup(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        tracing::warn!("failed to remove file {}: {e}", path.display());
    }
}

/// The reference's `restoreBackup` order: MTU, MAC, promiscuous, all-multicast, queue length.
/// A missing interface has nothing to restore.
fn restore(nl: &Netlink, ifname: &str, backup: &Backup) -> CniResult<()> {
    let Some(link) = nl.link_by_name(ifname).map_err(CniError::internal)? else {
        return Ok(());
    };
    let index = link.index;
    let mut errors = Vec::new();
    if backup.mtu != 0
        && let Err(e) = nl.set_mtu(index, backup.mtu)
    {
        errors.push(format!("failed to restore MTU: {e}"));
    }
    if !backup.mac.is_empty() {
        match parse_mac(&backup.mac) {
            Some(mac) => {
                if let Err(e) = nl.set_mac(index, mac) {
                    errors.push(format!("failed to restore MAC address: {e}"));
                }
            }
            None => errors.push(format!(
                "failed to restore MAC address: invalid args {} for MAC addr",
                backup.mac
            )),
        }
    }
    if let Some(on) = backup.promisc
        && let Err(e) = nl.set_link_flag(index, LinkFlag::Promisc, on)
    {
        errors.push(format!("failed to restore promiscuous mode: {e}"));
    }
    if let Some(on) = backup.allmulti
        && let Err(e) = nl.set_link_flag(index, LinkFlag::AllMulti, on)
    {
        errors.push(format!("failed to restore all-multicast mode: {e}"));
    }
    if let Some(qlen) = backup.txqlen
        && let Err(e) = nl.set_link_txqlen(index, qlen)
    {
        errors.push(format!("failed to restore transmit queue length: {e}"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::internal(errors.join("; ")))
    }
}

fn check(req: &Request) -> CniResult<()> {
    let conf = parse_conf(req)?;
    require_prev_result(req)?;
    let ifname = req.env.ifname.as_str();
    let sysctls = conf
        .sysctl
        .iter()
        .map(|(key, value)| Ok((sysctl_name(key, ifname)?, value.as_str())))
        .collect::<CniResult<Vec<_>>>()?;
    in_container(req, |nl| {
        for (name, want) in &sysctls {
            let file = sysctl::path(name);
            let current = sysctl::read(name)
                .map_err(|e| CniError::internal(format!("open {}: {e}", file.display())))?;
            if current != *want {
                return Err(CniError::internal(format!(
                    "Error: Tuning configured value of {} is {want}, current value is {current}",
                    file.display()
                )));
            }
        }
        let link =
            nl.link_by_name(ifname).ok().flatten().ok_or_else(|| {
                CniError::internal(format!("Cannot find container link {ifname}"))
            })?;
        let flags =
            nl.link_flags(link.index).ok().flatten().ok_or_else(|| {
                CniError::internal(format!("Cannot find container link {ifname}"))
            })?;
        if let Some((text, mac)) = &conf.mac
            && link.mac != Some(*mac)
        {
            return Err(CniError::internal(format!(
                "Error: Tuning configured Ethernet of {ifname} is {text}, current value is {}",
                link.mac.map(format_mac).unwrap_or_default()
            )));
        }
        if conf.promisc != flags.promisc {
            return Err(CniError::internal(format!(
                "Error: Tuning link {ifname} configured promisc is {}, current value is {}",
                conf.promisc,
                u8::from(flags.promisc)
            )));
        }
        if let Some(mtu) = conf.mtu
            && mtu != link.mtu
        {
            return Err(CniError::internal(format!(
                "Error: Tuning configured MTU of {ifname} is {mtu}, current value is {}",
                link.mtu
            )));
        }
        if let Some(on) = conf.allmulti
            && on != flags.allmulti
        {
            return Err(CniError::internal(format!(
                "Error: Tuning configured all-multicast mode of {ifname} is {on}, current value is {}",
                flags.allmulti
            )));
        }
        if let Some(qlen) = conf.txqlen
            && qlen != flags.txqlen
        {
            return Err(CniError::internal(format!(
                "Error: Tuning configured Transmit Queue Length of {ifname} is {qlen}, current value is {}",
                flags.txqlen
            )));
        }
        Ok(())
    })
}

/// Removes this network's backup files whose attachment is not in the valid list.
fn gc(req: &Request) -> CniResult<()> {
    let Some(keep) = req.config.attachments_to_keep() else {
        return Ok(());
    };
    let conf = parse_conf(req)?;
    let keep: BTreeSet<String> = keep
        .iter()
        .map(|a| format!("{}_{}.json", a.container_id, a.ifname))
        .collect();
    let entries = match fs::read_dir(&conf.data_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(CniError::internal(format!(
                "failed to read {}: {e}",
                conf.data_dir.display()
            )));
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") || keep.contains(&name) {
            continue;
        }
        let path = entry.path();
        if read_backup(&path).is_some_and(|b| b.network == req.config.name) {
            remove_backup(&path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_sysctl_keys_map_to_net_files() {
        assert_eq!(
            sysctl_name("net.ipv4.conf.IFNAME.arp_filter", "eth0.100").unwrap(),
            "net/ipv4/conf/eth0.100/arp_filter"
        );
        assert_eq!(
            sysctl_name("net/core/somaxconn", "eth0").unwrap(),
            "net/core/somaxconn"
        );
        assert_eq!(
            sysctl_name("net.IFNAME.IFNAME", "e0").unwrap(),
            "net/e0/IFNAME"
        );
        for bad in ["kernel.hostname", "net", "/proc/sys/net/x", "vm/net/x"] {
            let e = sysctl_name(bad, "eth0").unwrap_err();
            assert!(e.msg.starts_with("invalid net sysctl key"), "{bad}: {e}");
        }
        // Dots become slashes before the path is cleaned, so `..` cannot climb out of net/.
        assert_eq!(
            sysctl_name("net/../kernel/x", "eth0").unwrap(),
            "net/kernel/x"
        );
        assert_eq!(sysctl_name("net/./core//x", "eth0").unwrap(), "net/core/x");
    }

    #[test]
    fn tuning_allowlist_needs_every_key_to_match() {
        let list = vec![
            r"^net\.core\.somaxconn$".to_string(),
            "^net.ipv4".to_string(),
        ];
        let keys = |k: &[&str]| -> Vec<(String, String)> {
            k.iter().map(|k| (k.to_string(), "1".to_string())).collect()
        };
        assert!(check_allowlist(&keys(&["net.core.somaxconn", "net.ipv4.x"]), Some(&list)).is_ok());
        let e = check_allowlist(&keys(&["net.core.somaxconn2"]), Some(&list)).unwrap_err();
        assert_eq!(
            e.msg,
            r"Sysctl net.core.somaxconn2 is not allowed. Only the following sysctls are allowed: [^net\.core\.somaxconn$ ^net.ipv4]"
        );
        assert!(check_allowlist(&keys(&["kernel.x"]), None).is_ok());
        let bad = vec!["(".to_string()];
        assert!(check_allowlist(&keys(&["net.x"]), Some(&bad)).is_err());
        assert!(check_allowlist(&[], Some(&bad)).is_err());
    }

    #[test]
    fn tuning_backup_is_written_like_the_reference() {
        let backup = Backup {
            mac: "0a:58:0a:00:00:02".into(),
            promisc: Some(false),
            mtu: 1500,
            allmulti: None,
            txqlen: Some(1000),
            network: String::new(),
        };
        let dir = std::env::temp_dir().join(format!("tuning-unit-{}", std::process::id()));
        let path = backup_path(&dir, "c1", "eth0");
        write_backup(&dir, &path, &backup).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\n \"mac\": \"0a:58:0a:00:00:02\",\n \"promisc\": false,\n \"mtu\": 1500,\n \"txQLen\": 1000\n}"
        );
        assert_eq!(read_backup(&path), Some(backup));
        fs::remove_dir_all(&dir).unwrap();
    }
}
