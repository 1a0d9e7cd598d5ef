//! ptp: a veth pair per container, routed rather than bridged. The container's addresses keep
//! their prefix, but every on-link destination is reached through the gateway, which lives as
//! a /32 (/128) on the host end; the host routes each container address to its veth.
//!
//! Unlike the reference, a failed ADD leaves no veth behind, and DEL removes the masquerade
//! rules even when the link or the namespace is already gone (addresses then come from
//! `prevResult`, and the firewall layer finds the rest by name).

use ipnetwork::IpNetwork;
use serde::Deserialize;

use super::shared::{self, null_default};
use crate::cni::result::Interface;
use crate::cni::{Applet, CniError, CniOutput, CniResult, Command, Request};
use crate::iface::{self, VethOptions};
use crate::ipam;
use crate::netlink::{Netlink, RT_SCOPE_HOST, RT_SCOPE_LINK, Route};
use crate::netns::NetNs;

pub const APPLET: Applet = Applet {
    name: "ptp",
    min_version: "0.1.0",
    run,
};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PtpConf {
    #[serde(default, deserialize_with = "null_default")]
    ip_masq: bool,
    #[serde(default)]
    ip_masq_backend: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    mtu: i64,
}

fn run(req: &Request) -> CniResult<Option<CniOutput>> {
    shared::dispatch(req, add, del, check, shared::gc, shared::status)
}

fn host_netlink() -> CniResult<Netlink> {
    Netlink::open().map_err(CniError::internal)
}

fn add(req: &Request) -> CniResult<CniOutput> {
    let conf: PtpConf = req.decode()?;
    let backend = shared::masq_backend(conf.ip_masq, conf.ip_masq_backend.as_deref())?;
    let mut result = shared::ipam_add(req)?;
    let mut created: Option<NetNs> = None;
    match add_after_ipam(req, &conf, backend, &mut result, &mut created) {
        Ok(()) => Ok(result),
        Err(e) => {
            // Leave nothing behind: the container end takes the host end with it.
            if let Some(ns) = created {
                let ifname = req.env.ifname.as_str();
                let _ = iface::in_netns(&ns, |nl| {
                    iface::delete_link_with_addresses(nl, ifname).map_err(CniError::internal)
                });
            }
            if backend.is_some() {
                let ips: Vec<IpNetwork> = result.ips.iter().map(|ip| ip.address).collect();
                let _ = shared::masq_teardown(req, &ips);
            }
            shared::release_after_failure(req);
            Err(e)
        }
    }
}

fn add_after_ipam(
    req: &Request,
    conf: &PtpConf,
    backend: Option<crate::firewall::MasqBackend>,
    result: &mut CniOutput,
    created: &mut Option<NetNs>,
) -> CniResult<()> {
    if result.ips.is_empty() {
        return Err(CniError::internal("IPAM plugin returned missing IP config"));
    }
    for ip in &result.ips {
        if ip.gateway.is_none() {
            return Err(CniError::internal(format!(
                "IPAM plugin returned no gateway for {}: ptp routes everything through it",
                ip.address
            )));
        }
    }
    iface::enable_forwarding_for(&result.ips)
        .map_err(|e| CniError::internal(format!("Could not enable IP forwarding: {e}")))?;
    let netns = shared::open_netns(&req.env.netns)?;
    let host_nl = host_netlink()?;
    let ifname = req.env.ifname.as_str();
    let opts = VethOptions {
        mtu: shared::mtu(conf.mtu),
        ..VethOptions::default()
    };
    let veth = iface::setup_veth(&host_nl, &netns, ifname, &opts)?;
    *created = Some(netns);
    let Some(netns) = created.as_ref() else {
        return Err(CniError::internal("container namespace lost"));
    };
    result.interfaces = vec![
        veth.host_interface(&host_nl)?,
        veth.container_interface(&req.env.netns),
    ];
    for ip in &mut result.ips {
        ip.interface = Some(1);
    }
    let configured = &*result;
    iface::in_netns(netns, |nl| configure_container(nl, ifname, configured))?;
    configure_host(&host_nl, veth.host.index, result)?;
    if let Some(backend) = backend {
        let ips: Vec<IpNetwork> = result.ips.iter().map(|ip| ip.address).collect();
        shared::masq_setup(backend, req, &ips)?;
    }
    if let Some(dns) = shared::dns_override(req) {
        result.dns = dns;
    }
    Ok(())
}

/// Addresses and routes from the result, then the on-link route of each address replaced by
/// a host route to the gateway and the subnet via the gateway.
fn configure_container(nl: &Netlink, ifname: &str, result: &CniOutput) -> CniResult<()> {
    iface::configure(nl, ifname, result)?;
    let link = nl
        .link_by_name(ifname)
        .map_err(CniError::internal)?
        .ok_or_else(|| CniError::internal(format!("failed to look up {ifname:?}")))?;
    for ip in &result.ips {
        let Some(gw) = ip.gateway else { continue };
        let subnet = iface::network_of(ip.address);
        let mut on_link = Route::new(subnet);
        on_link.oif = Some(link.index);
        nl.del_route(&on_link).map_err(|e| {
            CniError::internal(format!("failed to delete route {subnet} dev {ifname}: {e}"))
        })?;
        let host_bits = if gw.is_ipv4() { 32 } else { 128 };
        let gw_net = IpNetwork::new(gw, host_bits).map_err(CniError::internal)?;
        let mut to_gw = Route::new(gw_net);
        to_gw.oif = Some(link.index);
        to_gw.scope = RT_SCOPE_LINK;
        to_gw.prefsrc = Some(ip.address.ip());
        let mut via_gw = Route::new(subnet);
        via_gw.oif = Some(link.index);
        via_gw.gateway = Some(gw);
        via_gw.prefsrc = Some(ip.address.ip());
        for route in [to_gw, via_gw] {
            nl.add_route(&route).map_err(|e| {
                CniError::internal(format!("failed to add route {}: {e}", describe(&route)))
            })?;
        }
    }
    Ok(())
}

fn describe(route: &Route) -> String {
    let mut text = route.dst.to_string();
    if let Some(gw) = route.gateway {
        text += &format!(" via {gw}");
    }
    if let Some(src) = route.prefsrc {
        text += &format!(" src {src}");
    }
    text
}

/// The gateway as a /32 (/128) on the host end, and a host route to each container address.
fn configure_host(nl: &Netlink, host_index: u32, result: &CniOutput) -> CniResult<()> {
    for ip in &result.ips {
        let Some(gw) = ip.gateway else { continue };
        let bits = if gw.is_ipv4() { 32 } else { 128 };
        let gw_net = IpNetwork::new(gw, bits).map_err(CniError::internal)?;
        nl.add_address_with_broadcast(host_index, gw_net)
            .map_err(|e| {
                CniError::internal(format!("failed to add IP addr {gw_net} to veth: {e}"))
            })?;
        let container = IpNetwork::new(ip.address.ip(), bits).map_err(CniError::internal)?;
        let mut route = Route::new(container);
        route.oif = Some(host_index);
        route.scope = RT_SCOPE_HOST;
        match nl.add_route(&route) {
            Err(e) if e.errno() != libc::EEXIST => {
                return Err(CniError::internal(format!(
                    "failed to add route on host: {e}"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

fn del(req: &Request) -> CniResult<()> {
    let conf: PtpConf = req.decode()?;
    ipam::delegate(req, Command::Del)?;
    let mut ips = Vec::new();
    if let Some(netns) = shared::open_netns_for_del(&req.env.netns)? {
        let ifname = req.env.ifname.as_str();
        let found = iface::in_netns(&netns, |nl| {
            iface::delete_link_with_addresses(nl, ifname)
                .map_err(|e| CniError::internal(format!("failed to delete {ifname:?}: {e}")))
        })?;
        ips = found.unwrap_or_default();
    }
    if conf.ip_masq {
        shared::merge_ips(&mut ips, shared::prev_result_ips(req));
        shared::masq_teardown(req, &ips)?;
    }
    Ok(())
}

fn check(req: &Request) -> CniResult<()> {
    let _conf: PtpConf = req.decode()?;
    let netns = shared::open_netns(&req.env.netns)?;
    ipam::delegate(req, Command::Check)?;
    if req.config.prev_result.as_ref().is_none_or(|v| v.is_null()) {
        return Err(CniError::internal("ptp: Required prevResult missing"));
    }
    let prev = req.prev_result()?.unwrap_or_default();
    let ifname = req.env.ifname.as_str();
    let container = prev
        .interfaces
        .iter()
        .find(|i| i.name == ifname && i.sandbox == req.env.netns)
        .cloned()
        .unwrap_or_default();
    if container.sandbox != req.env.netns {
        return Err(CniError::internal(format!(
            "Sandbox in prevResult {} doesn't match configured netns: {}",
            container.sandbox, req.env.netns
        )));
    }
    iface::in_netns(&netns, |nl| {
        validate_container(nl, &container)?;
        iface::validate_interface_ips(nl, ifname, &prev.ips)?;
        iface::validate_routes(nl, &prev.routes)
    })
}

fn validate_container(nl: &Netlink, intf: &Interface) -> CniResult<()> {
    if intf.name.is_empty() {
        return Err(CniError::internal(
            "Container interface name missing in prevResult: ",
        ));
    }
    let link = nl.link_by_name(&intf.name).ok().flatten().ok_or_else(|| {
        CniError::internal(format!(
            "ptp: Container Interface name in prevResult: {} not found",
            intf.name
        ))
    })?;
    if intf.sandbox.is_empty() {
        return Err(CniError::internal(format!(
            "ptp: Error: Container interface {} should not be in host namespace",
            link.name
        )));
    }
    if link.kind.as_deref() != Some("veth") {
        return Err(CniError::internal(format!(
            "Error: Container interface {} not of type veth/p2p",
            link.name
        )));
    }
    let actual = iface::mac_string(link.mac);
    if !intf.mac.is_empty() && intf.mac != actual {
        return Err(CniError::internal(format!(
            "ptp: Interface {} Mac {} doesn't match container Mac: {actual}",
            intf.name, intf.mac
        )));
    }
    Ok(())
}
