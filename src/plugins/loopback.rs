//! loopback: brings `lo` up in the container (whatever `CNI_IFNAME` says) and reports it.

use crate::cni::result::{Interface, IpConfig};
use crate::cni::{Applet, CniError, CniOutput, CniResult, Request};
use crate::netlink::{Family, Netlink};
use crate::netns::{NetNs, NetnsError};
use crate::plugins::shared;

pub const APPLET: Applet = Applet {
    name: "loopback",
    min_version: "0.1.0",
    run,
};

const LO: &str = "lo";

fn run(req: &Request) -> CniResult<Option<CniOutput>> {
    // Nothing to collect and nothing to depend on.
    shared::dispatch(req, add, del, check, shared::nothing, shared::nothing)
}

fn open_netns(path: &str) -> Result<NetNs, NetnsError> {
    NetNs::open(path)
}

fn in_netns<T>(path: &str, work: impl FnOnce(&mut Netlink) -> CniResult<T>) -> CniResult<T> {
    let netns = open_netns(path).map_err(CniError::internal)?;
    netns
        .run(|| {
            Netlink::open()
                .map_err(CniError::internal)
                .and_then(|mut nl| work(&mut nl))
        })
        .map_err(CniError::internal)?
}

fn add(req: &Request) -> CniResult<CniOutput> {
    let prev = req.prev_result()?;
    let (v4, v6) = in_netns(&req.env.netns, |nl| {
        let lo = nl
            .link_by_name(LO)
            .map_err(CniError::internal)?
            .ok_or_else(|| CniError::internal("no lo interface in the container namespace"))?;
        nl.set_up(lo.index, true).map_err(CniError::internal)?;
        let mut first = Vec::new();
        for family in [Family::V4, Family::V6] {
            let addrs = nl
                .addresses(Some(lo.index), Some(family))
                .map_err(CniError::internal)?;
            if let Some(stray) = addrs.iter().find(|a| !a.addr.ip().is_loopback()) {
                return Err(CniError::internal(format!(
                    "loopback interface found with non-loopback address {:?}",
                    stray.addr.ip().to_string()
                )));
            }
            first.push(addrs.first().map(|a| a.addr));
        }
        Ok((first[0], first[1]))
    })?;
    // Chained after another plugin, loopback passes the previous result through.
    if let Some(prev) = prev {
        return Ok(prev);
    }
    let ips = [v4, v6]
        .into_iter()
        .flatten()
        .map(|address| IpConfig {
            address,
            gateway: None,
            interface: Some(0),
        })
        .collect();
    Ok(CniOutput {
        interfaces: vec![Interface {
            name: LO.into(),
            mac: "00:00:00:00:00:00".into(),
            sandbox: req.env.netns.clone(),
            ..Interface::default()
        }],
        ips,
        ..CniOutput::default()
    })
}

/// DEL succeeds when there is nothing left to undo: no netns given, or its path is gone.
fn del(req: &Request) -> CniResult<()> {
    if req.env.netns.is_empty() {
        return Ok(());
    }
    if let Err(NetnsError::NotFound(_)) = open_netns(&req.env.netns) {
        return Ok(());
    }
    in_netns(&req.env.netns, |nl| {
        if let Some(lo) = nl.link_by_name(LO).map_err(CniError::internal)? {
            nl.set_up(lo.index, false).map_err(CniError::internal)?;
        }
        Ok(())
    })
}

fn check(req: &Request) -> CniResult<()> {
    in_netns(&req.env.netns, |nl| {
        match nl.link_by_name(LO).map_err(CniError::internal)? {
            Some(lo) if lo.up => Ok(()),
            Some(_) => Err(CniError::internal("loopback interface is down")),
            None => Err(CniError::internal(
                "no lo interface in the container namespace",
            )),
        }
    })
}
