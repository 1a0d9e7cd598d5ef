//! macvlan: a macvlan link on `master` (by default the link of the default route) moved into
//! the container as `CNI_IFNAME`; addresses from IPAM, or none at all (L2) without one.
//!
//! Modes are those of the reference: bridge (default), private, vepa, passthru. Unlike the
//! reference, DEL and CHECK never look for a default route, and a failed ADD always removes
//! the link it made.

use serde::Deserialize;

use super::shared::{self, IpSource, Notify, null_default};
use crate::cni::{Applet, CniError, CniOutput, CniResult, Request};
use crate::iface;
use crate::netlink::{LinkKind, Macvlan, MacvlanMode, Netlink};
use crate::netns::NetNs;

pub const APPLET: Applet = Applet {
    name: "macvlan",
    min_version: "0.1.0",
    run,
};

/// The modes the reference accepts (it has no `source`).
const MODES: [MacvlanMode; 4] = [
    MacvlanMode::Bridge,
    MacvlanMode::Private,
    MacvlanMode::Vepa,
    MacvlanMode::Passthru,
];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MacvlanConf {
    #[serde(default, deserialize_with = "null_default")]
    master: String,
    #[serde(default, deserialize_with = "null_default")]
    mode: String,
    #[serde(default, deserialize_with = "null_default")]
    mtu: i64,
    #[serde(default, deserialize_with = "null_default")]
    mac: String,
    #[serde(default, deserialize_with = "null_default")]
    link_in_container: bool,
    #[serde(default, rename = "bcqueuelen", deserialize_with = "null_default")]
    bc_queue_len: u32,
}

/// The configuration with its master found and every value checked.
struct Loaded {
    conf: MacvlanConf,
    master_index: u32,
    mode: MacvlanMode,
    mac: Option<[u8; 6]>,
}

fn run(req: &Request) -> CniResult<Option<CniOutput>> {
    shared::dispatch_single(req, add, del, check, shared::status)
}

fn mode_from_name(name: &str) -> CniResult<MacvlanMode> {
    let name = if name.is_empty() { "bridge" } else { name };
    MODES
        .into_iter()
        .find(|m| m.name() == name)
        .ok_or_else(|| CniError::internal(format!("unknown macvlan mode: {name:?}")))
}

/// The reference's `loadConf` plus its `createMacvlan` checks: master (default: the link of
/// the default route, in the container when `linkInContainer`), MTU within the master's,
/// mode, and the MAC from the key, `CNI_ARGS` or `runtimeConfig`.
fn load(req: &Request, host_nl: &Netlink, netns: &NetNs) -> CniResult<Loaded> {
    let conf: MacvlanConf = req.decode()?;
    let master = if conf.master.is_empty() {
        if conf.link_in_container {
            iface::in_netns(netns, iface::default_route_link)?
        } else {
            iface::default_route_link(host_nl)?
        }
    } else {
        conf.master.clone()
    };
    let link = iface::lookup_master(host_nl, netns, conf.link_in_container, &master)?;
    if conf.mtu < 0 || conf.mtu > i64::from(link.mtu) {
        return Err(CniError::internal(format!(
            "invalid MTU {}, must be [0, master MTU({})]",
            conf.mtu, link.mtu
        )));
    }
    let mode = mode_from_name(&conf.mode)?;
    let mac = shared::configured_mac(req, &conf.mac)?;
    Ok(Loaded {
        conf,
        master_index: link.index,
        mode,
        mac,
    })
}

fn add(req: &Request) -> CniResult<CniOutput> {
    let netns = shared::open_netns(&req.env.netns)?;
    let host_nl = Netlink::open().map_err(CniError::internal)?;
    let loaded = load(req, &host_nl, &netns)?;
    let kind = LinkKind::Macvlan(Macvlan {
        parent: loaded.master_index,
        mode: loaded.mode,
        bc_queue_len: Some(loaded.conf.bc_queue_len).filter(|l| *l > 0),
    });
    let in_container = loaded.conf.link_in_container;
    let intf = shared::create_on_master(
        req,
        &host_nl,
        &netns,
        in_container,
        kind,
        loaded.conf.mtu,
        loaded.mac,
    )?;
    let source = IpSource::from_config(req);
    shared::finish_created(req, &netns, intf, source, Notify::BOTH)
}

fn del(req: &Request) -> CniResult<()> {
    let _conf: MacvlanConf = req.decode()?;
    shared::del_single(req)
}

fn check(req: &Request) -> CniResult<()> {
    let netns = shared::open_netns(&req.env.netns)?;
    let host_nl = Netlink::open().map_err(CniError::internal)?;
    let loaded = load(req, &host_nl, &netns)?;
    shared::ipam_check(req)?;
    let (prev, intf) = shared::prev_container_interface(req, "required prevResult missing")?;
    let ifname = req.env.ifname.as_str();
    iface::in_netns(&netns, |nl| {
        let details = iface::validate_container_link(nl, &intf)?;
        iface::require_kind(&details, "macvlan")?;
        if details.macvlan_mode != Some(loaded.mode) {
            return Err(CniError::internal(format!(
                "container macvlan mode {} does not match expected value: {}",
                details.macvlan_mode.map_or("unknown", |m| m.name()),
                loaded.mode.name()
            )));
        }
        iface::validate_result(nl, ifname, &prev)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_the_references() {
        assert_eq!(mode_from_name("").unwrap(), MacvlanMode::Bridge);
        for name in ["bridge", "private", "vepa", "passthru"] {
            assert_eq!(mode_from_name(name).unwrap().name(), name);
        }
        for bad in ["source", "Bridge", "l2"] {
            let e = mode_from_name(bad).unwrap_err();
            assert_eq!(e.msg, format!("unknown macvlan mode: {bad:?}"));
        }
    }
}
