//! Pieces bridge and ptp (and the later veth-style plugins) share: config decoding helpers, the
//! netns and IPAM steps with their reference error texts, masquerade set-up and teardown, and
//! the addresses a DEL can still learn when the link is gone.

use std::path::Path;

use ipnetwork::IpNetwork;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::cni::result::{Dns, Interface};
use crate::cni::{CniError, CniOutput, CniResult, Command, Request};
use crate::firewall;
use crate::iface;
use crate::ipam;
use crate::netlink::{LinkKind, LinkSpec, Netlink};
use crate::netns::{NetNs, NetnsError};
use crate::sysctl;

/// A config value where JSON `null` means the default, as Go's decoder treats it.
pub fn null_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// The MTU to ask for: the reference passes any non-positive value as "kernel default".
pub fn mtu(value: i64) -> Option<u32> {
    u32::try_from(value).ok().filter(|m| *m > 0)
}

/// Whether the config's own `dns` sets anything, so it replaces the IPAM result's: a present
/// list counts even when empty, as Go's nil check does.
pub fn dns_override(req: &Request) -> Option<Dns> {
    let raw: Value = serde_json::from_slice(&req.stdin).ok()?;
    let dns = raw.get("dns")?;
    let set = ["nameservers", "search", "options"]
        .iter()
        .any(|k| dns.get(*k).is_some_and(|v| !v.is_null()))
        || dns
            .get("domain")
            .and_then(Value::as_str)
            .is_some_and(|d| !d.is_empty());
    set.then(|| req.config.dns.clone().unwrap_or_default())
}

/// Opens `CNI_NETNS` with the reference's error text.
pub fn open_netns(path: &str) -> CniResult<NetNs> {
    NetNs::open(path).map_err(|e| CniError::internal(format!("failed to open netns {path:?}: {e}")))
}

/// Opens `CNI_NETNS` for a DEL: None when it is empty or no longer exists.
pub fn open_netns_for_del(path: &str) -> CniResult<Option<NetNs>> {
    if path.is_empty() {
        return Ok(None);
    }
    match NetNs::open(path) {
        Ok(ns) => Ok(Some(ns)),
        Err(NetnsError::NotFound(_)) => Ok(None),
        Err(e) => Err(CniError::internal(format!(
            "failed to open netns {path:?}: {e}"
        ))),
    }
}

/// IPAM ADD, requiring at least one IP.
pub fn ipam_add(req: &Request) -> CniResult<CniOutput> {
    let result = ipam::delegate(req, Command::Add)?
        .ok_or_else(|| CniError::internal("IPAM plugin returned no result"))?;
    Ok(result)
}

/// Undoes an ADD that failed after IPAM ADD: releases the addresses; the error that stopped
/// the ADD is the one reported.
pub fn release_after_failure(req: &Request) {
    if let Err(e) = ipam::delegate(req, Command::Del) {
        tracing::warn!("releasing the IPAM reservation after a failed ADD: {e}");
    }
}

/// The masquerade backend, checked before anything is created (the reference only finds an
/// unknown backend after the interfaces exist, and leaves them behind).
pub fn masq_backend(
    enabled: bool,
    configured: Option<&str>,
) -> CniResult<Option<firewall::MasqBackend>> {
    if !enabled {
        return Ok(None);
    }
    firewall::choose_backend(configured).map(Some)
}

pub fn masq_setup(
    backend: firewall::MasqBackend,
    req: &Request,
    ips: &[IpNetwork],
) -> CniResult<()> {
    firewall::setup_ip_masq(
        backend,
        &req.config.name,
        &req.env.ifname,
        &req.env.container_id,
        ips,
    )
}

pub fn masq_teardown(req: &Request, ips: &[IpNetwork]) -> CniResult<()> {
    firewall::teardown_ip_masq(
        &req.config.name,
        &req.env.ifname,
        &req.env.container_id,
        ips,
    )
}

/// The addresses of the attachment as the runtime's `prevResult` lists them, for a DEL that
/// finds no link to read them from.
pub fn prev_result_ips(req: &Request) -> Vec<IpNetwork> {
    match req.prev_result() {
        Ok(Some(prev)) => prev.ips.iter().map(|ip| ip.address).collect(),
        _ => Vec::new(),
    }
}

/// Adds to `ips` those of `more` it lacks.
pub fn merge_ips(ips: &mut Vec<IpNetwork>, more: impl IntoIterator<Item = IpNetwork>) {
    for ip in more {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
}

/// GC: the IPAM plugin's GC, then the masquerade state (whatever `ipMasq` says now, since it
/// may have been on when the attachments were made) of attachments not listed as valid. With
/// no list at all nothing is known to be stale, so no rule is touched.
pub fn gc(req: &Request) -> CniResult<()> {
    let mut first_error = None;
    if req.config.ipam_type().is_some()
        && let Err(e) = ipam::delegate(req, Command::Gc)
    {
        first_error = Some(e);
    }
    if let Some(keep) = req.config.attachments_to_keep() {
        let keep: Vec<(String, String)> = keep
            .iter()
            .map(|a| (a.container_id.clone(), a.ifname.clone()))
            .collect();
        if let Err(e) = firewall::gc_ip_masq(&req.config.name, &keep)
            && first_error.is_none()
        {
            first_error = Some(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// STATUS: the IPAM plugin's STATUS, when there is one.
pub fn status(req: &Request) -> CniResult<()> {
    if req.config.ipam_type().is_some() {
        ipam::delegate(req, Command::Status)?;
    }
    Ok(())
}

/// GC for plugins without host-side state: only the IPAM plugin's GC, when there is one.
pub fn gc_ipam(req: &Request) -> CniResult<()> {
    if req.config.ipam_type().is_some() {
        ipam::delegate(req, Command::Gc)?;
    }
    Ok(())
}

/// The MAC of the plugins with a `mac` key (macvlan, tap): the key, then `CNI_ARGS` `MAC`,
/// then `runtimeConfig.mac`, each later one winning when set; None when none is.
pub fn configured_mac(req: &Request, key: &str) -> CniResult<Option<[u8; 6]>> {
    let mut mac = key.to_string();
    if let Some(env_mac) = req.cni_args(&["MAC"])?.get("MAC")
        && !env_mac.is_empty()
    {
        mac = env_mac.to_string();
    }
    if let Some(rt) = req
        .config
        .runtime_config
        .as_ref()
        .and_then(|rc| rc.get("mac"))
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    {
        mac = rt.to_string();
    }
    if mac.is_empty() {
        return Ok(None);
    }
    iface::parse_mac(&mac).map(Some).ok_or_else(|| {
        CniError::internal(format!(
            "invalid args {mac} for MAC addr: address {mac}: invalid MAC address"
        ))
    })
}

/// CHECK's common start: the `prevResult` (an error saying `missing` when there is none) and
/// its interface named `CNI_IFNAME` in `CNI_NETNS`.
pub fn prev_container_interface(req: &Request, missing: &str) -> CniResult<(CniOutput, Interface)> {
    if req.config.prev_result.as_ref().is_none_or(Value::is_null) {
        return Err(CniError::internal(missing));
    }
    let prev = req.prev_result()?.unwrap_or_default();
    let found = prev
        .interfaces
        .iter()
        .find(|i| i.name == req.env.ifname && i.sandbox == req.env.netns)
        .cloned()
        .unwrap_or_default();
    if found.sandbox != req.env.netns {
        return Err(CniError::internal(format!(
            "Sandbox in prevResult {} doesn't match configured netns: {}",
            found.sandbox, req.env.netns
        )));
    }
    Ok((prev, found))
}

/// Deletes the container's link `ifname`; a link that is already gone is fine.
pub fn delete_container_link(netns: &NetNs, ifname: &str) -> CniResult<()> {
    iface::in_netns(netns, |nl| {
        iface::delete_link_with_addresses(nl, ifname)
            .map(|_| ())
            .map_err(|e| CniError::internal(format!("failed to delete {ifname:?}: {e}")))
    })
}

/// DEL's link step: the container link removed, unless `CNI_NETNS` is empty or gone.
pub fn del_container_link(req: &Request) -> CniResult<()> {
    match open_netns_for_del(&req.env.netns)? {
        Some(netns) => delete_container_link(&netns, &req.env.ifname),
        None => Ok(()),
    }
}

/// DEL of a plugin whose only state is the container link: IPAM DEL when there is an IPAM
/// section, then the link, unless the namespace or the link is gone already.
pub fn del_single(req: &Request) -> CniResult<()> {
    if req.config.ipam_type().is_some() {
        ipam::delegate(req, Command::Del)?;
    }
    del_container_link(req)
}

/// Where the addresses of a single-interface plugin come from.
pub enum IpSource {
    /// None: the link is only set up (macvlan and tap without IPAM).
    L2,
    /// The IPAM plugin's ADD.
    Ipam,
    /// A result the plugin already has (ipvlan chained after another plugin).
    Given(CniOutput),
}

impl IpSource {
    /// IPAM when the config has an IPAM section, else L2 only.
    pub fn from_config(req: &Request) -> IpSource {
        if req.config.ipam_type().is_some() {
            IpSource::Ipam
        } else {
            IpSource::L2
        }
    }
}

/// Creates a link of `kind` (on its master) for the container, with `mtu` (non-positive:
/// the kernel's default) and `mac`, named `CNI_IFNAME` there: see
/// [`iface::create_for_container`].
pub fn create_on_master<'a>(
    req: &Request,
    host_nl: &Netlink,
    netns: &'a NetNs,
    in_container: bool,
    kind: LinkKind<'a>,
    mtu_value: i64,
    mac: Option<[u8; 6]>,
) -> CniResult<Interface> {
    let mut spec = LinkSpec::new("", kind);
    spec.mtu = mtu(mtu_value);
    spec.mac = mac;
    iface::create_for_container(
        host_nl,
        netns,
        in_container,
        spec,
        &req.env.ifname,
        &req.env.netns,
    )
}

/// ADD's end for the plugins with one container interface: the addresses (all on interface
/// 0, `iface`), `arp_notify` (and `ndisc_notify`) as asked, `ConfigureIface`; for L2 just
/// the link up. An IPAM reservation made here is released if a later step fails; the link
/// is the caller's to remove.
pub fn finish_single(
    req: &Request,
    netns: &NetNs,
    iface: Interface,
    source: IpSource,
    notify: Notify,
) -> CniResult<CniOutput> {
    let l3 = !matches!(source, IpSource::L2);
    let from_ipam = matches!(source, IpSource::Ipam);
    let mut result = match source {
        IpSource::L2 => CniOutput::default(),
        IpSource::Ipam => ipam_add(req)?,
        IpSource::Given(result) => result,
    };
    let configured = (|| {
        if l3 && result.ips.is_empty() {
            return Err(CniError::internal("IPAM plugin returned missing IP config"));
        }
        for ip in &mut result.ips {
            ip.interface = Some(0);
        }
        result.interfaces = vec![iface];
        let ifname = req.env.ifname.as_str();
        let result = &result;
        iface::in_netns(netns, |nl| {
            if !l3 {
                let link = nl.link_by_name(ifname).map_err(CniError::internal)?;
                let link = link.ok_or_else(|| {
                    CniError::internal(format!("failed to find interface name {ifname:?}"))
                })?;
                return nl
                    .set_up(link.index, true)
                    .map_err(|e| CniError::internal(format!("failed to set {ifname:?} UP: {e}")));
            }
            // Failures are ignored, as in the reference (IPv6 may be off).
            if notify.arp {
                let _ = sysctl::write(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1");
            }
            if notify.ndisc {
                let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/ndisc_notify"), "1");
            }
            iface::configure(nl, ifname, result)
        })
    })();
    match configured {
        Ok(()) => Ok(result),
        Err(e) => {
            if from_ipam {
                release_after_failure(req);
            }
            Err(e)
        }
    }
}

/// [`finish_single`] for a link the plugin created in the container: the config's own `dns`
/// in the result (the reference replaces IPAM's with it), the link deleted again on failure.
pub fn finish_created(
    req: &Request,
    netns: &NetNs,
    iface: Interface,
    source: IpSource,
    notify: Notify,
) -> CniResult<CniOutput> {
    match finish_single(req, netns, iface, source, notify) {
        Ok(mut result) => {
            result.dns = req.config.dns.clone().unwrap_or_default();
            Ok(result)
        }
        Err(e) => {
            let _ = delete_container_link(netns, &req.env.ifname);
            Err(e)
        }
    }
}

/// A handler of a verb without a result.
pub type Verb = fn(&Request) -> CniResult<()>;

/// The handler of a verb that has nothing to do.
pub fn nothing(_req: &Request) -> CniResult<()> {
    Ok(())
}

/// Runs the handler of the request's verb; only ADD has a result, VERSION does nothing.
pub fn dispatch(
    req: &Request,
    add: fn(&Request) -> CniResult<CniOutput>,
    del: Verb,
    check: Verb,
    gc: Verb,
    status: Verb,
) -> CniResult<Option<CniOutput>> {
    match req.command {
        Command::Add => add(req).map(Some),
        Command::Del => del(req).map(|()| None),
        Command::Check => check(req).map(|()| None),
        Command::Status => status(req).map(|()| None),
        Command::Gc => gc(req).map(|()| None),
        Command::Version => Ok(None),
    }
}

/// [`dispatch`] for a plugin whose GC is only IPAM's ([`gc_ipam`]).
pub fn dispatch_single(
    req: &Request,
    add: fn(&Request) -> CniResult<CniOutput>,
    del: Verb,
    check: Verb,
    status: Verb,
) -> CniResult<Option<CniOutput>> {
    dispatch(req, add, del, check, gc_ipam, status)
}

/// CHECK's IPAM step: the IPAM plugin's CHECK when there is an IPAM section.
pub fn ipam_check(req: &Request) -> CniResult<()> {
    if req.config.ipam_type().is_some() {
        ipam::delegate(req, Command::Check)?;
    }
    Ok(())
}

/// The gratuitous ARP / unsolicited neighbour advertisement switches [`finish_single`] sets.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notify {
    pub arp: bool,
    pub ndisc: bool,
}

impl Notify {
    /// Both switches on.
    pub const BOTH: Notify = Notify {
        arp: true,
        ndisc: true,
    };
}

/// Writes the per-attachment record a chained plugin keeps so that DEL and GC can undo ADD
/// without being given ADD's arguments again; atomically, through a temp file and rename.
/// `what` names the recorded state in the error ("port mappings", "firewall rules").
pub fn write_record<T: Serialize>(dir: &Path, name: &str, what: &str, record: &T) -> CniResult<()> {
    let fail = |e: std::io::Error| {
        CniError::internal(format!(
            "failed to record the {what} in {}: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let text = serde_json::to_string(record).map_err(CniError::internal)?;
    std::fs::write(&tmp, text).map_err(fail)?;
    std::fs::rename(&tmp, dir.join(name)).map_err(fail)
}

/// The record `name` in `dir`; None when it is missing or unreadable.
pub fn read_record<T: DeserializeOwned>(dir: &Path, name: &str) -> Option<T> {
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).ok()?).ok()
}
