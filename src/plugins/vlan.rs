//! vlan: an 802.1Q sub-interface with id `vlanId` of `master`, moved into the container as
//! `CNI_IFNAME`; addresses from IPAM (required).
//!
//! Unlike the reference, DEL does not need the master any more (the reference loads the
//! config with the ADD checks, so DEL fails once the master is gone), and a failed ADD
//! removes the link it made.

use serde::Deserialize;

use super::shared::{self, IpSource, Notify, null_default};
use crate::cni::{Applet, CniError, CniOutput, CniResult, Request};
use crate::iface;
use crate::netlink::{LinkKind, Netlink, Vlan};

pub const APPLET: Applet = Applet {
    name: "vlan",
    min_version: "0.1.0",
    run,
};

/// The highest id a VLAN may have (4095 is reserved).
const MAX_VLAN_ID: i64 = 4094;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VlanConf {
    #[serde(default, deserialize_with = "null_default")]
    master: String,
    #[serde(default, rename = "vlanId", deserialize_with = "null_default")]
    vlan_id: i64,
    #[serde(default, deserialize_with = "null_default")]
    mtu: i64,
    #[serde(default, deserialize_with = "null_default")]
    link_in_container: bool,
}

fn run(req: &Request) -> CniResult<Option<CniOutput>> {
    shared::dispatch_single(req, add, del, check, status)
}

/// The checks that need no kernel: master given, id in range, IPAM configured.
fn validate(conf: &VlanConf, req: &Request) -> CniResult<u16> {
    if conf.master.is_empty() {
        return Err(CniError::internal(
            "\"master\" field is required. It specifies the host interface name to create the VLAN for",
        ));
    }
    if !(0..=MAX_VLAN_ID).contains(&conf.vlan_id) {
        return Err(CniError::internal(format!(
            "invalid VLAN ID {} (must be between 0 and {MAX_VLAN_ID} inclusive)",
            conf.vlan_id
        )));
    }
    if req.config.ipam_type().is_none() {
        return Err(CniError::internal(
            "vlan interface requires an IPAM configuration",
        ));
    }
    u16::try_from(conf.vlan_id).map_err(CniError::internal)
}

fn add(req: &Request) -> CniResult<CniOutput> {
    let conf: VlanConf = req.decode()?;
    let id = validate(&conf, req)?;
    let netns = shared::open_netns(&req.env.netns)?;
    let host_nl = Netlink::open().map_err(CniError::internal)?;
    let master = iface::lookup_master(&host_nl, &netns, conf.link_in_container, &conf.master)?;
    if conf.mtu < 0 || conf.mtu > i64::from(master.mtu) {
        return Err(CniError::internal(format!(
            "invalid MTU {}, must be [0, master MTU({})]",
            conf.mtu, master.mtu
        )));
    }
    let kind = LinkKind::Vlan(Vlan {
        parent: master.index,
        id,
    });
    let intf = shared::create_on_master(
        req,
        &host_nl,
        &netns,
        conf.link_in_container,
        kind,
        conf.mtu,
        None,
    )?;
    // The reference sets no notify sysctls for vlan.
    shared::finish_created(req, &netns, intf, IpSource::Ipam, Notify::default())
}

fn del(req: &Request) -> CniResult<()> {
    let _conf: VlanConf = req.decode()?;
    shared::del_single(req)
}

fn check(req: &Request) -> CniResult<()> {
    let conf: VlanConf = req.decode()?;
    let netns = shared::open_netns(&req.env.netns)?;
    shared::ipam_check(req)?;
    let (prev, intf) = shared::prev_container_interface(req, "vlan: Required prevResult missing")?;
    let host_nl = Netlink::open().map_err(CniError::internal)?;
    iface::lookup_master(&host_nl, &netns, conf.link_in_container, &conf.master)?;
    let ifname = req.env.ifname.as_str();
    iface::in_netns(&netns, |nl| {
        let details = iface::validate_container_link(nl, &intf)?;
        iface::require_kind(&details, "vlan")?;
        let actual = details.vlan_id.map_or(-1, i64::from);
        if actual != conf.vlan_id {
            return Err(CniError::internal(format!(
                "Error: vlan link {} configured VLAN id is {}, current value is {actual}",
                intf.name, conf.vlan_id
            )));
        }
        if conf.mtu != 0 && conf.mtu != i64::from(details.link.mtu) {
            return Err(CniError::internal(format!(
                "Error: vlan link {} configured MTU is {}, current value is {}",
                intf.name, conf.mtu, details.link.mtu
            )));
        }
        iface::validate_result(nl, ifname, &prev)
    })
}

/// STATUS: the reference asks IPAM unconditionally, so a config without one is not ready.
fn status(req: &Request) -> CniResult<()> {
    let _conf: VlanConf = req.decode()?;
    if req.config.ipam_type().is_none() {
        return Err(CniError::internal(
            "vlan interface requires an IPAM configuration",
        ));
    }
    shared::status(req)
}
