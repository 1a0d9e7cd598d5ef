//! ipvlan: an ipvlan link (mode l2, l3 or l3s) on `master` moved into the container as
//! `CNI_IFNAME`. Chained after another plugin, the master defaults to the single interface
//! of `prevResult`, and without an `ipam` section the addresses of `prevResult` are used.
//!
//! Unlike the reference: a failed ADD removes the link it made; DEL never looks for a master
//! (the reference's fails without a default route); CHECK looks for the master only when one
//! is configured (the reference's always fails without one).

use serde::Deserialize;

use super::shared::{self, IpSource, Notify, null_default};
use crate::cni::{Applet, CniError, CniOutput, CniResult, Request};
use crate::iface;
use crate::netlink::{Ipvlan, IpvlanMode, LinkKind, Netlink};
use crate::netns::NetNs;

pub const APPLET: Applet = Applet {
    name: "ipvlan",
    min_version: "0.1.0",
    run,
};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpvlanConf {
    #[serde(default, deserialize_with = "null_default")]
    master: String,
    #[serde(default, deserialize_with = "null_default")]
    mode: String,
    #[serde(default, deserialize_with = "null_default")]
    mtu: i64,
    #[serde(default, deserialize_with = "null_default")]
    link_in_container: bool,
}

fn run(req: &Request) -> CniResult<Option<CniOutput>> {
    shared::dispatch_single(req, add, del, check, shared::status)
}

fn mode_from_name(name: &str) -> CniResult<IpvlanMode> {
    let name = if name.is_empty() { "l2" } else { name };
    IpvlanMode::from_name(name)
        .ok_or_else(|| CniError::internal(format!("unknown ipvlan mode: {name:?}")))
}

/// The master for ADD: the configured one, else the single named interface of `prevResult`
/// when chained, else the link of the default route.
fn master_for_add(
    conf: &IpvlanConf,
    prev: Option<&CniOutput>,
    host_nl: &Netlink,
    netns: &NetNs,
) -> CniResult<String> {
    if !conf.master.is_empty() {
        return Ok(conf.master.clone());
    }
    match prev {
        Some(prev) => match prev.interfaces.as_slice() {
            [only] if !only.name.is_empty() => Ok(only.name.clone()),
            _ => Err(CniError::internal(
                "chained master failure. PrevResult lacks a single named interface",
            )),
        },
        None if conf.link_in_container => iface::in_netns(netns, iface::default_route_link),
        None => iface::default_route_link(host_nl),
    }
}

fn add(req: &Request) -> CniResult<CniOutput> {
    let conf: IpvlanConf = req.decode()?;
    let prev = req.prev_result()?;
    let netns = shared::open_netns(&req.env.netns)?;
    let host_nl = Netlink::open().map_err(CniError::internal)?;
    let master = master_for_add(&conf, prev.as_ref(), &host_nl, &netns)?;
    let mode = mode_from_name(&conf.mode)?;
    let link = iface::lookup_master(&host_nl, &netns, conf.link_in_container, &master)?;
    let kind = LinkKind::Ipvlan(Ipvlan {
        parent: link.index,
        mode,
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
    let source = match prev {
        Some(prev) if req.config.ipam_type().is_none() && !prev.ips.is_empty() => {
            IpSource::Given(prev)
        }
        _ => IpSource::Ipam,
    };
    shared::finish_created(req, &netns, intf, source, Notify::BOTH)
}

fn del(req: &Request) -> CniResult<()> {
    let _conf: IpvlanConf = req.decode()?;
    shared::del_single(req)
}

fn check(req: &Request) -> CniResult<()> {
    let conf: IpvlanConf = req.decode()?;
    let netns = shared::open_netns(&req.env.netns)?;
    shared::ipam_check(req)?;
    let (prev, intf) = shared::prev_container_interface(req, "Required prevResult missing")?;
    if !conf.master.is_empty() {
        let host_nl = Netlink::open().map_err(CniError::internal)?;
        iface::lookup_master(&host_nl, &netns, conf.link_in_container, &conf.master)?;
    }
    let mode = mode_from_name(&conf.mode)?;
    let ifname = req.env.ifname.as_str();
    iface::in_netns(&netns, |nl| {
        let details = iface::validate_container_link(nl, &intf)?;
        iface::require_kind(&details, "ipvlan")?;
        if details.ipvlan_mode != Some(mode) {
            return Err(CniError::internal(format!(
                "Container IPVlan mode {} does not match expected value: {}",
                details.ipvlan_mode.map_or("unknown", |m| m.name()),
                mode.name()
            )));
        }
        iface::validate_result(nl, ifname, &prev)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::result::Interface;

    #[test]
    fn modes_default_to_l2() {
        assert_eq!(mode_from_name("").unwrap(), IpvlanMode::L2);
        assert_eq!(mode_from_name("l3s").unwrap(), IpvlanMode::L3s);
        assert_eq!(
            mode_from_name("l4").unwrap_err().msg,
            "unknown ipvlan mode: \"l4\""
        );
    }

    #[test]
    fn chained_master_is_the_single_named_interface() {
        let nl = Netlink::open().unwrap();
        let ns = NetNs::current().unwrap();
        let conf = IpvlanConf::default();
        let named = |name: &str| Interface {
            name: name.into(),
            ..Interface::default()
        };
        let one = CniOutput {
            interfaces: vec![named("eth9")],
            ..CniOutput::default()
        };
        assert_eq!(master_for_add(&conf, Some(&one), &nl, &ns).unwrap(), "eth9");
        for bad in [vec![], vec![named("")], vec![named("a"), named("b")]] {
            let prev = CniOutput {
                interfaces: bad,
                ..CniOutput::default()
            };
            let e = master_for_add(&conf, Some(&prev), &nl, &ns).unwrap_err();
            assert!(e.msg.starts_with("chained master failure"), "{}", e.msg);
        }
        let explicit = IpvlanConf {
            master: "m0".into(),
            ..IpvlanConf::default()
        };
        assert_eq!(
            master_for_add(&explicit, Some(&one), &nl, &ns).unwrap(),
            "m0"
        );
    }
}
