//! vrf: puts `CNI_IFNAME` into a VRF device of the container namespace (created on first
//! use, routing table `table` or a free one), keeping the interface's routes by recreating
//! them in the VRF's table. DEL takes the interface out again and deletes the VRF once it has
//! no member left.
//!
//! As the reference (containernetworking/plugins v1.9.1 `plugins/meta/vrf`): the keys
//! `vrfname` (required) and `table` (0 or absent: the lowest free id from 1), spec versions
//! from 0.3.1, prevResult required for ADD and CHECK and passed through, an existing VRF with
//! another table refused when `table` is set, an interface that already has a master refused,
//! global IPv6 addresses the kernel dropped on enslaving re-added and their local route waited
//! for (10 ms doubling, about 2.5 s), the main-table routes recreated with route replace, DEL
//! a success when the namespace or the VRF is gone, CHECK that the interface is a member, and
//! the error texts.
//!
//! Deliberately different:
//! * DEL is idempotent (reference PR #1282, open): a missing interface or a VRF deleted
//!   meanwhile is a success; DEL only releases the interface from this VRF (the reference
//!   clears any master it has); a link of that name that is not a VRF is left alone.
//! * Which routes move: every unicast main-table route of the interface that the kernel did
//!   not make (those it recreates in the VRF table itself), link-scope ones included, and
//!   routes without a gateway first, so that a gateway route finds its gateway reachable
//!   (ptp's `GW/32 scope link` route is lost with the reference, and a second route via the
//!   gateway after the subnet route fails there with "Nexthop has invalid gateway"). The
//!   reference takes the universe-scope ones, kernel-made IPv6 ones included, in dump order.
//! * An auto-picked table also skips ids that hold routes or that rules name (not only other
//!   VRFs' tables) and the reserved 253-255.
//! * An IPv6 address that had finished DAD is re-added without DAD (it was verified on this
//!   link a moment before). The wait covers every global IPv6 address, also those the kernel
//!   kept (`keep_addr_on_down`, which ptp and bridge set) but sends through DAD again: until
//!   they are usable the kernel refuses routes naming them as source ("Invalid source
//!   address"), such as ptp's. No wait for a link that is down (its addresses cannot come up).
//! * A VRF this ADD created is deleted again when the ADD fails; two ADDs (or an ADD and a
//!   DEL) on one namespace are serialised by a lock on the namespace file, so one cannot
//!   delete the VRF the other is filling; a VRF created meanwhile by another ADD is used.
//! * CHECK also compares the VRF's table when `table` is set.
//!
//! No GC: everything lives in the container's namespace and goes with it.

use std::collections::BTreeSet;
use std::fs::File;
use std::time::Duration;

use ipnetwork::IpNetwork;
use nix::fcntl::{Flock, FlockArg};
use serde::Deserialize;

use crate::cni::{Applet, CniError, CniOutput, CniResult, Request};
use crate::iface::in_netns;
use crate::netlink::{
    Address, Family, IFA_F_DADFAILED, IFA_F_NODAD, IFA_F_TENTATIVE, LinkKind, LinkSpec, Netlink,
    NetlinkError, RT_SCOPE_UNIVERSE, RT_TABLE_MAIN, RTN_UNICAST, RTPROT_KERNEL, TableRoute,
};
use crate::plugins::shared::{self, null_default};

pub const APPLET: Applet = Applet {
    name: "vrf",
    min_version: "0.3.1",
    run,
};

const NO_PREV_RESULT: &str = "missing prevResult from earlier plugin";

/// `default`, `main` and `local`: never a VRF's table.
const RESERVED_TABLES: [u32; 3] = [253, 254, 255];

/// The wait for a re-added IPv6 address's local route: 10 ms, doubling, this many sleeps.
const ROUTE_WAIT_FIRST: Duration = Duration::from_millis(10);
const ROUTE_WAIT_SLEEPS: u32 = 8;

fn run(req: &Request) -> CniResult<Option<CniOutput>> {
    shared::dispatch(req, add, del, check, shared::nothing, shared::nothing)
}

// ------------------------------------------------------------------ configuration

#[derive(Debug, Default, Deserialize)]
struct Conf {
    #[serde(default, deserialize_with = "null_default")]
    vrfname: String,
    /// 0: pick a free one when the VRF is created, accept any when it exists.
    #[serde(default, deserialize_with = "null_default")]
    table: u32,
}

fn parse_conf(req: &Request) -> CniResult<Conf> {
    let conf: Conf = req.decode()?;
    if conf.vrfname.is_empty() {
        return Err(CniError::config(
            "configuration is expected to have a valid vrf name",
        ));
    }
    Ok(conf)
}

// ------------------------------------------------------------------ pure decisions

/// The lowest table id from 1 that is neither taken nor reserved.
fn pick_table(taken: &BTreeSet<u32>) -> Option<u32> {
    (1..=u32::MAX).find(|t| !taken.contains(t) && !RESERVED_TABLES.contains(t))
}

/// What decides whether and when one of the interface's main-table routes is recreated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MoveKey {
    route_type: u8,
    protocol: u8,
    has_gateway: bool,
}

impl MoveKey {
    fn of(route: &TableRoute) -> MoveKey {
        MoveKey {
            route_type: route.route_type,
            protocol: route.protocol,
            has_gateway: route.gateway.is_some(),
        }
    }
}

/// Indices of the routes to recreate, in order: the kernel's own routes (connected, IPv6
/// prefix and link-local ones) come back in the VRF table by themselves and are skipped;
/// routes without a gateway go first, as a gateway has to be reachable when a route via it
/// is added.
fn move_order(keys: &[MoveKey]) -> Vec<usize> {
    let wanted: Vec<usize> = (0..keys.len())
        .filter(|&i| keys[i].route_type == RTN_UNICAST && keys[i].protocol != RTPROT_KERNEL)
        .collect();
    let (direct, via): (Vec<usize>, Vec<usize>) =
        wanted.into_iter().partition(|&i| !keys[i].has_gateway);
    direct.into_iter().chain(via).collect()
}

/// The global addresses of `before` that are not in `after`.
fn dropped(before: &[Address], after: &[Address]) -> Vec<Address> {
    before
        .iter()
        .filter(|b| !after.iter().any(|a| a.addr == b.addr))
        .cloned()
        .collect()
}

/// An address that had passed DAD (or never ran it) is re-added without DAD.
fn readd_without_dad(flags: u32) -> bool {
    flags & IFA_F_NODAD != 0 || flags & IFA_F_TENTATIVE == 0
}

/// The host route (`/32` or `/128`) the kernel makes for an address.
fn host_route(addr: IpNetwork) -> IpNetwork {
    IpNetwork::from(addr.ip())
}

// ------------------------------------------------------------------ netns and VRF lookups

/// Holds an exclusive lock on the namespace file: vrf runs on one container take turns.
fn lock(ns_path: &str) -> CniResult<Option<Flock<File>>> {
    let file = match File::open(ns_path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CniError::internal(format!("open {ns_path}: {e}"))),
    };
    Flock::lock(file, FlockArg::LockExclusive)
        .map(Some)
        .map_err(|(_, errno)| CniError::internal(format!("lock {ns_path}: {errno}")))
}

#[derive(Debug, Clone, Copy)]
struct Vrf {
    index: u32,
    table: u32,
}

enum Found {
    Vrf(Vrf),
    NotVrf,
    Absent,
}

fn find_vrf(nl: &Netlink, name: &str) -> CniResult<Found> {
    let details = nl
        .link_details(name)
        .map_err(|e| CniError::internal(format!("failed to look up VRF {name}: {e}")))?;
    Ok(match details {
        None => Found::Absent,
        Some(d) if d.link.kind.as_deref() == Some("vrf") => Found::Vrf(Vrf {
            index: d.link.index,
            table: d.vrf_table.unwrap_or(0),
        }),
        Some(_) => Found::NotVrf,
    })
}

fn not_a_vrf(name: &str) -> CniError {
    CniError::internal(format!("Netlink {name} is not a VRF"))
}

/// Links whose master is `vrf`.
fn members(nl: &Netlink, vrf: &Vrf) -> CniResult<Vec<String>> {
    let links = nl
        .links()
        .map_err(|e| CniError::internal(format!("failed to find links {e}")))?;
    Ok(links
        .into_iter()
        .filter(|l| l.master == Some(vrf.index))
        .map(|l| l.name)
        .collect())
}

/// Table ids a new VRF must not take: other VRFs', those holding routes, those rules name.
fn tables_taken(nl: &Netlink) -> CniResult<BTreeSet<u32>> {
    let fail = |e: NetlinkError| CniError::internal(format!("createVRF: {e}"));
    let mut taken: BTreeSet<u32> = nl
        .all_link_details()
        .map_err(fail)?
        .into_iter()
        .filter_map(|d| d.vrf_table)
        .collect();
    taken.extend(nl.tables_in_use().map_err(fail)?);
    taken.extend(nl.rules(None).map_err(fail)?.into_iter().map(|r| r.table));
    Ok(taken)
}

// ------------------------------------------------------------------ ADD

fn add(req: &Request) -> CniResult<CniOutput> {
    let conf = parse_conf(req)?;
    let prev = req
        .prev_result()?
        .ok_or_else(|| CniError::internal(NO_PREV_RESULT))?;
    let ns = crate::plugins::shared::open_netns(&req.env.netns)?;
    let _lock = lock(&req.env.netns)?;
    let ifname = req.env.ifname.as_str();
    in_netns(&ns, |nl| {
        let (vrf, created) = ensure_vrf(nl, &conf)?;
        let enslaved = enslave(nl, &conf.vrfname, vrf, ifname);
        if enslaved.is_err()
            && created
            && let Err(e) = nl.delete_link(vrf.index)
        {
            tracing::warn!("deleting VRF {} after the failed ADD: {e}", conf.vrfname);
        }
        enslaved
    })
    .map_err(|e| e.context("cmdAdd failed"))?;
    Ok(prev)
}

/// The VRF to use, and whether this call created it.
fn ensure_vrf(nl: &Netlink, conf: &Conf) -> CniResult<(Vrf, bool)> {
    let name = conf.vrfname.as_str();
    let existing = |found: Found| match found {
        Found::Vrf(vrf) if conf.table != 0 && vrf.table != conf.table => {
            Err(CniError::internal(format!(
                "VRF {name} already exist with different routing table {}",
                vrf.table
            )))
        }
        Found::Vrf(vrf) => Ok(Some(vrf)),
        Found::NotVrf => Err(not_a_vrf(name)),
        Found::Absent => Ok(None),
    };
    if let Some(vrf) = existing(find_vrf(nl, name)?)? {
        return Ok((vrf, false));
    }
    let table = match conf.table {
        0 => pick_table(&tables_taken(nl)?).ok_or_else(|| {
            CniError::internal("findFreeRoutingTableID: Failed to find an available routing id")
        })?,
        t => t,
    };
    match nl.create_link(&LinkSpec::new(name, LinkKind::Vrf { table })) {
        Ok(()) => {}
        // Made meanwhile by a plugin that does not take the lock.
        Err(e) if e.errno() == libc::EEXIST => {
            if let Some(vrf) = existing(find_vrf(nl, name)?)? {
                return Ok((vrf, false));
            }
            return Err(CniError::internal(format!("could not add VRF {name}: {e}")));
        }
        Err(e) => return Err(CniError::internal(format!("could not add VRF {name}: {e}"))),
    }
    let vrf = match find_vrf(nl, name)? {
        Found::Vrf(vrf) => vrf,
        _ => {
            return Err(CniError::internal(format!(
                "could not add VRF {name}: gone after creation"
            )));
        }
    };
    if let Err(e) = nl.set_up(vrf.index, true) {
        let _ = nl.delete_link(vrf.index);
        return Err(CniError::internal(format!(
            "could not set link up for VRF {name}: {e}"
        )));
    }
    Ok((vrf, true))
}

/// Global IPv6 addresses of link `index`.
fn global_v6(nl: &Netlink, index: u32, ifname: &str) -> CniResult<Vec<Address>> {
    Ok(nl
        .addresses(Some(index), Some(Family::V6))
        .map_err(|e| {
            CniError::internal(format!(
                "failed getting list of IP addresses for {ifname}: {e}"
            ))
        })?
        .into_iter()
        .filter(|a| a.scope == RT_SCOPE_UNIVERSE)
        .collect())
}

fn enslave(nl: &Netlink, vrfname: &str, vrf: Vrf, ifname: &str) -> CniResult<()> {
    let link = nl
        .link_by_name(ifname)
        .ok()
        .flatten()
        .ok_or_else(|| CniError::internal(format!("could not get link by name {ifname}")))?;
    if let Some(master) = link.master.filter(|m| *m != 0) {
        let name = match nl.link_by_index(master) {
            Ok(Some(m)) => m.name,
            Ok(None) => master.to_string(),
            Err(e) => {
                return Err(CniError::internal(format!(
                    "interface {ifname} has already a master set, could not retrieve the name: {e}"
                )));
            }
        };
        return Err(CniError::internal(format!(
            "interface {ifname} has already a master set: {name}"
        )));
    }
    // Enslaving cycles the link: the kernel flushes its routes and, unless keep_addr_on_down
    // is set, its IPv6 addresses. Note both first.
    let before = global_v6(nl, link.index, ifname)
        .map_err(|e| e.context("failed getting global ipv6 addresses before slaving interface"))?;
    let routes = nl
        .table_routes(link.index, RT_TABLE_MAIN)
        .map_err(|e| CniError::internal(format!("failed getting all routes for {ifname}: {e}")))?;
    let keys: Vec<MoveKey> = routes.iter().map(MoveKey::of).collect();
    let order = move_order(&keys);

    nl.set_master(link.index, Some(vrf.index)).map_err(|e| {
        CniError::internal(format!(
            "could not set vrf {vrfname} as master of {ifname}: {e}"
        ))
    })?;

    let after = global_v6(nl, link.index, ifname)
        .map_err(|e| e.context("failed getting global ipv6 addresses after slaving interface"))?;
    let lost = dropped(&before, &after);
    for a in &lost {
        match nl.add_address(link.index, a.addr, readd_without_dad(a.flags)) {
            Ok(()) => {}
            Err(e) if e.errno() == libc::EEXIST => {}
            Err(e) => {
                return Err(CniError::internal(format!(
                    "could not restore address {} to {ifname} @ {vrfname}: {e}",
                    a.addr
                )));
            }
        }
    }
    // Kept addresses run DAD again after the cycle and re-added ones may too; a route with
    // one of them as its source hint is refused until it is usable.
    if link.up {
        let usable: Vec<Address> = before
            .into_iter()
            .filter(|a| a.flags & IFA_F_DADFAILED == 0)
            .collect();
        wait_for_local_routes(nl, link.index, ifname, vrf.table, &usable)?;
    }

    for &i in &order {
        let route = &routes[i];
        nl.copy_route_to_table(route, vrf.table).map_err(|e| {
            let via = route
                .gateway
                .map(|g| format!(" via {g}"))
                .unwrap_or_default();
            CniError::internal(format!(
                "could not add route '{}{via} dev {ifname} table {}': {e}",
                route.dst, vrf.table
            ))
        })?;
    }
    Ok(())
}

/// Waits until every address has its host route in the VRF's table (the kernel adds it once
/// the address is usable, after DAD).
fn wait_for_local_routes(
    nl: &Netlink,
    index: u32,
    ifname: &str,
    table: u32,
    addrs: &[Address],
) -> CniResult<()> {
    let mut pending: Vec<IpNetwork> = addrs.iter().map(|a| host_route(a.addr)).collect();
    let mut sleep = ROUTE_WAIT_FIRST;
    for attempt in 0..=ROUTE_WAIT_SLEEPS {
        if pending.is_empty() {
            return Ok(());
        }
        let routes = nl.table_routes(index, table).map_err(|e| {
            CniError::internal(format!(
                "failed getting routes for {ifname} table {table}: {e}"
            ))
        })?;
        pending.retain(|dst| !routes.iter().any(|r| r.dst == *dst));
        if pending.is_empty() {
            return Ok(());
        }
        if attempt < ROUTE_WAIT_SLEEPS {
            std::thread::sleep(sleep);
            sleep *= 2;
        }
    }
    Err(CniError::internal(format!(
        "failed getting local/host addresses for {ifname} in table {table} with dst {}",
        pending[0]
    )))
}

// ------------------------------------------------------------------ DEL

fn del(req: &Request) -> CniResult<()> {
    let conf = parse_conf(req)?;
    // The VRF lived in that namespace: it is gone with it.
    let Some(ns) = shared::open_netns_for_del(&req.env.netns)? else {
        return Ok(());
    };
    let _lock = lock(&req.env.netns)?;
    let ifname = req.env.ifname.as_str();
    in_netns(&ns, |nl| release(nl, &conf.vrfname, ifname))
}

/// Takes `ifname` out of the VRF and deletes the VRF when nothing else is in it. Whatever is
/// already gone counts as done.
fn release(nl: &Netlink, vrfname: &str, ifname: &str) -> CniResult<()> {
    let vrf = match find_vrf(nl, vrfname)? {
        Found::Vrf(vrf) => vrf,
        Found::Absent => return Ok(()),
        Found::NotVrf => {
            tracing::warn!("{vrfname} is not a VRF; leaving it alone");
            return Ok(());
        }
    };
    let link = nl.link_by_name(ifname).map_err(|e| {
        CniError::internal(format!("resetMaster: could not get link {ifname}: {e}"))
    })?;
    if let Some(link) = link.filter(|l| l.master == Some(vrf.index)) {
        match nl.set_master(link.index, None) {
            Ok(()) => {}
            Err(e) if e.errno() == libc::ENODEV => {}
            Err(e) => {
                return Err(CniError::internal(format!(
                    "resetMaster: could not reset master of {ifname}: {e}"
                )));
            }
        }
    }
    if members(nl, &vrf)?.is_empty() {
        match nl.delete_link(vrf.index) {
            Ok(()) => {}
            Err(e) if e.errno() == libc::ENODEV => {}
            Err(e) => {
                return Err(CniError::internal(format!(
                    "could not delete VRF {vrfname}: {e}"
                )));
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ CHECK

fn check(req: &Request) -> CniResult<()> {
    let conf = parse_conf(req)?;
    req.prev_result()?
        .ok_or_else(|| CniError::internal(NO_PREV_RESULT))?;
    let ns = crate::plugins::shared::open_netns(&req.env.netns)?;
    let ifname = req.env.ifname.as_str();
    let name = conf.vrfname.as_str();
    in_netns(&ns, |nl| {
        let vrf = match find_vrf(nl, name)? {
            Found::Vrf(vrf) => vrf,
            Found::NotVrf => return Err(not_a_vrf(name)),
            Found::Absent => {
                return Err(CniError::internal(format!("VRF {name} not found")));
            }
        };
        if conf.table != 0 && vrf.table != conf.table {
            return Err(CniError::internal(format!(
                "VRF {name} has routing table {}, not {}",
                vrf.table, conf.table
            )));
        }
        if !members(nl, &vrf)?.iter().any(|m| m == ifname) {
            return Err(CniError::internal(format!(
                "Failed to find {ifname} associated to vrf {name}"
            )));
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(route_type: u8, protocol: u8, has_gateway: bool) -> MoveKey {
        MoveKey {
            route_type,
            protocol,
            has_gateway,
        }
    }

    #[test]
    fn vrf_table_auto_pick_takes_the_lowest_free_id() {
        assert_eq!(pick_table(&BTreeSet::new()), Some(1));
        let taken: BTreeSet<u32> = [1, 2, 4, 254, 255].into();
        assert_eq!(pick_table(&taken), Some(3));
        let low: BTreeSet<u32> = (1..=252).collect();
        assert_eq!(pick_table(&low), Some(256), "253-255 are reserved");
        let all_low: BTreeSet<u32> = (0..300).collect();
        assert_eq!(pick_table(&all_low), Some(300));
    }

    #[test]
    fn vrf_route_moves_skip_kernel_routes_and_put_gateways_last() {
        const BOOT: u8 = 3;
        const STATIC: u8 = 4;
        const BLACKHOLE: u8 = 6;
        let keys = [
            key(RTN_UNICAST, BOOT, true),           // 0: default via gw
            key(RTN_UNICAST, RTPROT_KERNEL, false), // 1: connected subnet
            key(RTN_UNICAST, BOOT, true),           // 2: subnet via gw
            key(RTN_UNICAST, BOOT, false),          // 3: gw/32 scope link
            key(BLACKHOLE, STATIC, false),          // 4: not a unicast route
            key(RTN_UNICAST, STATIC, false),        // 5: another direct route
        ];
        assert_eq!(move_order(&keys), [3, 5, 0, 2]);
        assert!(move_order(&[]).is_empty());
        assert!(move_order(&[key(RTN_UNICAST, RTPROT_KERNEL, true)]).is_empty());
    }

    #[test]
    fn vrf_dropped_addresses_and_dad_on_readd() {
        let addr = |a: &str, flags: u32| Address {
            index: 2,
            addr: a.parse().unwrap(),
            scope: RT_SCOPE_UNIVERSE,
            flags,
        };
        let before = [addr("fd80::2/64", 0x80), addr("fd81::2/64", 0x82)];
        let after = [addr("fd81::2/64", 0x82)];
        let lost = dropped(&before, &after);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].addr.to_string(), "fd80::2/64");
        assert!(dropped(&before, &before).is_empty());
        assert_eq!(dropped(&[], &after), []);
        // Permanent and settled: no second DAD; tentative without nodad: DAD again.
        assert!(readd_without_dad(0x80));
        assert!(readd_without_dad(IFA_F_NODAD | IFA_F_TENTATIVE));
        assert!(!readd_without_dad(0x80 | IFA_F_TENTATIVE));
        assert_eq!(
            host_route("fd80::2/64".parse().unwrap()).to_string(),
            "fd80::2/128"
        );
        assert_eq!(
            host_route("10.0.0.2/24".parse().unwrap()).to_string(),
            "10.0.0.2/32"
        );
    }
}
