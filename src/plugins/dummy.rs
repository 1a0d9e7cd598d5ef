//! dummy: a dummy link named `CNI_IFNAME` made inside the container, with addresses from
//! IPAM (required). Its result keeps the DNS of the IPAM result, as the reference's does.

use super::shared::{self, IpSource, Notify};
use crate::cni::{Applet, CniError, CniOutput, CniResult, Request};
use crate::iface;
use crate::netlink::{LinkKind, LinkSpec};

pub const APPLET: Applet = Applet {
    name: "dummy",
    min_version: "0.1.0",
    run,
};

const NEEDS_IPAM: &str = "dummy interface requires an IPAM configuration";

fn run(req: &Request) -> CniResult<Option<CniOutput>> {
    shared::dispatch_single(req, add, del, check, status)
}

fn require_ipam(req: &Request) -> CniResult<()> {
    match req.config.ipam_type() {
        Some(_) => Ok(()),
        None => Err(CniError::internal(NEEDS_IPAM)),
    }
}

fn add(req: &Request) -> CniResult<CniOutput> {
    require_ipam(req)?;
    let netns = shared::open_netns(&req.env.netns)?;
    let ifname = req.env.ifname.as_str();
    let sandbox = req.env.netns.as_str();
    let intf = iface::in_netns(&netns, |nl| {
        nl.create_link(&LinkSpec::new(ifname, LinkKind::Dummy))
            .map_err(|e| CniError::internal(format!("failed to create dummy: {e}")))?;
        iface::container_interface(nl, ifname, sandbox, "dummy")
    })?;
    shared::finish_single(req, &netns, intf, IpSource::Ipam, Notify::default()).inspect_err(|_| {
        let _ = shared::delete_container_link(&netns, ifname);
    })
}

fn del(req: &Request) -> CniResult<()> {
    shared::del_single(req)
}

fn check(req: &Request) -> CniResult<()> {
    require_ipam(req)?;
    let netns = shared::open_netns(&req.env.netns)?;
    shared::ipam_check(req)?;
    let (prev, intf) = shared::prev_container_interface(req, "dummy: Required prevResult missing")?;
    let ifname = req.env.ifname.as_str();
    iface::in_netns(&netns, |nl| {
        let details = iface::validate_container_link(nl, &intf)?;
        iface::require_kind(&details, "dummy")?;
        if !details.link.up {
            return Err(CniError::internal(format!(
                "Interface {} is down",
                intf.name
            )));
        }
        // The reference checks the addresses of a dummy, not its routes.
        iface::validate_interface_ips(nl, ifname, &prev.ips)
    })
}

fn status(req: &Request) -> CniResult<()> {
    require_ipam(req)?;
    shared::status(req)
}
