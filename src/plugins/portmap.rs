//! portmap: forwards host ports to the container (chained after a main plugin), on iptables
//! or nftables, laid out as the reference (containernetworking/plugins v1.9.1
//! `plugins/meta/portmap`) does; see `crate::firewall::portmap`.
//!
//! Kept from the reference: the keys (`backend`, `snat`, `masqAll`, `markMasqBit`,
//! `externalSetMarkChain`, `conditionsV4`/`conditionsV6`, `runtimeConfig.portMappings`), their
//! validation and error texts, the choice of container addresses (first IPv4 and first IPv6
//! of the sandboxed `CNI_IFNAME`), `route_localnet` on the host interface towards the
//! container for localhost access, UDP conntrack cleanup (netlink, failures only logged), and
//! the result (prevResult passed through).
//!
//! Deliberately different:
//! * ADD records the attachment in `<dataDir>/<network>/<containerID>` (default dataDir
//!   `/run/cni/portmap`, an extra key). DEL then removes the container's rules even when the
//!   runtime does not send `portMappings` again (the reference does nothing then); DEL with
//!   neither mappings nor a record runs no iptables or nft command at all, and neither does
//!   ADD without mappings (no backend probe either). Rules are found by chain name and
//!   comment, never rebuilt from the mappings.
//! * CHECK only looks at the families the container has (plugins issue 819).
//! * A failed ADD removes the rules it made.
//! * GC removes the forwarding of containers of this network that are not in
//!   `cni.dev/valid-attachments`: iptables rules through their comments, nftables rules (whose
//!   comment is only the container ID) through the records.
//! * The host interface for `route_localnet` is found by longest-prefix match in the main
//!   table instead of a kernel route lookup.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use super::shared::{self, null_default};
use crate::cni::{Applet, CniError, CniOutput, CniResult, Request};
use crate::firewall::portmap::{self, PortMapping, PortmapSpec};
use crate::firewall::{self, MasqBackend};
use crate::netlink::{Family, Netlink};
use crate::sysctl;

pub const APPLET: Applet = Applet {
    name: "portmap",
    min_version: "0.1.0",
    run,
};

const DEFAULT_DATA_DIR: &str = "/run/cni/portmap";
const DEFAULT_MARK_BIT: i64 = 13;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PortMapConf {
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    snat: Option<bool>,
    #[serde(default, rename = "conditionsV4")]
    conditions_v4: Option<Vec<String>>,
    #[serde(default, rename = "conditionsV6")]
    conditions_v6: Option<Vec<String>>,
    #[serde(default, deserialize_with = "null_default")]
    masq_all: bool,
    #[serde(default)]
    mark_masq_bit: Option<i64>,
    #[serde(default)]
    external_set_mark_chain: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    runtime_config: RuntimeConfig,
    #[serde(default)]
    data_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeConfig {
    #[serde(default, deserialize_with = "null_default")]
    port_mappings: Vec<PortMapping>,
}

/// The configuration after the reference's validation.
struct Parsed {
    conf: PortMapConf,
    /// `None`: chosen on first use (probing runs commands).
    backend: Option<MasqBackend>,
    snat: bool,
    mark_bit: u32,
    prev: Option<CniOutput>,
    v4: Option<IpNetwork>,
    v6: Option<IpNetwork>,
}

fn run(req: &Request) -> CniResult<Option<CniOutput>> {
    shared::dispatch(req, add, del, check, gc, shared::nothing)
}

fn parse(req: &Request) -> CniResult<Parsed> {
    let conf: PortMapConf = serde_json::from_slice(&req.stdin)
        .map_err(|e| CniError::internal(format!("failed to parse network configuration: {e}")))?;
    let prev = req.prev_result()?;
    if conf.mark_masq_bit.is_some() && conf.external_set_mark_chain.is_some() {
        return Err(CniError::internal(
            "Cannot specify externalSetMarkChain and markMasqBit",
        ));
    }
    let bit = conf.mark_masq_bit.unwrap_or(DEFAULT_MARK_BIT);
    if !(0..=31).contains(&bit) {
        return Err(CniError::internal("MasqMarkBit must be between 0 and 31"));
    }
    let backend = match conf.backend.as_deref() {
        None => None,
        Some("iptables") => Some(MasqBackend::Iptables),
        Some("nftables") => Some(MasqBackend::Nftables),
        Some(other) => {
            return Err(CniError::internal(format!(
                "unrecognized backend {}",
                serde_json::Value::from(other)
            )));
        }
    };
    if let Some(b) = backend {
        check_backend_options(&conf, b)?;
    }
    for m in &conf.runtime_config.port_mappings {
        if m.container_port <= 0 {
            return Err(CniError::internal(format!(
                "Invalid container port number: {}",
                m.container_port
            )));
        }
        if m.host_port <= 0 {
            return Err(CniError::internal(format!(
                "Invalid host port number: {}",
                m.host_port
            )));
        }
    }
    let (mut v4, mut v6) = (None, None);
    if let Some(prev) = &prev {
        for ip in &prev.ips {
            let slot = if ip.address.is_ipv4() {
                &mut v4
            } else {
                &mut v6
            };
            if slot.is_some() {
                continue;
            }
            if let Some(iface) = ip.interface.and_then(|i| prev.interfaces.get(i))
                && (iface.name != req.env.ifname || iface.sandbox.is_empty())
            {
                continue;
            }
            *slot = Some(ip.address);
        }
    }
    Ok(Parsed {
        snat: conf.snat.unwrap_or(true),
        mark_bit: bit as u32,
        conf,
        backend,
        prev,
        v4,
        v6,
    })
}

/// Which backend an option list belongs to: iptables options start with `-` or `!`.
fn conditions_backend(conditions: &Option<Vec<String>>) -> Option<MasqBackend> {
    let first = conditions.as_ref()?.first()?;
    match first.chars().next()? {
        '-' | '!' => Some(MasqBackend::Iptables),
        _ => Some(MasqBackend::Nftables),
    }
}

fn name(b: MasqBackend) -> &'static str {
    match b {
        MasqBackend::Iptables => "iptables",
        MasqBackend::Nftables => "nftables",
    }
}

/// The reference's `ensureBackend`: no options of the other backend.
fn check_backend_options(conf: &PortMapConf, chosen: MasqBackend) -> CniResult<()> {
    let mut wrong = Vec::new();
    if chosen == MasqBackend::Nftables && conf.external_set_mark_chain.is_some() {
        wrong.push("externalSetMarkChain");
    }
    for (key, conditions) in [
        ("conditionsV4", &conf.conditions_v4),
        ("conditionsV6", &conf.conditions_v6),
    ] {
        if conditions_backend(conditions).is_some_and(|b| b != chosen) {
            wrong.push(key);
        }
    }
    if wrong.is_empty() {
        return Ok(());
    }
    let other = match chosen {
        MasqBackend::Iptables => MasqBackend::Nftables,
        MasqBackend::Nftables => MasqBackend::Iptables,
    };
    Err(CniError::internal(format!(
        "{} backend was requested but configuration contains {}-specific options [{}]",
        name(chosen),
        name(other),
        wrong.join(" ")
    )))
}

impl Parsed {
    /// The configured backend, or the detected one (checked against the options).
    fn backend(&self) -> CniResult<MasqBackend> {
        if let Some(b) = self.backend {
            return Ok(b);
        }
        let detected = firewall::choose_backend(None)?;
        check_backend_options(&self.conf, detected)?;
        Ok(detected)
    }

    fn spec<'a>(&'a self, req: &'a Request) -> PortmapSpec<'a> {
        PortmapSpec {
            network: &req.config.name,
            container_id: &req.env.container_id,
            mappings: &self.conf.runtime_config.port_mappings,
            snat: self.snat,
            masq_all: self.conf.masq_all,
            mark_bit: self.mark_bit,
            external_set_mark_chain: self.conf.external_set_mark_chain.as_deref(),
            conditions_v4: self.conf.conditions_v4.as_deref().unwrap_or(&[]),
            conditions_v6: self.conf.conditions_v6.as_deref().unwrap_or(&[]),
        }
    }

    fn data_dir(&self, network: &str) -> PathBuf {
        Path::new(self.conf.data_dir.as_deref().unwrap_or(DEFAULT_DATA_DIR)).join(network)
    }
}

/// What ADD leaves behind for DEL and GC.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    backend: String,
    #[serde(default)]
    ifname: String,
}

fn record_path(dir: &Path, container_id: &str) -> PathBuf {
    dir.join(container_id)
}

fn write_record(dir: &Path, container_id: &str, record: &Record) -> CniResult<()> {
    shared::write_record(dir, container_id, "port mappings", record)
}

fn read_record(dir: &Path, container_id: &str) -> Option<Record> {
    shared::read_record(dir, container_id)
}

fn backend_named(name: &str) -> Option<MasqBackend> {
    match name {
        "iptables" => Some(MasqBackend::Iptables),
        "nftables" => Some(MasqBackend::Nftables),
        _ => None,
    }
}

fn add(req: &Request) -> CniResult<CniOutput> {
    let p = parse(req).map_err(|e| e.context("failed to parse config"))?;
    let Some(prev) = p.prev.clone() else {
        return Err(CniError::internal("must be called as chained plugin"));
    };
    if p.conf.runtime_config.port_mappings.is_empty() {
        return Ok(prev);
    }
    let backend = p.backend()?;
    let spec = p.spec(req);
    let dir = p.data_dir(&req.config.name);
    // Recorded first, so that a DEL after a crash mid-way still cleans up.
    let record = Record {
        backend: name(backend).into(),
        ifname: req.env.ifname.clone(),
    };
    write_record(&dir, &req.env.container_id, &record)?;
    if let Err(e) = forward_all(&p, &spec, backend) {
        let _ = portmap::unforward_ports(backend, spec.network, spec.container_id);
        let _ = fs::remove_file(record_path(&dir, &req.env.container_id));
        return Err(e);
    }
    Ok(prev)
}

fn forward_all(p: &Parsed, spec: &PortmapSpec, backend: MasqBackend) -> CniResult<()> {
    let udp_ports: Vec<u16> = spec
        .mappings
        .iter()
        .filter(|m| m.protocol.eq_ignore_ascii_case("udp"))
        .filter_map(|m| u16::try_from(m.host_port).ok())
        .collect();
    if let Some(v4) = p.v4 {
        portmap::forward_ports(backend, spec, v4)?;
        // After the rules, so that new flows take them; failures are informational.
        if let Err(e) = portmap::delete_udp_conntrack(&udp_ports, false) {
            tracing::warn!(
                "failed to delete stale UDP conntrack entries for {}: {e}",
                v4.ip()
            );
        }
        if p.snat
            && let Some(host_if) = routable_host_interface(v4.ip())
        {
            let key = format!("net/ipv4/conf/{host_if}/route_localnet");
            sysctl::write(&key, "1")
                .map_err(|e| CniError::internal(format!("unable to enable route_localnet: {e}")))?;
        }
    }
    if let Some(v6) = p.v6 {
        portmap::forward_ports(backend, spec, v6)?;
        if let Err(e) = portmap::delete_udp_conntrack(&udp_ports, true) {
            tracing::warn!(
                "failed to delete stale UDP conntrack entries for {}: {e}",
                v6.ip()
            );
        }
    }
    Ok(())
}

/// The interface of the main-table route that reaches `ip` (longest prefix wins, then the
/// lowest metric): where 127/8 sources must be allowed to cross.
fn routable_host_interface(ip: IpAddr) -> Option<String> {
    let nl = Netlink::open().ok()?;
    let family = if ip.is_ipv4() { Family::V4 } else { Family::V6 };
    let routes = nl.routes(Some(family), None, None).ok()?;
    let best = routes
        .iter()
        .filter(|r| r.oif.is_some() && r.dst.contains(ip))
        .min_by_key(|r| (std::cmp::Reverse(r.dst.prefix()), r.priority.unwrap_or(0)))?;
    nl.link_by_index(best.oif?).ok().flatten().map(|l| l.name)
}

fn del(req: &Request) -> CniResult<()> {
    let p = parse(req).map_err(|e| e.context("failed to parse config"))?;
    let dir = p.data_dir(&req.config.name);
    let record = read_record(&dir, &req.env.container_id);
    let backend = match &record {
        Some(r) => match backend_named(&r.backend) {
            Some(b) => b,
            None => p.backend()?,
        },
        // Neither mappings nor a record: nothing of ours (no command runs).
        None if p.conf.runtime_config.port_mappings.is_empty() => return Ok(()),
        None => p.backend()?,
    };
    portmap::unforward_ports(backend, &req.config.name, &req.env.container_id)?;
    match fs::remove_file(record_path(&dir, &req.env.container_id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!("removing the portmap record: {e}");
        }
        _ => {}
    }
    Ok(())
}

fn check(req: &Request) -> CniResult<()> {
    let p = parse(req)?;
    if p.prev.is_none() {
        return Err(CniError::internal("Required prevResult missing"));
    }
    if p.conf.runtime_config.port_mappings.is_empty() {
        return Ok(());
    }
    let backend = match read_record(&p.data_dir(&req.config.name), &req.env.container_id)
        .and_then(|r| backend_named(&r.backend))
    {
        Some(b) if p.backend.is_none() => b,
        _ => p.backend()?,
    };
    let spec = p.spec(req);
    for ip in [p.v4, p.v6].into_iter().flatten() {
        portmap::check_ports(backend, &spec, ip)?;
    }
    Ok(())
}

/// GC: the forwarding of every container of this network that is not a valid attachment.
/// With no list at all nothing is known to be stale.
fn gc(req: &Request) -> CniResult<()> {
    let p = parse(req)?;
    let Some(keep) = req.config.attachments_to_keep() else {
        return Ok(());
    };
    let keep: Vec<String> = keep.iter().map(|a| a.container_id.clone()).collect();
    let dir = p.data_dir(&req.config.name);
    let mut stale_records = Vec::new();
    let mut stale_nft = Vec::new();
    if let Ok(entries) = fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if id.starts_with('.') || keep.contains(&id) {
                continue;
            }
            if read_record(&dir, &id).is_some_and(|r| r.backend == "nftables") {
                stale_nft.push(id.clone());
            }
            stale_records.push(entry.path());
        }
    }
    portmap::gc(&req.config.name, &keep, &stale_nft)?;
    for path in stale_records {
        let _ = fs::remove_file(path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: &str) -> PortMapConf {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn portmap_options_of_the_other_backend_are_refused() {
        let c = conf(r#"{"conditionsV4":["-s","1.2.3.4"],"externalSetMarkChain":"KUBE-MARK"}"#);
        assert!(check_backend_options(&c, MasqBackend::Iptables).is_ok());
        let e = check_backend_options(&c, MasqBackend::Nftables).unwrap_err();
        assert_eq!(
            e.msg,
            "nftables backend was requested but configuration contains iptables-specific options [externalSetMarkChain conditionsV4]"
        );
        let nft = conf(r#"{"conditionsV6":["ip6","saddr","::1"],"conditionsV4":[]}"#);
        assert!(check_backend_options(&nft, MasqBackend::Nftables).is_ok());
        assert!(check_backend_options(&nft, MasqBackend::Iptables).is_err());
    }

    #[test]
    fn portmap_null_and_missing_keys() {
        let c = conf(r#"{"runtimeConfig":null,"masqAll":null,"markMasqBit":null}"#);
        assert!(c.runtime_config.port_mappings.is_empty());
        assert!(c.mark_masq_bit.is_none());
        let m = conf(
            r#"{"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}]}}"#,
        );
        assert_eq!(m.runtime_config.port_mappings[0].host_ip, "127.0.0.1");
    }
}
