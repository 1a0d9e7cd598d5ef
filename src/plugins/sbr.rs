//! sbr: source-based routing for `CNI_IFNAME`. Each of its addresses gets a rule `from ADDR
//! lookup TABLE`; without a `table` option every address gets its own table (the lowest free
//! id from 100 on), holding a default route via the address's gateway and copies of the
//! interface's main-table routes, which are then removed from main. With `table`, only the
//! rules are added, pointing at that table.
//!
//! As the reference (containernetworking/plugins v1.9.1 `plugins/meta/sbr`): which addresses
//! belong to the interface, which routes are copied (source or gateway in the address's
//! subnet, or neither set), route replace with flags cleared, the main-table cleanup after all
//! copies, DEL deleting the rules whose source is an address still on the interface, a lock on
//! the namespace file around the work, and the error texts.
//!
//! Deliberately different: DEL succeeds when the namespace is gone (the reference creates an
//! empty file at its path and fails); a table id counts as taken when any table holds routes
//! under it, not only when a rule names it; a result with no address on this interface is
//! passed through instead of stripping the interface's main-table routes; CHECK verifies the
//! rules (the reference's CHECK does nothing); copied routes keep every attribute the kernel
//! reported, including ones the reference's library drops.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use nix::fcntl::{Flock, FlockArg};
use serde::Deserialize;

use crate::cni::result::IpConfig;
use crate::cni::{Applet, CniError, CniOutput, CniResult, Request};
use crate::iface::in_netns;
use crate::netlink::{Family, Netlink, RT_TABLE_MAIN, Route, Rule};
use crate::plugins::shared;

pub const APPLET: Applet = Applet {
    name: "sbr",
    min_version: "0.1.0",
    run,
};

const FIRST_TABLE: u32 = 100;
const CHAINED_ONLY: &str = "This plugin must be called as chained plugin";

fn run(req: &Request) -> CniResult<Option<CniOutput>> {
    // Everything sbr makes lives in the container's namespace and goes with it.
    shared::dispatch(req, add, del, check, shared::nothing, shared::nothing)
}

#[derive(Debug, Default, Deserialize)]
struct Conf {
    #[serde(default)]
    table: Option<i64>,
}

fn parse_conf(req: &Request) -> CniResult<Option<u32>> {
    let conf: Conf = serde_json::from_slice(&req.stdin)
        .map_err(|e| CniError::internal(format!("failed to parse network configuration: {e}")))?;
    conf.table
        .map(|t| {
            u32::try_from(t).map_err(|_| {
                CniError::internal(format!(
                    "failed to parse network configuration: invalid table {t}"
                ))
            })
        })
        .transpose()
}

/// The previous result's addresses on `ifname`: those whose interface index names it, has no
/// interface, or points past the interface list (the reference's `getIPCfgs`).
fn ip_configs(ifname: &str, prev: &CniOutput) -> CniResult<Vec<IpConfig>> {
    if prev.ips.is_empty() {
        return Err(CniError::internal(format!(
            "No IP addresses supplied on interface: {ifname}"
        )));
    }
    Ok(prev
        .ips
        .iter()
        .filter(|ip| match ip.interface {
            Some(i) => prev
                .interfaces
                .get(i)
                .is_none_or(|iface| iface.name == ifname),
            None => true,
        })
        .cloned()
        .collect())
}

/// The address alone: `/32` or `/128`.
fn host(ip: IpAddr) -> IpNetwork {
    IpNetwork::from(ip)
}

/// Holds an exclusive lock on the namespace file, serialising sbr runs on one container.
fn lock(ns_path: &str) -> CniResult<Flock<File>> {
    let file =
        File::open(ns_path).map_err(|e| CniError::internal(format!("open {ns_path}: {e}")))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| CniError::internal(format!("lock {ns_path}: {errno}")))
}

fn add(req: &Request) -> CniResult<CniOutput> {
    let table = parse_conf(req)?;
    let prev = req
        .prev_result()?
        .ok_or_else(|| CniError::internal(CHAINED_ONLY))?;
    let ifname = req.env.ifname.as_str();
    let ips = ip_configs(ifname, &prev)?;
    if ips.is_empty() {
        tracing::info!("no address of {ifname} in prevResult; nothing to route");
        return Ok(prev);
    }
    let ns = shared::open_netns(&req.env.netns)?;
    let _lock = lock(&req.env.netns)?;
    in_netns(&ns, |nl| match table {
        Some(table) => add_rules(nl, &ips, table),
        None => route_by_source(nl, &ips, ifname),
    })?;
    Ok(prev)
}

fn add_rules(nl: &Netlink, ips: &[IpConfig], table: u32) -> CniResult<()> {
    for ip in ips {
        nl.add_rule(&Rule::lookup_from(host(ip.address.ip()), table))
            .map_err(|e| CniError::internal(format!("failed to add rule: {e}")))?;
    }
    Ok(())
}

/// The lowest id from `from` on that is not in `used`.
fn next_free(used: &BTreeSet<u32>, from: u32) -> u32 {
    (from..=u32::MAX)
        .find(|t| !used.contains(t))
        .unwrap_or(from)
}

fn route_by_source(nl: &Netlink, ips: &[IpConfig], ifname: &str) -> CniResult<()> {
    let rules = nl
        .rules(None)
        .map_err(|e| CniError::internal(format!("Failed to list all rules: {e}")))?;
    let mut used = nl
        .tables_in_use()
        .map_err(|e| CniError::internal(format!("Failed to list all routes: {e}")))?;
    used.extend(rules.iter().map(|r| r.table));
    let link = nl
        .link_by_name(ifname)
        .map_err(CniError::internal)
        .and_then(|l| l.ok_or_else(|| CniError::internal("Link not found")))
        .map_err(|e| CniError::internal(format!("Cannot find network interface {ifname}: {e}")))?;
    let routes = nl
        .table_routes(link.index, RT_TABLE_MAIN)
        .map_err(|e| CniError::internal(format!("Unable to list routes: {e}")))?;

    let mut table = next_free(&used, FIRST_TABLE);
    for ip in ips {
        nl.add_rule(&Rule::lookup_from(host(ip.address.ip()), table))
            .map_err(|e| CniError::internal(format!("Failed to add rule: {e}")))?;
        // The previous plugin may have put the default route elsewhere: add one here.
        if let Some(gw) = ip.gateway {
            let any: IpAddr = match ip.address {
                IpNetwork::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
                IpNetwork::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
            };
            let mut default = Route::new(IpNetwork::new(any, 0).map_err(CniError::internal)?);
            default.gateway = Some(gw);
            default.table = table;
            default.oif = Some(link.index);
            nl.add_route(&default).map_err(|e| {
                CniError::internal(format!("Failed to add default route to {gw}: {e}"))
            })?;
        }
        // Routes of this address's subnet, and generic ones, move to its table. Replace, as
        // the default route just added may be among them.
        let subnet = ip.address;
        for route in &routes {
            let related = route.prefsrc.is_some_and(|s| subnet.contains(s))
                || route.gateway.is_some_and(|g| subnet.contains(g))
                || (route.prefsrc.is_none() && route.gateway.is_none());
            if related {
                nl.copy_route_to_table(route, table)
                    .map_err(|e| CniError::internal(format!("Failed to readd route: {e}")))?;
            }
        }
        used.insert(table);
        table = next_free(&used, table.saturating_add(1));
    }
    // Only now: a second address of the same subnet still needed main's subnet route to
    // reach its gateway.
    for route in &routes {
        nl.del_table_route(route)
            .map_err(|e| CniError::internal(format!("Failed to delete route: {e}")))?;
    }
    Ok(())
}

fn del(req: &Request) -> CniResult<()> {
    let table = parse_conf(req)?;
    // The rules lived in that namespace: they are gone with it.
    let Some(ns) = shared::open_netns_for_del(&req.env.netns)? else {
        return Ok(());
    };
    let _lock = lock(&req.env.netns)?;
    let ifname = req.env.ifname.as_str();
    in_netns(&ns, |nl| tidy_rules(nl, ifname, table))
}

/// Deletes the rules whose source is an address on `ifname` (of `table` only, if given).
/// Keeps going after a failed delete and reports the last failure.
fn tidy_rules(nl: &Netlink, ifname: &str, table: Option<u32>) -> CniResult<()> {
    let rules = nl.rules(None).map_err(|e| match table {
        Some(t) => CniError::internal(format!("failed to list rules of table {t} to tidy: {e}")),
        None => CniError::internal(format!("Failed to list all rules to tidy: {e}")),
    })?;
    let Some(link) = nl
        .link_by_name(ifname)
        .map_err(|e| CniError::internal(format!("Failed to get link {ifname}: {e}")))?
    else {
        return Ok(());
    };
    let addrs: Vec<IpAddr> = nl
        .addresses(Some(link.index), None)
        .map_err(|e| CniError::internal(format!("Failed to list all addrs: {e}")))?
        .iter()
        .map(|a| a.addr.ip())
        .collect();
    let mut last_error = None;
    for rule in rules.iter().filter(|r| table.is_none_or(|t| r.table == t)) {
        let Some(src) = rule.src else { continue };
        if addrs.contains(&src.ip())
            && let Err(e) = nl.del_rule(rule)
        {
            last_error = Some(CniError::internal(format!("Failed to delete rule {e}")));
        }
    }
    last_error.map_or(Ok(()), Err)
}

/// Every address of the interface in the previous result has its `from` rule (into `table`
/// when one is configured).
fn check(req: &Request) -> CniResult<()> {
    let table = parse_conf(req)?;
    let prev = req
        .prev_result()?
        .ok_or_else(|| CniError::internal(CHAINED_ONLY))?;
    let ips = ip_configs(&req.env.ifname, &prev)?;
    let ns = shared::open_netns(&req.env.netns)?;
    in_netns(&ns, |nl| {
        let rules = nl.rules(None).map_err(CniError::internal)?;
        for ip in &ips {
            let src = host(ip.address.ip());
            let found = rules.iter().any(|r| {
                r.family == Family::of(src.ip())
                    && r.src == Some(src)
                    && table.is_none_or(|t| r.table == t)
            });
            if !found {
                return Err(CniError::internal(format!(
                    "no source-based routing rule for {}",
                    src.ip()
                )));
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::result::Interface;

    fn ip(addr: &str, interface: Option<usize>) -> IpConfig {
        IpConfig {
            address: addr.parse().unwrap(),
            gateway: None,
            interface,
        }
    }

    #[test]
    fn sbr_picks_the_addresses_of_the_interface_as_the_reference() {
        let prev = CniOutput {
            interfaces: vec![
                Interface {
                    name: "veth0".into(),
                    ..Interface::default()
                },
                Interface {
                    name: "eth0".into(),
                    ..Interface::default()
                },
            ],
            ips: vec![
                ip("10.0.0.2/24", Some(1)),
                ip("10.1.0.2/24", Some(0)),
                ip("10.2.0.2/24", None),
                ip("10.3.0.2/24", Some(7)),
            ],
            ..CniOutput::default()
        };
        let got: Vec<String> = ip_configs("eth0", &prev)
            .unwrap()
            .iter()
            .map(|i| i.address.to_string())
            .collect();
        assert_eq!(got, ["10.0.0.2/24", "10.2.0.2/24", "10.3.0.2/24"]);
        let e = ip_configs("eth0", &CniOutput::default()).unwrap_err();
        assert_eq!(e.msg, "No IP addresses supplied on interface: eth0");
    }

    #[test]
    fn sbr_table_ids_skip_used_ones() {
        let used: BTreeSet<u32> = [100, 101, 103, 254, 255].into();
        assert_eq!(next_free(&used, 100), 102);
        assert_eq!(next_free(&used, 103), 104);
        assert_eq!(next_free(&BTreeSet::new(), 100), 100);
        assert_eq!(host("fd00::5".parse().unwrap()).prefix(), 128);
        assert_eq!(host("10.0.0.5".parse().unwrap()).prefix(), 32);
    }
}
