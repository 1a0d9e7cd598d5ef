//! static: IPAM that hands out the addresses it is given (config, `CNI_ARGS`, `args`, runtime).

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::Value;

use crate::cni::result::{CniOutput, Dns, IpConfig};
use crate::cni::{Applet, CniError, CniResult, Command, Request};
use crate::ipam::host_local::common::{self, ArgsIps, RuntimeIps};
use crate::ipam::host_local::range::parse_ip;

pub const APPLET: Applet = Applet {
    name: "static",
    min_version: "0.1.0",
    run,
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNet {
    #[serde(default)]
    ipam: Option<RawIpam>,
    #[serde(default)]
    runtime_config: Option<RuntimeIps>,
    #[serde(default)]
    args: Option<ArgsIps>,
}

#[derive(Debug, Deserialize)]
struct RawIpam {
    #[serde(default)]
    routes: Option<Vec<Value>>,
    #[serde(default)]
    addresses: Option<Vec<RawAddress>>,
    #[serde(default)]
    dns: Option<Dns>,
}

#[derive(Debug, Deserialize)]
struct RawAddress {
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Address {
    /// The address with its prefix; host bits are kept.
    address: IpNetwork,
    gateway: Option<IpAddr>,
}

struct Config {
    addresses: Vec<Address>,
    output: CniOutput,
}

fn run(req: &Request) -> CniResult<Option<CniOutput>> {
    match req.command {
        Command::Add => load(req).map(|conf| Some(conf.output)),
        Command::Check => check(req).map(|()| None),
        // Nothing was allocated, so nothing to release, collect or run out of.
        Command::Del | Command::Gc | Command::Status | Command::Version => Ok(None),
    }
}

fn cidr(text: &str, complaint: &str) -> CniResult<IpNetwork> {
    text.parse()
        .ok()
        .filter(|_| text.contains('/'))
        .ok_or_else(|| CniError::config(format!("{complaint}, got: '{text}'")))
}

/// The addresses in the reference's order: the config's, `CNI_ARGS` `IP` appended (with
/// `GATEWAY`), replaced by `args.cni.ips`, replaced by `runtimeConfig.ips`.
fn load(req: &Request) -> CniResult<Config> {
    let raw: RawNet = req.decode()?;
    let ipam = common::require_ipam(raw.ipam)?;
    // Configured addresses are read last, as the reference does: a list that replaces them
    // makes their text irrelevant. Their gateways are checked now, like a JSON field.
    let mut configured = Vec::new();
    for entry in ipam.addresses.iter().flatten() {
        let gateway = match entry.gateway.as_deref().filter(|g| !g.is_empty()) {
            Some(text) => Some(
                parse_ip(text)
                    .ok_or_else(|| CniError::config(format!("invalid IP address: {text}")))?,
            ),
            None => None,
        };
        configured.push((entry.address.clone().unwrap_or_default(), gateway));
    }

    let cni_args = req.cni_args(&["IP", "GATEWAY"])?;
    let mut from_args = Vec::new();
    if let Some(list) = cni_args.get("IP").filter(|v| !v.is_empty()) {
        for item in list.split(',').map(str::trim) {
            let address = cidr(item, "the 'ip' field is expected to be in CIDR notation")?;
            from_args.push(Address {
                address,
                gateway: None,
            });
        }
    }
    if let Some(list) = cni_args.get("GATEWAY").filter(|v| !v.is_empty()) {
        for item in list.split(',') {
            let gateway = parse_ip(item.trim())
                .ok_or_else(|| CniError::config(format!("invalid gateway address: {item}")))?;
            // Only the CNI_ARGS addresses are parsed at this point in the reference.
            for a in from_args.iter_mut().filter(|a| a.address.contains(gateway)) {
                a.gateway = Some(gateway);
            }
        }
    }

    let mut replacement = None;
    let lists = [
        raw.args.as_ref().map(ArgsIps::ips),
        raw.runtime_config.as_ref().and_then(|r| r.ips.as_deref()),
    ];
    for list in lists.into_iter().flatten().filter(|l| !l.is_empty()) {
        let parsed = list
            .iter()
            .map(|text| {
                cidr(text, "an entry in the 'ips' field is NOT in CIDR notation").map(|address| {
                    Address {
                        address,
                        gateway: None,
                    }
                })
            })
            .collect::<CniResult<Vec<_>>>()?;
        replacement = Some(parsed);
    }
    let addresses = match replacement {
        Some(addresses) => addresses,
        None => {
            let mut addresses = configured
                .iter()
                .map(|(text, gateway)| {
                    cidr(
                        text,
                        "the 'address' field is expected to be in CIDR notation",
                    )
                    .map(|address| Address {
                        address,
                        gateway: *gateway,
                    })
                })
                .collect::<CniResult<Vec<_>>>()?;
            addresses.extend(from_args);
            addresses
        }
    };
    common::check_family_limit(
        &req.config.cni_version,
        addresses.iter().map(|a| a.address.ip()),
    )?;
    let output = CniOutput {
        ips: addresses
            .iter()
            .map(|a| IpConfig {
                address: a.address,
                gateway: a.gateway,
                interface: None,
            })
            .collect(),
        routes: common::routes(ipam.routes.as_deref())?,
        dns: ipam.dns.unwrap_or_default(),
        ..CniOutput::default()
    };
    Ok(Config { addresses, output })
}

/// CHECK: each configured address that the previous result holds has the configured gateway.
fn check(req: &Request) -> CniResult<()> {
    let conf = load(req)?;
    let prev = req
        .prev_result()?
        .ok_or_else(|| CniError::internal("Required prevResult missing"))?;
    for want in &conf.addresses {
        let Some(have) = prev
            .ips
            .iter()
            .find(|ip| ip.address.ip() == want.address.ip())
        else {
            continue;
        };
        if want.gateway.is_some() && want.gateway != have.gateway {
            return Err(CniError::internal(format!(
                "static: Failed to match addr {} on interface {}",
                have.address.ip(),
                req.env.ifname
            )));
        }
    }
    Ok(())
}
