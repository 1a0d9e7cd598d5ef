//! bridge: a Linux bridge on the host (`cni0` unless `bridge` says otherwise) with one veth
//! pair per container, the host end a port of the bridge, optionally the gateway addresses on
//! the bridge, VLAN filtering per port, hairpin/isolation flags, masquerading and an nftables
//! MAC spoof check. Keys, defaults, error texts and kernel state follow the reference v1.9.1.
//!
//! Where it deliberately differs:
//! - configuration errors (unknown `ipMasqBackend`, a bad MAC) and a missing netns are found
//!   before anything is created, and a failed ADD removes what it made (veth pair, spoof-check
//!   chains, masquerade rules, the IPAM reservation), where the reference leaves the veth;
//! - DEL removes the masquerade rules and the spoof check even when the link or the namespace
//!   is already gone or `CNI_NETNS` is empty (the addresses then come from `prevResult` and
//!   the firewall layers find the rest by name); with `CNI_NETNS` empty it also removes the
//!   host veth named in `prevResult` if it is still a port of this bridge;
//! - CHECK of an L2-only bridge (no `ipam.type`) does not run IPAM CHECK (the reference does,
//!   and fails with "no plugin name provided");
//! - GC exists: IPAM GC, and masquerade rules of attachments not in the valid list;
//! - the bridge port is polled for "up" every few milliseconds instead of after 0, 50, 500,
//!   1000 and 1000 ms (same overall limit);
//! - fewer RTNL-locked requests, which parallel ADDs queue for: the bridge is looked up before
//!   it is created, a port's hairpin/isolation flag is only written to turn it on (a new port
//!   has both off), and the veth ends are made with one queue each (see `netlink::link`);
//! - a bridge that lost its last port has the zero MAC, which cannot be pinned: its current
//!   MAC is pinned instead (the reference fails to add the gateway address there);
//! - DEL releases the IPAM reservation and the firewall state while the kernel deletes the
//!   link (the reference does it after).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use serde::Deserialize;

use super::shared::{self, null_default};
use crate::cni::result::{Interface, Route as ResultRoute};
use crate::cni::{Applet, CniError, CniOutput, CniResult, Command, Request};
use crate::firewall::{self, MasqBackend};
use crate::iface::{self, HostEnd, OPER_UP, VethOptions};
use crate::ipam;
use crate::netlink::{BridgeVlan, Family, Link, Netlink, PortSettings};
use crate::netns::NetNs;

pub const APPLET: Applet = Applet {
    name: "bridge",
    min_version: "0.1.0",
    run,
};

const DEFAULT_BRIDGE: &str = "cni0";

/// The reference gives up on a bridge port that is not up after 0+50+500+1000+1000 ms.
const PORT_UP_TIMEOUT: Duration = Duration::from_millis(2550);

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    /// Absent or null: `cni0`; an explicit string is taken as it is.
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    is_gateway: bool,
    #[serde(default, deserialize_with = "null_default")]
    is_default_gateway: bool,
    #[serde(default, deserialize_with = "null_default")]
    force_address: bool,
    #[serde(default, deserialize_with = "null_default")]
    ip_masq: bool,
    #[serde(default)]
    ip_masq_backend: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    mtu: i64,
    #[serde(default, deserialize_with = "null_default")]
    hairpin_mode: bool,
    #[serde(default, deserialize_with = "null_default")]
    promisc_mode: bool,
    #[serde(default, deserialize_with = "null_default")]
    vlan: i64,
    #[serde(default)]
    vlan_trunk: Option<Vec<VlanTrunk>>,
    #[serde(default, deserialize_with = "null_default")]
    preserve_default_vlan: bool,
    #[serde(default, rename = "macspoofchk", deserialize_with = "null_default")]
    mac_spoof_chk: bool,
    #[serde(default, rename = "enabledad", deserialize_with = "null_default")]
    enable_dad: bool,
    #[serde(default, deserialize_with = "null_default")]
    disable_container_interface: bool,
    #[serde(default, deserialize_with = "null_default")]
    port_isolation: bool,
    #[serde(default, deserialize_with = "null_default")]
    args: ArgsField,
    #[serde(default, deserialize_with = "null_default")]
    runtime_config: MacField,
}

#[derive(Debug, Default, Deserialize)]
struct VlanTrunk {
    #[serde(default, rename = "minID")]
    min_id: Option<i64>,
    #[serde(default, rename = "maxID")]
    max_id: Option<i64>,
    #[serde(default)]
    id: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct ArgsField {
    #[serde(default, deserialize_with = "null_default")]
    cni: MacField,
}

#[derive(Debug, Default, Deserialize)]
struct MacField {
    #[serde(default, deserialize_with = "null_default")]
    mac: String,
}

/// The configuration after the reference's `loadNetConf` checks.
#[derive(Debug)]
struct BridgeConf {
    name: String,
    is_gateway: bool,
    is_default_gateway: bool,
    force_address: bool,
    ip_masq: bool,
    ip_masq_backend: Option<String>,
    mtu: Option<u32>,
    hairpin: bool,
    promisc: bool,
    /// Access VLAN (PVID, untagged); 0 for none.
    vlan: u16,
    /// Trunk VLANs, sorted and unique.
    trunk: Vec<u16>,
    /// Whether a new bridge gets VLAN filtering (`vlan` set, or `vlanTrunk` present at all).
    vlan_filtering: bool,
    preserve_default_vlan: bool,
    mac_spoof_chk: bool,
    enable_dad: bool,
    disable_container_interface: bool,
    port_isolation: bool,
    /// Container MAC: `runtimeConfig.mac` > `args.cni.mac` > `CNI_ARGS` `MAC`.
    mac: Option<String>,
    /// An IPAM plugin is configured; otherwise the bridge is L2 only.
    layer3: bool,
}

impl BridgeConf {
    /// The masquerade backend when addresses are to be masqueraded (L3 with `ipMasq`).
    fn masq_backend(&self) -> CniResult<Option<MasqBackend>> {
        shared::masq_backend(self.ip_masq && self.layer3, self.ip_masq_backend.as_deref())
    }
}

fn load(req: &Request) -> CniResult<BridgeConf> {
    let raw: RawConf = req.decode()?;
    if !(0..=4094).contains(&raw.vlan) {
        return Err(CniError::internal(format!(
            "invalid VLAN ID {} (must be between 0 and 4094)",
            raw.vlan
        )));
    }
    let trunk = collect_vlan_trunk(raw.vlan_trunk.as_deref())?;
    let mut mac = String::new();
    if let Some(m) = req.cni_args(&["MAC"])?.get("MAC") {
        mac = m.to_string();
    }
    for m in [&raw.args.cni.mac, &raw.runtime_config.mac] {
        if !m.is_empty() {
            mac = m.clone();
        }
    }
    Ok(BridgeConf {
        name: raw.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string()),
        is_gateway: raw.is_gateway || raw.is_default_gateway,
        is_default_gateway: raw.is_default_gateway,
        force_address: raw.force_address,
        ip_masq: raw.ip_masq,
        ip_masq_backend: raw.ip_masq_backend,
        mtu: shared::mtu(raw.mtu),
        hairpin: raw.hairpin_mode,
        promisc: raw.promisc_mode,
        vlan: raw.vlan as u16,
        trunk,
        vlan_filtering: raw.vlan != 0 || raw.vlan_trunk.is_some(),
        preserve_default_vlan: raw.preserve_default_vlan,
        mac_spoof_chk: raw.mac_spoof_chk,
        enable_dad: raw.enable_dad,
        disable_container_interface: raw.disable_container_interface,
        port_isolation: raw.port_isolation,
        mac: (!mac.is_empty()).then_some(mac),
        layer3: req.config.ipam_type().is_some(),
    })
}

/// The union of the trunk entries, sorted, with the reference's checks and messages.
fn collect_vlan_trunk(trunk: Option<&[VlanTrunk]>) -> CniResult<Vec<u16>> {
    let fail = |msg: &str| Err(CniError::internal(msg));
    let mut vids = Vec::new();
    for item in trunk.unwrap_or_default() {
        match (item.min_id, item.max_id) {
            (Some(min), Some(max)) => {
                if !(1..=4094).contains(&min) {
                    return fail("incorrect trunk minID parameter");
                }
                if !(1..=4094).contains(&max) {
                    return fail("incorrect trunk maxID parameter");
                }
                if max < min {
                    return fail("minID is greater than maxID in trunk parameter");
                }
                vids.extend(min..=max);
            }
            (None, Some(_)) => {
                return fail(
                    "minID and maxID should be configured simultaneously, minID is missing",
                );
            }
            (Some(_), None) => {
                return fail(
                    "minID and maxID should be configured simultaneously, maxID is missing",
                );
            }
            (None, None) => {}
        }
        if let Some(id) = item.id {
            if !(1..=4094).contains(&id) {
                return fail("incorrect trunk id parameter");
            }
            vids.push(id);
        }
    }
    vids.sort_unstable();
    vids.dedup();
    Ok(vids.into_iter().map(|v| v as u16).collect())
}

fn run(req: &Request) -> CniResult<Option<CniOutput>> {
    match req.command {
        Command::Add => add(req).map(Some),
        Command::Del => del(req).map(|()| None),
        Command::Check => check(req).map(|()| None),
        // As the reference's STATUS: the keys must decode, nothing more is checked.
        Command::Status => {
            req.decode::<RawConf>()?;
            shared::status(req).map(|()| None)
        }
        Command::Gc => {
            req.decode::<RawConf>()?;
            shared::gc(req).map(|()| None)
        }
        Command::Version => Ok(None),
    }
}

fn host_netlink() -> CniResult<Netlink> {
    Netlink::open().map_err(CniError::internal)
}

/// What an ADD has made so far, undone in reverse if a later step fails.
#[derive(Default)]
struct Made {
    veth: bool,
    spoof_check: bool,
    ipam: bool,
    masq: Vec<IpNetwork>,
}

fn add(req: &Request) -> CniResult<CniOutput> {
    let conf = load(req)?;
    if conf.layer3 && conf.disable_container_interface {
        return Err(CniError::internal(
            "cannot use IPAM when DisableContainerInterface flag is set",
        ));
    }
    if conf.hairpin && conf.promisc {
        return Err(CniError::internal(
            "cannot set hairpin mode and promiscuous mode at the same time",
        ));
    }
    let backend = conf.masq_backend()?;
    let mac = match &conf.mac {
        Some(text) => Some(iface::parse_mac(text).ok_or_else(|| {
            CniError::internal(format!(
                "failed to make veth pair: address {text}: invalid MAC address"
            ))
        })?),
        None => None,
    };
    let netns = shared::open_netns(&req.env.netns)?;
    let host_nl = host_netlink()?;
    let bridge = ensure_bridge(&host_nl, &conf)
        .map_err(|e| e.context(format!("failed to create bridge {:?}", conf.name)))?;
    let mut made = Made::default();
    let outcome = add_port(
        req, &conf, backend, mac, &netns, &host_nl, &bridge, &mut made,
    );
    if outcome.is_err() {
        undo(req, &netns, &made);
    }
    outcome
}

/// Leaves nothing of a failed ADD behind; the error that stopped it is the one reported.
fn undo(req: &Request, netns: &NetNs, made: &Made) {
    if made.veth {
        let ifname = req.env.ifname.as_str();
        let _ = iface::in_netns(netns, |nl| {
            iface::delete_link_with_addresses(nl, ifname).map_err(CniError::internal)
        });
    }
    if made.spoof_check
        && let Err(e) = firewall::teardown_mac_spoof_check(&spoof_check_id(req))
    {
        tracing::warn!("removing the spoof check after a failed ADD: {e}");
    }
    if !made.masq.is_empty() {
        let _ = shared::masq_teardown(req, &made.masq);
    }
    if made.ipam {
        shared::release_after_failure(req);
    }
}

/// `<containerID>-<ifname>`: names the spoof-check chains of an attachment.
fn spoof_check_id(req: &Request) -> String {
    format!("{}-{}", req.env.container_id, req.env.ifname)
}

#[allow(clippy::too_many_arguments)]
fn add_port(
    req: &Request,
    conf: &BridgeConf,
    backend: Option<MasqBackend>,
    mac: Option<[u8; 6]>,
    netns: &NetNs,
    host_nl: &Netlink,
    bridge: &Link,
    made: &mut Made,
) -> CniResult<CniOutput> {
    let ifname = req.env.ifname.as_str();
    let opts = VethOptions {
        mtu: conf.mtu,
        mac,
        host_name: None,
        master: Some(bridge.index),
    };
    let veth = iface::setup_veth(host_nl, netns, ifname, &opts)?;
    made.veth = true;
    let host = &veth.host;
    let port = PortConfig {
        hairpin: conf.hairpin,
        isolated: conf.port_isolation,
        vlan: conf.vlan,
        trunk: &conf.trunk,
        preserve_default_vlan: conf.preserve_default_vlan,
    };
    configure_port(host_nl, host, &port)?;
    let mut result = CniOutput {
        interfaces: vec![
            Interface {
                name: bridge.name.clone(),
                mac: iface::mac_string(bridge.mac),
                ..Interface::default()
            },
            // The host end's MAC is filled in once the port is up.
            Interface {
                name: host.name.clone(),
                ..Interface::default()
            },
            veth.container_interface(&req.env.netns),
        ],
        ..CniOutput::default()
    };
    if conf.mac_spoof_chk {
        made.spoof_check = true;
        firewall::setup_mac_spoof_check(
            &host.name,
            &result.interfaces[2].mac,
            &spoof_check_id(req),
        )?;
    }
    if conf.layer3 {
        let ipam_result = shared::ipam_add(req)?;
        made.ipam = true;
        result.ips = ipam_result.ips;
        result.routes = ipam_result.routes;
        result.dns = ipam_result.dns;
        if result.ips.is_empty() {
            return Err(CniError::internal("IPAM plugin returned missing IP config"));
        }
        let gateways = calc_gateways(&mut result, conf);
        let configured = &result;
        let enable_dad = conf.enable_dad;
        iface::in_netns(netns, |nl| {
            iface::set_dad_sysctls(ifname, enable_dad);
            iface::configure(nl, ifname, configured)
        })?;
        if conf.is_gateway
            && let Some(helper) = set_gateways(host_nl, conf, bridge, &gateways)?
        {
            result.interfaces.push(helper);
        }
        if let Some(backend) = backend {
            made.masq = result.ips.iter().map(|ip| ip.address).collect();
            shared::masq_setup(backend, req, &made.masq)?;
        }
    } else if !conf.disable_container_interface {
        iface::in_netns(netns, |nl| {
            let link = nl
                .link_by_name(ifname)
                .map_err(|e| CniError::internal(format!("failed to retrieve link: {e}")))?
                .ok_or_else(|| CniError::internal("failed to retrieve link: Link not found"))?;
            nl.set_up(link.index, true)
                .map_err(|e| CniError::internal(format!("failed to set {ifname:?} up: {e}")))
        })?;
    }
    let host_now = if conf.disable_container_interface {
        lookup(host_nl, &host.name)?
    } else {
        wait_port_up(host_nl, &host.name)?
    };
    // The host end's MAC may have changed, and the bridge's does when it gets its first port.
    result.interfaces[1].mac = iface::mac_string(host_now.mac);
    result.interfaces[0].mac = iface::mac_string(bridge_by_name(host_nl, &conf.name)?.mac);
    if let Some(dns) = shared::dns_override(req) {
        result.dns = dns;
    }
    Ok(result)
}

fn lookup(nl: &Netlink, name: &str) -> CniResult<Link> {
    nl.link_by_name(name)
        .map_err(|e| CniError::internal(format!("could not lookup {name:?}: {e}")))?
        .ok_or_else(|| CniError::internal(format!("could not lookup {name:?}: Link not found")))
}

/// The link `name`, which must be a bridge.
fn bridge_by_name(nl: &Netlink, name: &str) -> CniResult<Link> {
    check_bridge(lookup(nl, name)?)
}

fn check_bridge(link: Link) -> CniResult<Link> {
    if link.kind.as_deref() != Some("bridge") {
        return Err(CniError::internal(format!(
            "{:?} already exists but is not a bridge",
            link.name
        )));
    }
    Ok(link)
}

/// Creates the bridge unless it exists (VLAN filtering and MTU only apply to a new one), sets
/// promiscuous mode if asked, `accept_ra=0`, and up. Returns it as it is now. Unlike the
/// reference it looks before it creates and changes only what is not so already: a lookup
/// takes no RTNL lock, which parallel ADDs otherwise queue for.
fn ensure_bridge(nl: &Netlink, conf: &BridgeConf) -> CniResult<Link> {
    let name = conf.name.as_str();
    if name.is_empty() {
        // The kernel would name it `bridge0`, which the reference then fails to find.
        return Err(CniError::internal("could not lookup \"\": Link not found"));
    }
    let existing = nl
        .link_by_name(name)
        .map_err(|e| CniError::internal(format!("could not lookup {name:?}: {e}")))?;
    let bridge = match existing {
        Some(link) => check_bridge(link)?,
        None => {
            match nl.create_bridge(name, conf.mtu, conf.vlan_filtering) {
                Err(e) if e.errno() != libc::EEXIST => {
                    return Err(CniError::internal(format!("could not add {name:?}: {e}")));
                }
                _ => {}
            }
            bridge_by_name(nl, name)?
        }
    };
    if conf.promisc && !bridge.promisc {
        nl.set_promisc(bridge.index, true).map_err(|e| {
            CniError::internal(format!("could not set promiscuous mode on {name:?}: {e}"))
        })?;
    }
    // We want to own the routes of this interface; the reference ignores a failure too.
    let _ = crate::sysctl::ensure(&format!("net/ipv6/conf/{name}/accept_ra"), "0");
    if !bridge.up {
        nl.set_up(bridge.index, true)
            .map_err(|e| CniError::internal(format!("failed to set {name:?} up: {e}")))?;
    }
    Ok(bridge)
}

/// Bridge-port settings of one host veth.
struct PortConfig<'a> {
    hairpin: bool,
    isolated: bool,
    vlan: u16,
    trunk: &'a [u16],
    preserve_default_vlan: bool,
}

/// Gives bridge port `port` (made on its bridge by `setup_veth`) the hairpin and isolation
/// flags and the VLAN entries: existing ones dropped unless preserved, the access VLAN as PVID untagged, each trunk VLAN
/// tagged, and VLAN 1 as PVID untagged for a trunk without an access VLAN.
fn configure_port(nl: &Netlink, port: &HostEnd, cfg: &PortConfig) -> CniResult<()> {
    let name = port.name.as_str();
    let index = port.index;
    // A new port has both flags off: only turning one on needs a (locked) change.
    let hairpin = PortSettings {
        hairpin: Some(true),
        ..PortSettings::default()
    };
    let isolated = PortSettings {
        isolated: Some(true),
        ..PortSettings::default()
    };
    for (wanted, settings, failure) in [
        (cfg.hairpin, hairpin, "failed to setup hairpin mode for"),
        (cfg.isolated, isolated, "failed to set isolated on for"),
    ] {
        if wanted {
            nl.set_bridge_port(index, &settings)
                .map_err(|e| CniError::internal(format!("{failure} {name}: {e}")))?;
        }
    }
    let vlan_failure = |what: &str, e: crate::netlink::NetlinkError| {
        CniError::internal(format!("failed to {what} on interface {name:?}: {e}"))
    };
    if (cfg.vlan != 0 || !cfg.trunk.is_empty()) && !cfg.preserve_default_vlan {
        let existing = nl
            .bridge_vlans(index)
            .map_err(|e| vlan_failure("remove default vlan", e))?;
        for v in existing {
            nl.bridge_vlan_del(index, v.vid)
                .map_err(|e| vlan_failure("remove default vlan", e))?;
        }
    }
    let entry = |vid, access| BridgeVlan {
        vid,
        pvid: access,
        untagged: access,
    };
    if cfg.vlan != 0 {
        nl.bridge_vlan_add(index, entry(cfg.vlan, true))
            .map_err(|e| vlan_failure("setup vlan tag", e))?;
    }
    for vid in cfg.trunk {
        nl.bridge_vlan_add(index, entry(*vid, false))
            .map_err(|e| vlan_failure("setup vlan tag", e))?;
    }
    if cfg.vlan == 0 && !cfg.trunk.is_empty() {
        nl.bridge_vlan_add(index, entry(1, true))
            .map_err(|e| vlan_failure("setup default native vlan tag", e))?;
    }
    Ok(())
}

/// The gateway addresses to put on the bridge, per family in result order.
#[derive(Debug, Default)]
struct Gateways {
    v4: Vec<IpNetwork>,
    v6: Vec<IpNetwork>,
}

/// The reference's `calcGateways`: every IP belongs to interface 2; with `isGateway` a missing
/// gateway is the subnet's first address and is collected; with `isDefaultGateway` a default
/// route via the first gateway of each family is added unless IPAM returned one with a
/// gateway.
fn calc_gateways(result: &mut CniOutput, conf: &BridgeConf) -> Gateways {
    let mut gws = Gateways::default();
    let mut default_found = [false, false];
    let mut extra_routes = Vec::new();
    for ip in &mut result.ips {
        ip.interface = Some(2);
        let v6 = ip.address.is_ipv6();
        if ip.gateway.is_none() && conf.is_gateway {
            ip.gateway = Some(iface::first_host(ip.address));
        }
        let family = usize::from(v6);
        if conf.is_default_gateway && !default_found[family] {
            default_found[family] = result
                .routes
                .iter()
                .chain(extra_routes.iter())
                .any(|r: &ResultRoute| r.gw.is_some() && is_default_of(r.dst, v6));
            if !default_found[family] {
                extra_routes.push(ResultRoute::new(default_net(v6), ip.gateway));
                default_found[family] = true;
            }
        }
        if conf.is_gateway
            && let Some(gw) = ip.gateway
            && let Ok(net) = IpNetwork::new(gw, ip.address.prefix())
        {
            if v6 { &mut gws.v6 } else { &mut gws.v4 }.push(net);
        }
    }
    result.routes.extend(extra_routes);
    gws
}

fn default_net(v6: bool) -> IpNetwork {
    let any: IpAddr = if v6 {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    };
    IpNetwork::new(any, 0).unwrap_or_else(|_| unreachable!("prefix 0 is valid"))
}

fn is_default_of(dst: IpNetwork, v6: bool) -> bool {
    dst == default_net(v6)
}

/// Puts the gateway addresses on the bridge (or, with an access VLAN, on the `<bridge>.<vlan>`
/// helper veth, which it creates once and returns for the result) and enables forwarding for
/// each family that has one.
fn set_gateways(
    nl: &Netlink,
    conf: &BridgeConf,
    bridge: &Link,
    gateways: &Gateways,
) -> CniResult<Option<Interface>> {
    let mut helper: Option<Link> = None;
    for (v6, gws) in [(false, &gateways.v4), (true, &gateways.v6)] {
        for gw in gws {
            if conf.vlan != 0 {
                if helper.is_none() {
                    helper = Some(
                        ensure_vlan_interface(nl, bridge, conf)
                            .map_err(|e| e.context("failed to create vlan interface"))?,
                    );
                }
                let Some(link) = helper.as_ref() else {
                    continue;
                };
                ensure_addr(nl, link, *gw, conf.force_address)
                    .map_err(|e| e.context("failed to set vlan interface for bridge with addr"))?;
            } else {
                ensure_addr(nl, bridge, *gw, conf.force_address)
                    .map_err(|e| e.context("failed to set bridge addr"))?;
            }
        }
        if !gws.is_empty() {
            iface::enable_forwarding(v6)
                .map_err(|e| CniError::internal(format!("failed to enable forwarding: {e}")))?;
        }
    }
    Ok(helper.map(|link| Interface {
        name: link.name.clone(),
        mac: iface::mac_string(link.mac),
        ..Interface::default()
    }))
}

/// The reference's `ensureAddr`: nothing to do if `gw` is there; another IPv4 address, or an
/// overlapping IPv6 one, is an error unless `forceAddress` (then it goes); after adding, the
/// link's MAC is set to the one it had before this ADD gave it a port, so it no longer
/// follows its ports.
fn ensure_addr(nl: &Netlink, link: &Link, gw: IpNetwork, force: bool) -> CniResult<()> {
    let name = link.name.as_str();
    let family = Family::of(gw.ip());
    let addrs = nl
        .addresses(Some(link.index), Some(family))
        .map_err(|e| CniError::internal(format!("could not get list of IP addresses: {e}")))?;
    for a in addrs {
        if a.addr.ip() == gw.ip() && a.addr.prefix() == gw.prefix() {
            return Ok(());
        }
        let overlaps = a.addr.contains(gw.ip()) || gw.contains(a.addr.ip());
        if gw.is_ipv4() || overlaps {
            if !force {
                return Err(CniError::internal(format!(
                    "{name:?} already has an IP address different from {gw}"
                )));
            }
            nl.del_address(link.index, a.addr).map_err(|e| {
                CniError::internal(format!("could not remove IP address from {name:?}: {e}"))
            })?;
        }
    }
    match nl.add_address_with_broadcast(link.index, gw) {
        Err(e) if e.errno() != libc::EEXIST => {
            return Err(CniError::internal(format!(
                "could not add IP address {gw} to {name:?}: {e}"
            )));
        }
        _ => {}
    }
    // A bridge that lost its last port has the zero MAC, which cannot be set: pin the one it
    // has now instead (the reference fails there).
    let mac = match link.mac.filter(|m| *m != [0; 6]) {
        Some(mac) => Some(mac),
        None => lookup(nl, name)?.mac.filter(|m| *m != [0; 6]),
    };
    if let Some(mac) = mac {
        nl.set_mac(link.index, mac)
            .map_err(|e| CniError::internal(format!("could not set bridge's mac: {e}")))?;
    }
    Ok(())
}

/// The `<bridge>.<vlan>` helper: a veth in the host whose peer is a port of the bridge with
/// the access VLAN, so the gateway address sits in that VLAN. Made once, never removed (as
/// in the reference).
fn ensure_vlan_interface(nl: &Netlink, bridge: &Link, conf: &BridgeConf) -> CniResult<Link> {
    let name = format!("{}.{}", bridge.name, conf.vlan);
    if let Some(link) = nl
        .link_by_name(&name)
        .map_err(|e| CniError::internal(format!("failed to find interface {name:?}: {e}")))?
    {
        return Ok(link);
    }
    let host = NetNs::current()
        .map_err(|e| CniError::internal(format!("faild to find host namespace: {e}")))?;
    let opts = VethOptions {
        mtu: Some(bridge.mtu).filter(|m| *m > 0),
        master: Some(bridge.index),
        ..VethOptions::default()
    };
    let port = PortConfig {
        hairpin: false,
        isolated: false,
        vlan: conf.vlan,
        trunk: &[],
        preserve_default_vlan: conf.preserve_default_vlan,
    };
    let veth = iface::setup_veth(nl, &host, &name, &opts)
        .and_then(|veth| configure_port(nl, &veth.host, &port).map(|()| veth))
        .map_err(|e| e.context(format!("faild to create vlan gateway {name:?}")))?;
    nl.set_up(veth.container.index, true)
        .map_err(|e| CniError::internal(format!("failed to up {name:?}: {e}")))?;
    lookup(nl, &name)
}

/// RFC 2863 operational states as the Go netlink library names them.
fn oper_state_name(state: u8) -> &'static str {
    match state {
        1 => "not-present",
        2 => "down",
        3 => "lower-layer-down",
        4 => "testing",
        5 => "dormant",
        6 => "up",
        _ => "unknown",
    }
}

/// Waits until the host end is operationally up (the bridge port forwards), looking every
/// few milliseconds; the reference's overall limit and message.
fn wait_port_up(nl: &Netlink, name: &str) -> CniResult<Link> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(200);
    loop {
        let link = lookup(nl, name)?;
        if link.oper_state == OPER_UP {
            return Ok(link);
        }
        if start.elapsed() >= PORT_UP_TIMEOUT {
            return Err(CniError::internal(format!(
                "bridge port in error state: {}",
                oper_state_name(link.oper_state)
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn del(req: &Request) -> CniResult<()> {
    let conf = load(req)?;
    // Deleting a link waits for the kernel's RCU barrier (tens of milliseconds on a busy
    // node). What does not need the link's addresses runs meanwhile: the IPAM release, and
    // the spoof check and masquerade rules, which are found by name (the masquerade teardown
    // takes the families from `prevResult`, or looks in both).
    // The link is the longer path, so this thread takes it; the rest gets a thread of its own.
    let (link, rest) = std::thread::scope(|scope| {
        let rest = scope.spawn(|| release(req, &conf));
        (delete_link(req, &conf), rest.join())
    });
    link.and(rest.unwrap_or_else(|_| Err(CniError::internal("releasing the attachment panicked"))))
}

/// DEL's link step: the container link goes (with its peer); without a namespace to look in,
/// the host end that `prevResult` names, if it is still there.
fn delete_link(req: &Request, conf: &BridgeConf) -> CniResult<()> {
    match shared::open_netns_for_del(&req.env.netns)? {
        Some(netns) => {
            let ifname = req.env.ifname.as_str();
            iface::in_netns(&netns, |nl| {
                iface::delete_link_with_addresses(nl, ifname)
                    .map(|_| ())
                    .map_err(|e| CniError::internal(format!("failed to delete {ifname:?}: {e}")))
            })
        }
        None => delete_host_veth(req, conf),
    }
}

/// DEL's other steps, each tried whatever the others did; the first failure is reported.
fn release(req: &Request, conf: &BridgeConf) -> CniResult<()> {
    let mut outcome = Ok(());
    if conf.layer3 {
        outcome = outcome.and(ipam::delegate(req, Command::Del).map(|_| ()));
    }
    if conf.mac_spoof_chk {
        let torn = firewall::teardown_mac_spoof_check(&spoof_check_id(req));
        outcome = outcome.and(torn);
    }
    if conf.layer3 && conf.ip_masq {
        outcome = outcome.and(shared::masq_teardown(req, &shared::prev_result_ips(req)));
    }
    outcome
}

/// DEL without a namespace: deletes the host veth that `prevResult` names if it is still a
/// veth port of this bridge whose peer is in another namespace (its pair goes with it).
fn delete_host_veth(req: &Request, conf: &BridgeConf) -> CniResult<()> {
    let Ok(Some(prev)) = req.prev_result() else {
        return Ok(());
    };
    let candidates: Vec<&Interface> = prev
        .interfaces
        .iter()
        .filter(|i| i.sandbox.is_empty() && i.name != conf.name && !i.name.is_empty())
        .collect();
    if candidates.is_empty() {
        return Ok(());
    }
    let nl = host_netlink()?;
    let Some(bridge) = nl.link_by_name(&conf.name).map_err(CniError::internal)? else {
        return Ok(());
    };
    for candidate in candidates {
        let Some(link) = nl
            .link_by_name(&candidate.name)
            .map_err(CniError::internal)?
        else {
            continue;
        };
        let ours = link.kind.as_deref() == Some("veth")
            && link.master == Some(bridge.index)
            && link.link_netnsid.is_some();
        if ours {
            match nl.delete_link(link.index) {
                Err(e) if e.errno() != libc::ENODEV => {
                    return Err(CniError::internal(format!(
                        "failed to delete {:?}: {e}",
                        link.name
                    )));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Indexes of a link found by CHECK and of its veth peer.
#[derive(Debug, Default, Clone, Copy)]
struct Found {
    index: u32,
    peer: Option<u32>,
}

fn check(req: &Request) -> CniResult<()> {
    let conf = load(req)?;
    let netns = shared::open_netns(&req.env.netns)?;
    if conf.layer3 {
        ipam::delegate(req, Command::Check)?;
    }
    if req.config.prev_result.as_ref().is_none_or(|v| v.is_null()) {
        return Err(CniError::internal("Required prevResult missing"));
    }
    let prev = req.prev_result()?.unwrap_or_default();
    let ifname = req.env.ifname.as_str();
    let netns_path = req.env.netns.as_str();
    let find = |pred: &dyn Fn(&Interface) -> bool| {
        prev.interfaces
            .iter()
            .rfind(|i| pred(i))
            .cloned()
            .unwrap_or_default()
    };
    let br_map = find(&|i| i.name == conf.name);
    let cont_map = find(&|i| i.name != conf.name && i.name == ifname && i.sandbox == netns_path);
    let host_nl = host_netlink()?;
    let bridge = validate_bridge(&host_nl, &br_map, &conf)?;
    if cont_map.sandbox != netns_path {
        return Err(CniError::internal(format!(
            "Sandbox in prevResult {} doesn't match configured netns: {netns_path}",
            cont_map.sandbox
        )));
    }
    let container = iface::in_netns(&netns, |nl| validate_container(nl, &cont_map))?;
    let mut veth_found = false;
    for intf in &prev.interfaces {
        if intf.name == br_map.name || intf.name == cont_map.name {
            continue;
        }
        if validate_host_veth(&host_nl, intf, &bridge, &container)? {
            veth_found = true;
            break;
        }
    }
    if !veth_found {
        return Err(CniError::internal(format!(
            "CNI veth created for bridge {} was not found",
            conf.name
        )));
    }
    iface::in_netns(&netns, |nl| {
        iface::validate_interface_ips(nl, ifname, &prev.ips)?;
        iface::validate_routes(nl, &prev.routes)
    })
}

/// The reference's `validateInterface`: named, present, and in a sandbox or not as expected.
fn validate_interface(nl: &Netlink, intf: &Interface, in_sandbox: bool) -> CniResult<Link> {
    if intf.name.is_empty() {
        return Err(CniError::internal("Interface name missing "));
    }
    let link = nl
        .link_by_name(&intf.name)
        .ok()
        .flatten()
        .ok_or_else(|| CniError::internal(format!("Interface name {} not found", intf.name)))?;
    if in_sandbox && intf.sandbox.is_empty() {
        return Err(CniError::internal(format!(
            "Interface {} is expected to be in a sandbox",
            intf.name
        )));
    }
    if !in_sandbox && !intf.sandbox.is_empty() {
        return Err(CniError::internal(format!(
            "Interface {} should not be in sandbox",
            intf.name
        )));
    }
    Ok(link)
}

fn validate_bridge(nl: &Netlink, intf: &Interface, conf: &BridgeConf) -> CniResult<Found> {
    let link = validate_interface(nl, intf, false)?;
    if link.kind.as_deref() != Some("bridge") {
        return Err(CniError::internal(format!(
            "Interface {} does not have link type of bridge",
            intf.name
        )));
    }
    if !intf.mac.is_empty() && intf.mac != iface::mac_string(link.mac) {
        return Err(CniError::internal(format!(
            "Bridge interface {} Mac doesn't match: {}",
            intf.name, intf.mac
        )));
    }
    if link.promisc != conf.promisc {
        return Err(CniError::internal(format!(
            "Bridge interface {} configured Promisc Mode {} doesn't match current state: {} ",
            intf.name, conf.promisc, link.promisc
        )));
    }
    Ok(Found {
        index: link.index,
        peer: None,
    })
}

fn validate_container(nl: &Netlink, intf: &Interface) -> CniResult<Found> {
    let link = validate_interface(nl, intf, true)?;
    if link.kind.as_deref() != Some("veth") {
        return Err(CniError::internal(format!(
            "Error: Container interface {} not of type veth",
            link.name
        )));
    }
    let peer = link.peer_index.ok_or_else(|| {
        CniError::internal(format!(
            "Unable to obtain veth peer index for veth {}",
            link.name
        ))
    })?;
    let actual = iface::mac_string(link.mac);
    if !intf.mac.is_empty() && intf.mac != actual {
        return Err(CniError::internal(format!(
            "Interface {} Mac {} doesn't match container Mac: {actual}",
            intf.name, intf.mac
        )));
    }
    Ok(Found {
        index: link.index,
        peer: Some(peer),
    })
}

/// Whether `intf` is the host end of the container's veth, enslaved to the bridge; an
/// interface that is not a veth, or another veth, is not ours and is skipped.
fn validate_host_veth(
    nl: &Netlink,
    intf: &Interface,
    bridge: &Found,
    container: &Found,
) -> CniResult<bool> {
    let link = validate_interface(nl, intf, false)?;
    if link.kind.as_deref() != Some("veth") {
        return Ok(false);
    }
    let peer = link.peer_index.ok_or_else(|| {
        CniError::internal(format!(
            "Unable to obtain veth peer index for veth {}",
            link.name
        ))
    })?;
    if container.peer != Some(link.index)
        || peer != container.index
        || link.master != Some(bridge.index)
    {
        return Ok(false);
    }
    if !intf.mac.is_empty() && intf.mac != iface::mac_string(link.mac) {
        return Err(CniError::internal(format!(
            "Interface {} Mac doesn't match: {} not found",
            intf.name, intf.mac
        )));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::result::IpConfig;

    fn trunk(items: serde_json::Value) -> CniResult<Vec<u16>> {
        let parsed: Vec<VlanTrunk> = serde_json::from_value(items).unwrap();
        collect_vlan_trunk(Some(&parsed))
    }

    #[test]
    fn vlan_trunk_is_a_sorted_union_with_the_reference_checks() {
        use serde_json::json;
        assert_eq!(
            trunk(json!([{"id": 30}, {"minID": 10, "maxID": 12}, {"id": 11}])).unwrap(),
            [10, 11, 12, 30]
        );
        assert_eq!(trunk(json!([])).unwrap(), Vec::<u16>::new());
        assert_eq!(collect_vlan_trunk(None).unwrap(), Vec::<u16>::new());
        for (bad, msg) in [
            (json!([{"id": 0}]), "incorrect trunk id parameter"),
            (json!([{"id": 4095}]), "incorrect trunk id parameter"),
            (
                json!([{"minID": 0, "maxID": 5}]),
                "incorrect trunk minID parameter",
            ),
            (
                json!([{"minID": 5, "maxID": 4095}]),
                "incorrect trunk maxID parameter",
            ),
            (
                json!([{"minID": 6, "maxID": 5}]),
                "minID is greater than maxID in trunk parameter",
            ),
            (
                json!([{"maxID": 5}]),
                "minID and maxID should be configured simultaneously, minID is missing",
            ),
            (
                json!([{"minID": 5}]),
                "minID and maxID should be configured simultaneously, maxID is missing",
            ),
        ] {
            assert_eq!(trunk(bad.clone()).unwrap_err().msg, msg, "{bad}");
        }
    }

    fn conf(gateway: bool, default_gateway: bool) -> BridgeConf {
        BridgeConf {
            name: "cni0".into(),
            is_gateway: gateway || default_gateway,
            is_default_gateway: default_gateway,
            force_address: false,
            ip_masq: false,
            ip_masq_backend: None,
            mtu: None,
            hairpin: false,
            promisc: false,
            vlan: 0,
            trunk: Vec::new(),
            vlan_filtering: false,
            preserve_default_vlan: false,
            mac_spoof_chk: false,
            enable_dad: false,
            disable_container_interface: false,
            port_isolation: false,
            mac: None,
            layer3: true,
        }
    }

    fn ip(addr: &str, gw: Option<&str>) -> IpConfig {
        IpConfig {
            address: addr.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
            interface: None,
        }
    }

    #[test]
    fn gateways_are_computed_as_the_reference_does() {
        let mut r = CniOutput {
            ips: vec![
                ip("10.1.0.5/24", None),
                ip("10.2.0.5/16", Some("10.2.0.254")),
                ip("fd00::5/64", None),
            ],
            ..CniOutput::default()
        };
        let gws = calc_gateways(&mut r, &conf(false, true));
        assert!(r.ips.iter().all(|i| i.interface == Some(2)));
        assert_eq!(r.ips[0].gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(r.ips[2].gateway, Some("fd00::1".parse().unwrap()));
        let v4: Vec<String> = gws.v4.iter().map(|g| g.to_string()).collect();
        assert_eq!(v4, ["10.1.0.1/24", "10.2.0.254/16"]);
        assert_eq!(gws.v6[0].to_string(), "fd00::1/64");
        let routes: Vec<String> = r
            .routes
            .iter()
            .map(|r| format!("{} {:?}", r.dst, r.gw))
            .collect();
        assert_eq!(
            routes,
            ["0.0.0.0/0 Some(10.1.0.1)", "::/0 Some(fd00::1)"],
            "one default route per family"
        );

        // A default route with a gateway from IPAM wins; none without isGateway.
        let mut r = CniOutput {
            ips: vec![ip("10.1.0.5/24", Some("10.1.0.9"))],
            routes: vec![ResultRoute::new(
                "0.0.0.0/0".parse().unwrap(),
                Some("10.1.0.9".parse().unwrap()),
            )],
            ..CniOutput::default()
        };
        calc_gateways(&mut r, &conf(false, true));
        assert_eq!(r.routes.len(), 1);
        let mut r = CniOutput {
            ips: vec![ip("10.1.0.5/24", None)],
            ..CniOutput::default()
        };
        let gws = calc_gateways(&mut r, &conf(false, false));
        assert_eq!((r.ips[0].gateway, gws.v4.len()), (None, 0));
    }

    #[test]
    fn oper_states_are_named_as_go_names_them() {
        assert_eq!(oper_state_name(6), "up");
        assert_eq!(oper_state_name(7), "unknown");
        assert_eq!(oper_state_name(3), "lower-layer-down");
    }
}
