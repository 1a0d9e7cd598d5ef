//! firewall: admits the container's traffic through the host's FORWARD filtering (chained
//! after a main plugin), as the reference (containernetworking/plugins v1.9.1
//! `plugins/meta/firewall`) does, on iptables (`CNI-FORWARD` with the admin chain, see
//! `crate::firewall::filter`) or firewalld (the addresses as sources of a zone, over D-Bus,
//! see `crate::firewall::firewalld`), plus `ingressPolicy` `same-bridge` / `isolated`.
//!
//! Deliberately different from the reference:
//! * `ingressPolicy` is validated before anything changes (the reference adds the rules first).
//! * ADD records the attachment's addresses and backend in
//!   `<dataDir>/<network>/<containerID>_<ifname>` (default dataDir `/run/cni/firewall`, an extra
//!   key), so that DEL without `prevResult` still removes the rules, and GC removes those of
//!   attachments that are not in `cni.dev/valid-attachments` (never an address a kept
//!   attachment still uses: the rules carry no owner).
//! * Only the iptables command of a family in use is needed (the reference wants both).
//! * CHECK creates nothing, and with firewalld a `false` from `querySource` fails.
//! * An explicit `firewalld` backend without a system bus or firewalld fails with a message
//!   naming the missing service.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cni::{Applet, CniError, CniOutput, CniResult, Request};
use crate::firewall::filter::{self, DEFAULT_ADMIN_CHAIN};
use crate::firewall::firewalld::{self, Firewalld};
use crate::plugins::shared;

pub const APPLET: Applet = Applet {
    name: "firewall",
    min_version: "0.4.0",
    run,
};

const DEFAULT_DATA_DIR: &str = "/run/cni/firewall";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FirewallConf {
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    iptables_admin_chain_name: Option<String>,
    #[serde(default)]
    firewalld_zone: Option<String>,
    #[serde(default)]
    ingress_policy: Option<String>,
    #[serde(default)]
    data_dir: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Iptables,
    Firewalld,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Open,
    SameBridge,
    Isolated,
}

impl FirewallConf {
    fn admin_chain(&self) -> &str {
        self.iptables_admin_chain_name
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_ADMIN_CHAIN)
    }

    fn zone(&self) -> &str {
        self.firewalld_zone
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("trusted")
    }

    fn policy(&self) -> CniResult<Policy> {
        match self.ingress_policy.as_deref().unwrap_or("") {
            "" | "open" => Ok(Policy::Open),
            "same-bridge" => Ok(Policy::SameBridge),
            "isolated" => Ok(Policy::Isolated),
            other => Err(CniError::internal(format!(
                "unknown ingress policy: {}",
                serde_json::Value::from(other)
            ))),
        }
    }

    /// The reference's `getBackend`: explicit, else firewalld when it answers on the bus.
    fn backend(&self) -> Backend {
        match self.backend.as_deref() {
            Some("iptables") => Backend::Iptables,
            Some("firewalld") => Backend::Firewalld,
            _ if firewalld::is_running() => Backend::Firewalld,
            _ => Backend::Iptables,
        }
    }

    fn dir(&self, network: &str) -> PathBuf {
        Path::new(self.data_dir.as_deref().unwrap_or(DEFAULT_DATA_DIR)).join(network)
    }
}

fn run(req: &Request) -> CniResult<Option<CniOutput>> {
    shared::dispatch(req, add, del, check, gc, shared::nothing)
}

fn parse(req: &Request) -> CniResult<(FirewallConf, Option<CniOutput>)> {
    let conf: FirewallConf = serde_json::from_slice(&req.stdin)
        .map_err(|e| CniError::internal(format!("failed to load netconf: {e}")))?;
    Ok((conf, req.prev_result()?))
}

fn ips_of(result: &CniOutput) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    for ip in &result.ips {
        if !ips.contains(&ip.address.ip()) {
            ips.push(ip.address.ip());
        }
    }
    ips
}

fn add(req: &Request) -> CniResult<CniOutput> {
    let (conf, prev) = parse(req)?;
    let Some(prev) = prev else {
        return Err(CniError::internal("missing prevResult from earlier plugin"));
    };
    let policy = conf.policy()?;
    let backend = conf.backend();
    let ips = ips_of(&prev);
    let record = Record {
        backend: match backend {
            Backend::Iptables => "iptables".into(),
            Backend::Firewalld => "firewalld".into(),
        },
        admin_chain: conf.admin_chain().into(),
        zone: conf.zone().into(),
        ips: ips.clone(),
    };
    let dir = conf.dir(&req.config.name);
    write_record(&dir, &record_name(req), &record)?;
    if let Err(e) = install(&conf, &prev, backend, policy, &ips) {
        // Best effort: what was added, and the record (the runtime's DEL may not come).
        let _ = remove(backend, &conf, &ips);
        let _ = fs::remove_file(dir.join(record_name(req)));
        return Err(e);
    }
    Ok(prev)
}

fn install(
    conf: &FirewallConf,
    prev: &CniOutput,
    backend: Backend,
    policy: Policy,
    ips: &[IpAddr],
) -> CniResult<()> {
    match backend {
        Backend::Iptables => filter::add_rules(conf.admin_chain(), ips)?,
        Backend::Firewalld => {
            let mut fw = Firewalld::connect()?;
            for ip in ips {
                fw.add_source(conf.zone(), &filter::host_cidr(*ip))?;
            }
        }
    }
    if policy != Policy::Open {
        let bridge = match prev.interfaces.first() {
            None => {
                return Err(CniError::internal(format!(
                    "interface needs to be set for ingress policy {}, make sure to chain \"firewall\" plugin with \"bridge\"",
                    serde_json::Value::from(conf.ingress_policy.clone().unwrap_or_default())
                )));
            }
            Some(i) if i.name.is_empty() => {
                return Err(CniError::internal("got empty bridge name"));
            }
            Some(i) => i.name.clone(),
        };
        filter::setup_isolation(&bridge, policy == Policy::Isolated, ips)?;
    }
    Ok(())
}

fn del(req: &Request) -> CniResult<()> {
    let (conf, prev) = parse(req)?;
    let dir = conf.dir(&req.config.name);
    let name = record_name(req);
    let record = read_record(&dir, &name);
    let mut ips = prev.as_ref().map(ips_of).unwrap_or_default();
    if let Some(r) = &record {
        for ip in &r.ips {
            if !ips.contains(ip) {
                ips.push(*ip);
            }
        }
    }
    if !ips.is_empty() {
        let backend = match record.as_ref().map(|r| r.backend.as_str()) {
            Some("iptables") => Backend::Iptables,
            Some("firewalld") => Backend::Firewalld,
            _ => conf.backend(),
        };
        remove(backend, &conf, &ips)?;
    }
    let _ = fs::remove_file(dir.join(&name));
    conf.policy().map(|_| ())
}

fn remove(backend: Backend, conf: &FirewallConf, ips: &[IpAddr]) -> CniResult<()> {
    match backend {
        Backend::Iptables => filter::del_rules(ips),
        Backend::Firewalld => {
            let mut fw = Firewalld::connect()?;
            for ip in ips {
                fw.remove_source(conf.zone(), &filter::host_cidr(*ip));
            }
        }
    }
    Ok(())
}

fn check(req: &Request) -> CniResult<()> {
    let (conf, prev) = parse(req)?;
    let Some(prev) = prev else {
        return Err(CniError::internal("missing prevResult from earlier plugin"));
    };
    let ips = ips_of(&prev);
    match conf.backend() {
        Backend::Iptables => filter::check_rules(conf.admin_chain(), &ips),
        Backend::Firewalld => {
            let mut fw = Firewalld::connect()?;
            for ip in &ips {
                fw.query_source(conf.zone(), &filter::host_cidr(*ip))?;
            }
            Ok(())
        }
    }
}

/// What ADD leaves behind for DEL and GC.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    backend: String,
    #[serde(default)]
    admin_chain: String,
    #[serde(default)]
    zone: String,
    ips: Vec<IpAddr>,
}

fn record_name(req: &Request) -> String {
    format!("{}_{}", req.env.container_id, req.env.ifname)
}

fn write_record(dir: &Path, name: &str, record: &Record) -> CniResult<()> {
    shared::write_record(dir, name, "firewall rules", record)
}

fn read_record(dir: &Path, name: &str) -> Option<Record> {
    shared::read_record(dir, name)
}

/// GC: the rules of recorded attachments of this network that are not valid any more, except
/// addresses that a kept attachment uses.
fn gc(req: &Request) -> CniResult<()> {
    let (conf, _) = parse(req)?;
    let Some(keep) = req.config.attachments_to_keep() else {
        return Ok(());
    };
    let kept: Vec<String> = keep
        .iter()
        .map(|a| format!("{}_{}", a.container_id, a.ifname))
        .collect();
    let dir = conf.dir(&req.config.name);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut records: Vec<(String, Option<Record>)> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let record = read_record(&dir, &name);
        records.push((name, record));
    }
    let in_use: Vec<IpAddr> = records
        .iter()
        .filter(|(name, _)| kept.contains(name))
        .filter_map(|(_, r)| r.as_ref())
        .flat_map(|r| r.ips.iter().copied())
        .collect();
    let mut first_error = None;
    for (name, record) in &records {
        if kept.contains(name) {
            continue;
        }
        if let Some(r) = record {
            let ips: Vec<IpAddr> = r
                .ips
                .iter()
                .copied()
                .filter(|ip| !in_use.contains(ip))
                .collect();
            let backend = if r.backend == "firewalld" {
                Backend::Firewalld
            } else {
                Backend::Iptables
            };
            let zone_conf = FirewallConf {
                firewalld_zone: Some(r.zone.clone()),
                ..FirewallConf::default()
            };
            if !ips.is_empty()
                && let Err(e) = remove(backend, &zone_conf, &ips)
            {
                first_error.get_or_insert(e);
                continue;
            }
        }
        let _ = fs::remove_file(dir.join(name));
    }
    first_error.map_or(Ok(()), Err)
}
