//! The container interface layer shared by the main plugins: the veth pair (container end
//! named `CNI_IFNAME` in the container, host end `veth` + 8 random hex digits in the host),
//! configuring an interface from an IPAM result (the reference's `ipam.ConfigureIface`), link
//! teardown that reports the addresses it removed, and the CHECK helpers.
//!
//! Everything that acts in the container runs through [`in_netns`], which enters the namespace
//! and opens a netlink socket there. The host side uses a socket opened by
//! the caller, in the plugin's own namespace.

// bridge (and later macvlan, ipvlan, vlan, ...) use the parts ptp does not.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;

use crate::cni::result::{Interface, IpConfig, Route as ResultRoute};
use crate::cni::{CniError, CniOutput, CniResult};
use crate::netlink::{
    Family, IFA_F_DADFAILED, IFA_F_TENTATIVE, Link, LinkDetails, LinkKind, LinkSpec, Netlink,
    NetlinkError, Route, VethPeer,
};
use crate::netns::NetNs;
use crate::sysctl;

/// Attempts at a random host veth name that turns out to exist already.
const VETH_NAME_ATTEMPTS: usize = 10;

/// How long `configure` waits for IPv6 duplicate address detection when there is an IPv6
/// gateway, and how often it looks.
const DAD_SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
const DAD_SETTLE_INTERVAL: Duration = Duration::from_millis(50);

/// RFC 2863 operational state "up" (`IF_OPER_UP`).
pub const OPER_UP: u8 = 6;

/// Runs `work` in the namespace `ns` with a netlink socket opened there.
pub fn in_netns<T>(ns: &NetNs, work: impl FnOnce(&Netlink) -> CniResult<T>) -> CniResult<T> {
    ns.run(|| {
        let nl = Netlink::open().map_err(CniError::internal)?;
        work(&nl)
    })
    .map_err(CniError::internal)?
}

/// `veth` + 8 hex digits from the kernel's random pool (the reference's `RandomVethName`).
pub fn random_veth_name() -> CniResult<String> {
    let mut bytes = [0u8; 4];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer it is given.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if got != bytes.len() as isize {
        return Err(CniError::internal(format!(
            "failed to generate random veth name: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(format!(
        "veth{:02x}{:02x}{:02x}{:02x}",
        bytes[0], bytes[1], bytes[2], bytes[3]
    ))
}

/// Parses a MAC address in the `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` form.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (slot, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return None;
        }
        *slot = u8::from_str_radix(part, 16).ok()?;
    }
    Some(mac)
}

/// Lower-case colon form, as Go prints a `net.HardwareAddr`; empty for no address.
pub fn mac_string(mac: Option<[u8; 6]>) -> String {
    mac.map(crate::netlink::format_mac).unwrap_or_default()
}

/// The host end of a new veth pair: in the plugin's namespace, up, `accept_ra=0`. Its name and
/// index come with the pair; its MAC takes a lookup ([`Netlink::link_by_index`]).
#[derive(Debug, Clone)]
pub struct HostEnd {
    pub name: String,
    pub index: u32,
}

/// The two ends of a new veth pair.
#[derive(Debug, Clone)]
pub struct Veth {
    pub host: HostEnd,
    /// In the container, down, named `CNI_IFNAME`, as the kernel reports it after creation.
    pub container: Link,
}

impl Veth {
    /// The result entry of the host end, with the MAC it has now.
    pub fn host_interface(&self, host_nl: &Netlink) -> CniResult<Interface> {
        let link = host_nl
            .link_by_index(self.host.index)
            .map_err(CniError::internal)?
            .ok_or_else(|| {
                CniError::internal(format!(
                    "failed to lookup {:?}: link not found",
                    self.host.name
                ))
            })?;
        Ok(Interface {
            name: link.name,
            mac: mac_string(link.mac),
            ..Interface::default()
        })
    }

    /// The result entry of the container end.
    pub fn container_interface(&self, sandbox: &str) -> Interface {
        Interface {
            name: self.container.name.clone(),
            mac: mac_string(self.container.mac),
            sandbox: sandbox.to_string(),
            ..Interface::default()
        }
    }
}

/// Options of [`setup_veth`].
#[derive(Debug, Clone, Default)]
pub struct VethOptions<'a> {
    /// MTU of both ends; None keeps the kernel's default.
    pub mtu: Option<u32>,
    /// MAC of the container end.
    pub mac: Option<[u8; 6]>,
    /// Host end name; None picks `veth` + random hex, retried on a clash.
    pub host_name: Option<&'a str>,
    /// Index of the bridge the host end becomes a port of as it is made.
    pub master: Option<u32>,
}

/// Creates a veth pair: `ifname` in `container`, its peer in the calling thread's namespace
/// (socket `host_nl`), up, with `accept_ra=0`, as the reference's `ip.SetupVeth`. One request
/// from the host side makes both ends, sets the host end up and, if asked, on its bridge; the
/// reference makes it from inside the container and then needs three more.
pub fn setup_veth(
    host_nl: &Netlink,
    container: &NetNs,
    ifname: &str,
    opts: &VethOptions,
) -> CniResult<Veth> {
    let mut attempt = 0;
    let peer_name = loop {
        attempt += 1;
        let peer_name = match opts.host_name {
            Some(name) => name.to_string(),
            None => random_veth_name()?,
        };
        let mut container_end = VethPeer::new(ifname);
        container_end.netns = Some(container.fd());
        container_end.mtu = opts.mtu;
        container_end.mac = opts.mac;
        let mut spec = LinkSpec::new(peer_name.as_str(), LinkKind::Veth(container_end));
        spec.mtu = opts.mtu;
        spec.master = opts.master;
        spec.up = true;
        match host_nl.create_link(&spec) {
            Ok(()) => break peer_name,
            Err(e) if e.errno() == libc::EEXIST => {
                let peer_clash = host_nl
                    .link_by_name(&peer_name)
                    .map_err(CniError::internal)?
                    .is_some();
                if peer_clash && opts.host_name.is_none() && attempt < VETH_NAME_ATTEMPTS {
                    continue;
                }
                return Err(CniError::internal(format!(
                    "container veth name ({ifname:?}) peer provided ({peer_name:?}) already exists"
                )));
            }
            Err(e) => {
                return Err(CniError::internal(format!("failed to make veth pair: {e}")));
            }
        }
    };
    // We want to own the routes of this interface; the reference ignores a failure too.
    let _ = sysctl::write(&format!("net/ipv6/conf/{peer_name}/accept_ra"), "0");
    let container_link = in_netns(container, |nl| {
        nl.link_by_name(ifname)
            .map_err(CniError::internal)?
            .ok_or_else(|| {
                CniError::internal(format!("failed to lookup {ifname:?} after creating it"))
            })
    })?;
    // A veth end names its peer's index (`IFLA_LINK`): no lookup of the host end needed.
    let index = match container_link.peer_index {
        Some(index) => index,
        None => {
            host_nl
                .link_by_name(&peer_name)
                .map_err(CniError::internal)?
                .ok_or_else(|| {
                    CniError::internal(format!(
                        "failed to lookup {peer_name:?} in the host namespace: link not found"
                    ))
                })?
                .index
        }
    };
    Ok(Veth {
        host: HostEnd {
            name: peer_name,
            index,
        },
        container: container_link,
    })
}

/// The link `name` in the calling thread's namespace (socket `host_nl`), or in `container`
/// when `in_container` (the `linkInContainer` key of macvlan, ipvlan and vlan).
pub fn lookup_link(
    host_nl: &Netlink,
    container: &NetNs,
    in_container: bool,
    name: &str,
) -> CniResult<Option<Link>> {
    if in_container {
        in_netns(container, |nl| {
            nl.link_by_name(name).map_err(CniError::internal)
        })
    } else {
        host_nl.link_by_name(name).map_err(CniError::internal)
    }
}

/// [`lookup_link`] for a `master` that must exist.
pub fn lookup_master(
    host_nl: &Netlink,
    container: &NetNs,
    in_container: bool,
    name: &str,
) -> CniResult<Link> {
    lookup_link(host_nl, container, in_container, name)?.ok_or_else(|| {
        CniError::internal(format!("failed to lookup master {name:?}: Link not found"))
    })
}

/// CHECK: the addresses and routes of `result` are in place for `ifname`.
pub fn validate_result(nl: &Netlink, ifname: &str, result: &CniOutput) -> CniResult<()> {
    validate_interface_ips(nl, ifname, &result.ips)?;
    validate_routes(nl, &result.routes)
}

/// The link of the first default route (IPv4, then IPv6) of the main table, as the
/// reference picks a macvlan/ipvlan `master` that is not configured.
pub fn default_route_link(nl: &Netlink) -> CniResult<String> {
    let routes = nl
        .routes(None, Some(crate::netlink::RT_TABLE_MAIN), None)
        .map_err(CniError::internal)?;
    for route in routes.iter().filter(|r| r.dst.prefix() == 0) {
        let Some(oif) = route.oif else { continue };
        if let Some(link) = nl.link_by_index(oif).map_err(CniError::internal)? {
            return Ok(link.name);
        }
    }
    Err(CniError::internal("no default route interface found"))
}

/// Creates a link for the container as macvlan, ipvlan and vlan do: under a random temporary
/// name (a kernel once clashed with a host link of the final name), straight into `container`
/// from the calling thread's namespace, or made inside the container when `in_container`;
/// then renamed to `ifname` there. A link that cannot be renamed is deleted again. Returns
/// the result's interface entry (`sandbox` as given).
pub fn create_for_container<'a>(
    host_nl: &Netlink,
    container: &'a NetNs,
    in_container: bool,
    mut spec: LinkSpec<'a>,
    ifname: &str,
    sandbox: &str,
) -> CniResult<Interface> {
    let kind = spec.kind.kind_name();
    spec.name = random_veth_name()?;
    let tmp = spec.name.clone();
    let created = if in_container {
        in_netns(container, |nl| Ok(nl.create_link(&spec)))?
    } else {
        spec.netns = Some(container.fd());
        host_nl.create_link(&spec)
    };
    created.map_err(|e| CniError::internal(format!("failed to create {kind}: {e}")))?;
    in_netns(container, |nl| rename_new_link(nl, &tmp, ifname, kind))?;
    in_netns(container, |nl| {
        container_interface(nl, ifname, sandbox, kind)
    })
}

/// Renames the link `tmp` just made to `ifname`, deleting it if that fails.
pub fn rename_new_link(nl: &Netlink, tmp: &str, ifname: &str, kind: &str) -> CniResult<()> {
    let link = nl
        .link_by_name(tmp)
        .map_err(CniError::internal)?
        .ok_or_else(|| CniError::internal(format!("failed to find new {kind} {tmp:?}")))?;
    if let Err(e) = nl.rename(link.index, ifname) {
        let _ = nl.delete_link(link.index);
        return Err(CniError::internal(format!(
            "failed to rename {kind} to {ifname:?}: {e}"
        )));
    }
    Ok(())
}

/// The result entry of the container link `ifname`, looked up again for its MAC.
pub fn container_interface(
    nl: &Netlink,
    ifname: &str,
    sandbox: &str,
    kind: &str,
) -> CniResult<Interface> {
    let link = nl
        .link_by_name(ifname)
        .map_err(CniError::internal)?
        .ok_or_else(|| CniError::internal(format!("failed to refetch {kind} {ifname:?}")))?;
    Ok(Interface {
        name: link.name,
        mac: mac_string(link.mac),
        sandbox: sandbox.to_string(),
        ..Interface::default()
    })
}

/// CHECK of the container interface, as the reference does it for every single-interface
/// plugin: named in the result, present, not in the host namespace, and the same MAC when the
/// result has one. Returns the link with its kind-specific settings for the plugin's own checks.
pub fn validate_container_link(nl: &Netlink, intf: &Interface) -> CniResult<LinkDetails> {
    if intf.name.is_empty() {
        return Err(CniError::internal(
            "Container interface name missing in prevResult: ",
        ));
    }
    let details = nl.link_details(&intf.name).ok().flatten().ok_or_else(|| {
        CniError::internal(format!(
            "Container Interface name in prevResult: {} not found",
            intf.name
        ))
    })?;
    if intf.sandbox.is_empty() {
        return Err(CniError::internal(format!(
            "Error: Container interface {} should not be in host namespace",
            details.link.name
        )));
    }
    let actual = mac_string(details.link.mac);
    if !intf.mac.is_empty() && intf.mac != actual {
        return Err(CniError::internal(format!(
            "Interface {} Mac {} doesn't match container Mac: {actual}",
            intf.name, intf.mac
        )));
    }
    Ok(details)
}

/// CHECK: the container link is of `kind` (`IFLA_INFO_KIND`).
pub fn require_kind(details: &LinkDetails, kind: &str) -> CniResult<()> {
    if details.link.kind.as_deref() == Some(kind) {
        return Ok(());
    }
    Err(CniError::internal(format!(
        "Error: Container interface {} not of type {kind}",
        details.link.name
    )))
}

/// The DAD sysctls bridge writes before configuring the container end: `accept_dad=0`
/// unless `enable_dad` (then `enhanced_dad=1`, `accept_dad=1`), and `arp_notify=1`. Failures
/// are ignored, as in the reference (the interface may have IPv6 disabled).
pub fn set_dad_sysctls(ifname: &str, enable_dad: bool) {
    if enable_dad {
        let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/enhanced_dad"), "1");
        let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/accept_dad"), "1");
    } else {
        let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/accept_dad"), "0");
    }
    let _ = sysctl::write(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1");
}

/// Go's `%+v` of an `IPConfig`, close enough to recognise in an error message.
fn describe_ip(ip: &IpConfig) -> String {
    let gw = ip.gateway.map(|g| g.to_string()).unwrap_or_default();
    let index = ip.interface.map(|i| i.to_string()).unwrap_or_default();
    format!("{{Interface:{index} Address:{} Gateway:{gw}}}", ip.address)
}

/// Applies `result` to link `ifname` in the socket's namespace, as `ipam.ConfigureIface`:
/// the IPs whose interface index names `ifname` (IPv6 enabled first: `disable_ipv6=0` on `lo`
/// and the link, `keep_addr_on_down=1`), link up, DAD settled when there is an IPv6 gateway,
/// then every route, its gateway defaulting to the first gateway of its family. Must run in
/// the namespace of `nl` (the sysctls follow the thread).
pub fn configure(nl: &Netlink, ifname: &str, result: &CniOutput) -> CniResult<()> {
    if result.interfaces.is_empty() {
        return Err(CniError::internal("no interfaces to configure"));
    }
    let link = nl
        .link_by_name(ifname)
        .map_err(|e| CniError::internal(format!("failed to lookup {ifname:?}: {e}")))?
        .ok_or_else(|| {
            CniError::internal(format!("failed to lookup {ifname:?}: Link not found"))
        })?;
    let (mut v4gw, mut v6gw): (Option<IpAddr>, Option<IpAddr>) = (None, None);
    let mut ipv6_enabled = false;
    for ip in &result.ips {
        let Some(index) = ip.interface else { continue };
        if result.interfaces.get(index).map(|i| i.name.as_str()) != Some(ifname) {
            return Err(CniError::internal(format!(
                "failed to add IP addr {} to {ifname:?}: invalid interface index",
                describe_ip(ip)
            )));
        }
        if !ipv6_enabled && ip.address.is_ipv6() {
            enable_ipv6(ifname)?;
            ipv6_enabled = true;
        }
        nl.add_address_with_broadcast(link.index, ip.address)
            .map_err(|e| {
                CniError::internal(format!(
                    "failed to add IP addr {} to {ifname:?}: {e}",
                    describe_ip(ip)
                ))
            })?;
        match ip.gateway {
            Some(gw @ IpAddr::V4(_)) if v4gw.is_none() => v4gw = Some(gw),
            Some(gw @ IpAddr::V6(_)) if v6gw.is_none() => v6gw = Some(gw),
            _ => {}
        }
    }
    nl.set_up(link.index, true)
        .map_err(|e| CniError::internal(format!("failed to set {ifname:?} UP: {e}")))?;
    if v6gw.is_some() {
        settle_addresses(nl, ifname, link.index, DAD_SETTLE_TIMEOUT).map_err(|e| {
            CniError::internal(format!("failed to settle addresses for {ifname:?}: {e}"))
        })?;
    }
    for r in &result.routes {
        let gw = r.gw.or(if r.dst.is_ipv4() { v4gw } else { v6gw });
        let route = kernel_route(r, gw, link.index);
        nl.add_route_ecmp(&route).map_err(|e| {
            CniError::internal(format!(
                "failed to add route '{} via {} dev {ifname} metric {} (Scope: {}, Table: {})': {e}",
                r.dst,
                gw.map(|g| g.to_string()).unwrap_or_else(|| "<nil>".into()),
                r.priority,
                route.scope,
                r.table.unwrap_or(0),
            ))
        })?;
    }
    Ok(())
}

/// The kernel route for a result route through link `oif`.
fn kernel_route(r: &ResultRoute, gw: Option<IpAddr>, oif: u32) -> Route {
    let mut route = Route::new(r.dst);
    route.gateway = gw;
    route.oif = Some(oif);
    if r.priority > 0 {
        route.priority = Some(r.priority);
    }
    // Table 0 means "unset" to the reference: the main table.
    if let Some(table) = r
        .table
        .and_then(|t| u32::try_from(t).ok())
        .filter(|t| *t > 0)
    {
        route.table = table;
    }
    if let Some(scope) = r.scope.and_then(|s| u8::try_from(s).ok()) {
        route.scope = scope;
    }
    route
}

/// `disable_ipv6=0` on `lo` and `ifname`, `keep_addr_on_down=1` on `ifname`.
fn enable_ipv6(ifname: &str) -> CniResult<()> {
    for iface in ["lo", ifname] {
        let name = format!("net/ipv6/conf/{iface}/disable_ipv6");
        let value = match sysctl::read(&name) {
            Ok(value) => value,
            Err(e) => {
                eprintln!("ipam_linux: failed to read sysctl {name:?}: {e}");
                continue;
            }
        };
        if value == "0" {
            continue;
        }
        sysctl::write(&name, "0").map_err(|e| {
            CniError::internal(format!(
                "failed to enable IPv6 for interface {iface:?} ({name}={value}): {e}"
            ))
        })?;
    }
    sysctl::write(&format!("net/ipv6/conf/{ifname}/keep_addr_on_down"), "1").map_err(|e| {
        CniError::internal(format!(
            "failed to enable keep_addr_on_down for interface {ifname:?}: {e}"
        ))
    })
}

/// Waits until no IPv6 address of the link is tentative; a failed DAD is an error, and so is
/// a timeout while the link is operationally up.
fn settle_addresses(
    nl: &Netlink,
    ifname: &str,
    index: u32,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let addrs = nl
            .addresses(Some(index), Some(Family::V6))
            .map_err(|e| format!("could not list addresses: {e}"))?;
        if let Some(failed) = addrs.iter().find(|a| a.flags & IFA_F_DADFAILED != 0) {
            return Err(format!(
                "link {ifname} has address {} in DADFAILED state",
                failed.addr.ip()
            ));
        }
        if !addrs.iter().any(|a| a.flags & IFA_F_TENTATIVE != 0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let up = nl
                .link_by_index(index)
                .map_err(|e| format!("failed to retrieve link: {e}"))?
                .is_some_and(|l| l.oper_state == OPER_UP);
            if up {
                return Err(format!(
                    "link {ifname} still has tentative addresses after {} seconds",
                    timeout.as_secs()
                ));
            }
            return Ok(());
        }
        std::thread::sleep(DAD_SETTLE_INTERVAL);
    }
}

/// Go's `net.IP.IsGlobalUnicast`: not unspecified, loopback, multicast, link-local or the
/// IPv4 limited broadcast address.
pub fn is_global_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_multicast()
                || v4.is_link_local()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Deletes link `ifname` and returns its global unicast addresses (the reference's
/// `DelLinkByNameAddr`); None when there is no such link.
pub fn delete_link_with_addresses(
    nl: &Netlink,
    ifname: &str,
) -> Result<Option<Vec<IpNetwork>>, NetlinkError> {
    let Some(link) = nl.link_by_name(ifname)? else {
        return Ok(None);
    };
    let addrs = nl.addresses(Some(link.index), None)?;
    match nl.delete_link(link.index) {
        Ok(()) => {}
        // Gone meanwhile (a concurrent DEL, or the peer went away with its namespace).
        Err(e) if e.errno() == libc::ENODEV => return Ok(None),
        Err(e) => return Err(e),
    }
    Ok(Some(
        addrs
            .into_iter()
            .map(|a| a.addr)
            .filter(|a| is_global_unicast(a.ip()))
            .collect(),
    ))
}

/// Writes `1` to the IPv4 or IPv6 forwarding switch unless it is already `1`.
pub fn enable_forwarding(v6: bool) -> std::io::Result<()> {
    let name = if v6 {
        "net/ipv6/conf/all/forwarding"
    } else {
        "net/ipv4/ip_forward"
    };
    sysctl::ensure(name, "1")
}

/// Forwarding for every family that `ips` has (the reference's `ip.EnableForward`).
pub fn enable_forwarding_for(ips: &[IpConfig]) -> std::io::Result<()> {
    if ips.iter().any(|ip| ip.address.is_ipv4()) {
        enable_forwarding(false)?;
    }
    if ips.iter().any(|ip| ip.address.is_ipv6()) {
        enable_forwarding(true)?;
    }
    Ok(())
}

/// CHECK: every result IP is on `ifname`, and a route to its prefix exists (the reference's
/// `ValidateExpectedInterfaceIPs`).
pub fn validate_interface_ips(nl: &Netlink, ifname: &str, ips: &[IpConfig]) -> CniResult<()> {
    for ip in ips {
        let link =
            nl.link_by_name(ifname).ok().flatten().ok_or_else(|| {
                CniError::internal(format!("Cannot find container link {ifname}"))
            })?;
        let addrs = nl
            .addresses(Some(link.index), None)
            .map_err(|_| CniError::internal("Cannot obtain List of IP Addresses"))?;
        if !addrs
            .iter()
            .any(|a| a.addr.ip() == ip.address.ip() && a.addr.prefix() == ip.address.prefix())
        {
            return Err(CniError::internal(format!(
                "Failed to match addr {} on interface {ifname}",
                ip.address
            )));
        }
        let prefix = network_of(ip.address);
        let family = Family::of(ip.address.ip());
        let gw = ip
            .gateway
            .map(|g| g.to_string())
            .unwrap_or_else(|| "<nil>".into());
        let routes = nl
            .routes(Some(family), Some(crate::netlink::RT_TABLE_MAIN), None)
            .map_err(|e| {
                CniError::internal(format!(
                    "Error {e} trying to find Gateway {gw} for interface {ifname}"
                ))
            })?;
        if !routes.iter().any(|r| r.dst == prefix) {
            return Err(CniError::internal(format!(
                "Failed to find Gateway {gw} for interface {ifname}"
            )));
        }
    }
    Ok(())
}

/// CHECK: every result route is in the main table (the reference's `ValidateExpectedRoute`;
/// a default route matches whatever its gateway).
pub fn validate_routes(nl: &Netlink, routes: &[ResultRoute]) -> CniResult<()> {
    for route in routes {
        let family = Family::of(route.dst.ip());
        let found = nl
            .routes(Some(family), Some(crate::netlink::RT_TABLE_MAIN), None)
            .map_err(|e| {
                CniError::internal(format!(
                    "Expected Route {} not route table lookup error {e}",
                    describe_route(route)
                ))
            })?;
        let is_default = route.dst.prefix() == 0;
        let matches = found.iter().any(|r| {
            r.dst == network_of(route.dst)
                && (is_default || route.gw.is_none() || r.gateway == route.gw)
        });
        if !matches {
            return Err(CniError::internal(format!(
                "Expected Route {} not found in routing table",
                describe_route(route)
            )));
        }
    }
    Ok(())
}

fn describe_route(route: &ResultRoute) -> String {
    match route.gw {
        Some(gw) => format!("{{Dst:{} GW:{gw}}}", route.dst),
        None => format!("{{Dst:{} GW:<nil>}}", route.dst),
    }
}

/// The network of an address with host bits (`10.1.2.3/24` → `10.1.2.0/24`).
pub fn network_of(addr: IpNetwork) -> IpNetwork {
    IpNetwork::new(addr.network(), addr.prefix()).unwrap_or(addr)
}

/// The first address after the network address (`10.1.2.3/24` → `10.1.2.1`): the gateway the
/// reference assumes when IPAM gives none.
pub fn first_host(addr: IpNetwork) -> IpAddr {
    match addr.network() {
        IpAddr::V4(net) => IpAddr::V4(u32::from(net).wrapping_add(1).into()),
        IpAddr::V6(net) => IpAddr::V6(u128::from(net).wrapping_add(1).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_veth_names_are_veth_and_8_hex() {
        let a = random_veth_name().unwrap();
        let b = random_veth_name().unwrap();
        for name in [&a, &b] {
            assert_eq!(name.len(), 12, "{name}");
            assert!(name.starts_with("veth"));
            assert!(
                name[4..]
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
        assert_ne!(a, b, "two random names collided");
    }

    #[test]
    fn macs_parse_and_print() {
        assert_eq!(
            parse_mac("0A:58:0a:f4:00:02"),
            Some([0x0a, 0x58, 0x0a, 0xf4, 0, 2])
        );
        assert_eq!(
            parse_mac("0a-58-0a-f4-00-02"),
            Some([0x0a, 0x58, 0x0a, 0xf4, 0, 2])
        );
        for bad in [
            "",
            "0a:58",
            "0a:58:0a:f4:00:02:03",
            "zz:58:0a:f4:00:02",
            "a:58:0a:f4:00:002",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        assert_eq!(
            mac_string(Some([0x0a, 0x58, 0, 0, 0xff, 1])),
            "0a:58:00:00:ff:01"
        );
        assert_eq!(mac_string(None), "");
    }

    #[test]
    fn gateway_and_network_math() {
        let a: IpNetwork = "10.1.2.3/24".parse().unwrap();
        assert_eq!(network_of(a).to_string(), "10.1.2.0/24");
        assert_eq!(first_host(a).to_string(), "10.1.2.1");
        let b: IpNetwork = "fd00:1::5/64".parse().unwrap();
        assert_eq!(first_host(b).to_string(), "fd00:1::1");
        assert_eq!(network_of(b).to_string(), "fd00:1::/64");
    }

    #[test]
    fn global_unicast_is_what_go_says() {
        for (ip, global) in [
            ("10.0.0.1", true),
            ("192.168.1.1", true),
            ("fd00::1", true),
            ("2001:db8::1", true),
            ("127.0.0.1", false),
            ("169.254.1.1", false),
            ("fe80::1", false),
            ("ff02::1", false),
            ("224.0.0.1", false),
            ("255.255.255.255", false),
            ("0.0.0.0", false),
            ("::", false),
            ("::1", false),
        ] {
            assert_eq!(is_global_unicast(ip.parse().unwrap()), global, "{ip}");
        }
    }

    #[test]
    fn result_routes_become_kernel_routes() {
        let mut r = ResultRoute::new("10.9.0.0/16".parse().unwrap(), None);
        let gw: IpAddr = "10.1.0.1".parse().unwrap();
        let k = kernel_route(&r, Some(gw), 7);
        assert_eq!(
            (k.gateway, k.oif, k.priority, k.table, k.scope),
            (Some(gw), Some(7), None, 254, 0)
        );
        r.priority = 5;
        r.table = Some(100);
        r.scope = Some(253);
        let k = kernel_route(&r, None, 7);
        assert_eq!((k.priority, k.table, k.scope), (Some(5), 100, 253));
        r.table = Some(0);
        assert_eq!(kernel_route(&r, None, 7).table, 254);
    }
}
