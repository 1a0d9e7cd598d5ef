//! Host port forwarding for the portmap plugin, on the two backends of the reference
//! (containernetworking/plugins v1.9.1 `plugins/meta/portmap`), laid out rule for rule like
//! it so that either implementation removes what the other made:
//!
//! * `iptables` (see `portmap_iptables`): nat chains `CNI-HOSTPORT-DNAT` (entered from
//!   PREROUTING and OUTPUT for local destinations), `CNI-DN-<21 hex>` per container,
//!   `CNI-HOSTPORT-SETMARK` and `CNI-HOSTPORT-MASQ` for hairpin and localhost masquerading.
//! * `nftables` (see `portmap_nftables`): table `cni_hostport` in families `ip` and `ip6`,
//!   every per-container rule commented with the container ID.
//!
//! Stale UDP conntrack entries are deleted over netlink (`netlink::conntrack`).

use std::path::Path;

use ipnetwork::IpNetwork;

use super::{Errors, MasqBackend, Tools, missing_binary};
use super::{portmap_iptables, portmap_nftables};
use crate::cni::{CniError, CniResult};
use crate::netlink::conntrack;

/// One entry of `runtimeConfig.portMappings`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    #[serde(default, deserialize_with = "crate::plugins::shared::null_default")]
    pub host_port: i64,
    #[serde(default, deserialize_with = "crate::plugins::shared::null_default")]
    pub container_port: i64,
    #[serde(default, deserialize_with = "crate::plugins::shared::null_default")]
    pub protocol: String,
    #[serde(
        default,
        rename = "hostIP",
        deserialize_with = "crate::plugins::shared::null_default"
    )]
    pub host_ip: String,
}

impl PortMapping {
    /// Whether this mapping applies to a container address of family `v6`: a `hostIP` of
    /// the other family is skipped. `Some(ip)` when the rule must match that destination
    /// (an unspecified `hostIP` matches every local address).
    pub(super) fn applies(&self, v6: bool) -> Option<Option<&str>> {
        if self.host_ip.is_empty() {
            return Some(None);
        }
        // Go's net.ParseIP returns nil for garbage, whose To4() is nil too: "IPv6".
        let parsed: Option<std::net::IpAddr> = self.host_ip.parse().ok();
        let host_v6 = !matches!(parsed, Some(std::net::IpAddr::V4(_)));
        if host_v6 != v6 {
            return None;
        }
        match parsed {
            Some(ip) if ip.is_unspecified() => Some(None),
            _ => Some(Some(self.host_ip.as_str())),
        }
    }
}

/// What one container's forwarding looks like.
#[derive(Debug, Clone)]
pub struct PortmapSpec<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub mappings: &'a [PortMapping],
    pub snat: bool,
    pub masq_all: bool,
    /// 0..=31 (iptables only).
    pub mark_bit: u32,
    /// A chain of the admin's that sets the masquerade mark (iptables only).
    pub external_set_mark_chain: Option<&'a str>,
    pub conditions_v4: &'a [String],
    pub conditions_v6: &'a [String],
}

impl PortmapSpec<'_> {
    pub(super) fn conditions(&self, v6: bool) -> &[String] {
        if v6 {
            self.conditions_v6
        } else {
            self.conditions_v4
        }
    }
}

/// Runs the `iptables` or the `nftables` step (given the `nft` binary, which must be
/// installed) on `spec` and `container`, as `backend` says.
fn on_backend(
    backend: MasqBackend,
    spec: &PortmapSpec,
    container: IpNetwork,
    iptables: fn(&Tools, &PortmapSpec, IpNetwork) -> CniResult<()>,
    nftables: fn(&Path, &PortmapSpec, IpNetwork) -> CniResult<()>,
) -> CniResult<()> {
    let tools = Tools::find();
    match backend {
        MasqBackend::Iptables => iptables(&tools, spec, container),
        MasqBackend::Nftables => {
            let nft = tools.nft.as_deref().ok_or_else(|| missing_binary("nft"))?;
            nftables(nft, spec, container)
        }
    }
}

/// Installs the forwarding of `spec` to `container` (one address, either family).
pub fn forward_ports(
    backend: MasqBackend,
    spec: &PortmapSpec,
    container: IpNetwork,
) -> CniResult<()> {
    let (iptables, nftables) = (portmap_iptables::forward, portmap_nftables::forward);
    on_backend(backend, spec, container, iptables, nftables)
}

/// Verifies that the forwarding of `spec` to `container` is in place.
pub fn check_ports(
    backend: MasqBackend,
    spec: &PortmapSpec,
    container: IpNetwork,
) -> CniResult<()> {
    let (iptables, nftables) = (portmap_iptables::check, portmap_nftables::check);
    on_backend(backend, spec, container, iptables, nftables)
}

/// Removes every forwarding rule of the container on `network`, on both families; needs no
/// mappings (rules are found by chain name and comment). Idempotent.
pub fn unforward_ports(backend: MasqBackend, network: &str, container_id: &str) -> CniResult<()> {
    let tools = Tools::find();
    match backend {
        MasqBackend::Iptables => portmap_iptables::unforward(&tools, network, container_id),
        MasqBackend::Nftables => match tools.nft.as_deref() {
            Some(nft) => portmap_nftables::unforward(nft, container_id),
            // Nothing can have been made without the binary.
            None => Ok(()),
        },
    }
}

/// GC: removes the iptables forwarding of every container of `network` whose ID is not in
/// `keep` (found through the `dnat name: ... id: ...` comments of `CNI-HOSTPORT-DNAT`), and
/// the nftables rules of the containers in `stale_nft` (the nftables comments carry no
/// network, so the caller says which containers of this network are gone).
pub fn gc(network: &str, keep: &[String], stale_nft: &[String]) -> CniResult<()> {
    let tools = Tools::find();
    let mut errors = Errors::default();
    let mut ipt_errors = Errors::default();
    portmap_iptables::gc(&tools, network, keep, &mut ipt_errors);
    errors.absorb(ipt_errors, || tools.iptables_usable());
    if let Some(nft) = tools.nft.as_deref() {
        for id in stale_nft {
            if let Err(e) = portmap_nftables::unforward(nft, id) {
                errors.push(e);
            }
        }
    }
    errors.into_result("failed to garbage-collect port mappings")
}

/// Deletes the conntrack entries of UDP flows to any of `ports` (family of `v6`), so that
/// flows recorded before the DNAT rules existed do not keep bypassing them.
pub fn delete_udp_conntrack(ports: &[u16], v6: bool) -> CniResult<usize> {
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
    conntrack::delete_by_dst_ports(family, conntrack::PROTO_UDP, ports).map_err(|e| {
        CniError::internal(format!(
            "error deleting connection tracking state for protocol: 17 Ports: {ports:?}, error: {e}"
        ))
    })
}
