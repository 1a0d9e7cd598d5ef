//! Whole routes moved between tables (sbr), and which table ids are in use.
//!
//! [`TableRoute`] keeps the kernel's message, so a copy carries every attribute the original
//! had (preferred source, metrics, protocol, scope, IPv6 preference, ...), not only the
//! fields [`super::Route`] models.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use neli::consts::nl::NlmF;
use neli::consts::rtnl::{RtAddrFamily, RtScope, RtTable, Rta, Rtm, RtmF, Rtn, Rtprot};
use neli::rtnl::{Rtattr, Rtmsg, RtmsgBuilder};
use neli::types::{Buffer, RtBuffer};

use super::attr::{self, CodecError};
use super::consts::{NLA_TYPE_MASK, RT_TABLE_UNSPEC};
use super::{Netlink, NetlinkError};

const RTA_TABLE: u16 = 15;

/// Attributes that describe a route and that the kernel takes back on RTM_NEWROUTE:
/// DST, SRC, OIF, GATEWAY, PRIORITY, PREFSRC, METRICS, MULTIPATH, FLOW, VIA, PREF,
/// ENCAP_TYPE, ENCAP, NH_ID. Read-only ones (CACHEINFO, TABLE, EXPIRES, ...) are left out.
const COPIED_ATTRS: [u16; 14] = [1, 2, 4, 5, 6, 7, 8, 9, 11, 18, 20, 21, 22, 30];

/// A route as the kernel reported it, with the fields sbr decides on.
#[derive(Debug, Clone)]
pub struct TableRoute {
    pub dst: IpNetwork,
    /// `RTA_PREFSRC`.
    pub prefsrc: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub table: u32,
    /// `rtm_protocol` (`RTPROT_KERNEL` is 2) and `rtm_type` (`RTN_UNICAST` is 1).
    pub protocol: u8,
    pub route_type: u8,
    msg: Rtmsg,
}

impl Netlink {
    /// Every route (any type) of link `oif` in `table`, both families.
    pub fn table_routes(&self, oif: u32, table: u32) -> Result<Vec<TableRoute>, NetlinkError> {
        let op = format!("list routes of link {oif} in table {table}");
        let req = attr::attr(Rta::Table, table)
            .and_then(|t| Ok(vec![t, attr::attr(Rta::Oif, oif)?]))
            .and_then(|attrs| dump_msg(table, attrs));
        let msgs: Vec<Rtmsg> = match self.dump(&op, Rtm::Getroute, req) {
            Ok(msgs) => msgs,
            Err(e) if e.errno() == libc::ENOENT => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut routes = Vec::new();
        for msg in msgs {
            if let Some(route) = parse(msg).map_err(|e| NetlinkError::codec(&op, e))? {
                // Kernels without strict dump filtering send everything.
                if route.table == table && route.oif == Some(oif) {
                    routes.push(route);
                }
            }
        }
        Ok(routes)
    }

    /// The ids of every table that holds at least one route, in either family.
    pub fn tables_in_use(&self) -> Result<BTreeSet<u32>, NetlinkError> {
        let op = "list routes of all tables";
        let msgs: Vec<Rtmsg> =
            self.dump(op, Rtm::Getroute, dump_msg(RT_TABLE_UNSPEC, Vec::new()))?;
        Ok(msgs.iter().map(table_of).collect())
    }

    /// Adds or replaces `route`'s twin in `table`; routing flags are cleared, as a route the
    /// kernel made (e.g. a cloned one) cannot be added with them.
    pub fn copy_route_to_table(&self, route: &TableRoute, table: u32) -> Result<(), NetlinkError> {
        let op = format!("copy route {} to table {table}", route.dst);
        self.ack(
            &op,
            Rtm::Newroute,
            NlmF::CREATE | NlmF::REPLACE,
            rebuild(&route.msg, table),
        )
    }

    /// Deletes exactly this route.
    pub fn del_table_route(&self, route: &TableRoute) -> Result<(), NetlinkError> {
        let op = format!("delete route {} from table {}", route.dst, route.table);
        self.ack(
            &op,
            Rtm::Delroute,
            NlmF::empty(),
            rebuild(&route.msg, route.table),
        )
    }
}

fn dump_msg(table: u32, attrs: Vec<Rtattr<Rta, Buffer>>) -> Result<Rtmsg, CodecError> {
    let table_u8 = u8::try_from(table).unwrap_or(RT_TABLE_UNSPEC as u8);
    Ok(RtmsgBuilder::default()
        .rtm_family(RtAddrFamily::Unspecified)
        .rtm_dst_len(0)
        .rtm_src_len(0)
        .rtm_tos(0)
        .rtm_table(RtTable::from(table_u8))
        .rtm_protocol(Rtprot::from(0u8))
        .rtm_scope(RtScope::from(0u8))
        .rtm_type(Rtn::Unspec)
        .rtm_flags(RtmF::empty())
        .rtattrs(attrs.into_iter().collect::<RtBuffer<_, _>>())
        .build()?)
}

fn attr_type(a: &Rtattr<Rta, Buffer>) -> u16 {
    u16::from(*a.rta_type()) & NLA_TYPE_MASK
}

fn table_of(msg: &Rtmsg) -> u32 {
    attr::find(msg.rtattrs(), Rta::Table)
        .and_then(attr::to_u32)
        .unwrap_or_else(|| u32::from(u8::from(*msg.rtm_table())))
}

/// The same route for `table`: header and describing attributes kept, flags cleared.
fn rebuild(msg: &Rtmsg, table: u32) -> Result<Rtmsg, CodecError> {
    let mut attrs: Vec<Rtattr<Rta, Buffer>> = Vec::new();
    for a in msg.rtattrs().iter() {
        let ty = attr_type(a);
        if COPIED_ATTRS.contains(&ty) {
            attrs.push(attr::attr(Rta::from(ty), a.rta_payload().as_ref())?);
        }
    }
    attrs.push(attr::attr(Rta::from(RTA_TABLE), table)?);
    let table_u8 = u8::try_from(table).unwrap_or(RT_TABLE_UNSPEC as u8);
    Ok(RtmsgBuilder::default()
        .rtm_family(*msg.rtm_family())
        .rtm_dst_len(*msg.rtm_dst_len())
        .rtm_src_len(*msg.rtm_src_len())
        .rtm_tos(*msg.rtm_tos())
        .rtm_table(RtTable::from(table_u8))
        .rtm_protocol(*msg.rtm_protocol())
        .rtm_scope(*msg.rtm_scope())
        .rtm_type(*msg.rtm_type())
        .rtm_flags(RtmF::empty())
        .rtattrs(attrs.into_iter().collect::<RtBuffer<_, _>>())
        .build()?)
}

/// None for families other than IPv4 and IPv6.
fn parse(msg: Rtmsg) -> Result<Option<TableRoute>, CodecError> {
    let unspecified: IpAddr = match i32::from(u8::from(*msg.rtm_family())) {
        libc::AF_INET => std::net::Ipv4Addr::UNSPECIFIED.into(),
        libc::AF_INET6 => std::net::Ipv6Addr::UNSPECIFIED.into(),
        _ => return Ok(None),
    };
    let attrs = msg.rtattrs();
    let dst_ip = attr::find(attrs, Rta::Dst)
        .and_then(attr::to_ip)
        .unwrap_or(unspecified);
    Ok(Some(TableRoute {
        dst: IpNetwork::new(dst_ip, *msg.rtm_dst_len())?,
        prefsrc: attr::find(attrs, Rta::Prefsrc).and_then(attr::to_ip),
        gateway: attr::find(attrs, Rta::Gateway).and_then(attr::to_ip),
        oif: attr::find(attrs, Rta::Oif).and_then(attr::to_u32),
        table: table_of(&msg),
        protocol: u8::from(*msg.rtm_protocol()),
        route_type: u8::from(*msg.rtm_type()),
        msg,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{LinkKind, LinkSpec, RT_TABLE_MAIN, VethPeer};
    use crate::netns::tests::ScratchNetns;

    #[test]
    fn netlink_route_table_copy_keeps_attributes_and_delete_is_exact() {
        let s = ScratchNetns::new();
        let (before, tables) =
            s.ns.run(|| {
                let here = crate::netns::NetNs::current().unwrap();
                assert!(here.is_same(&s.ns), "not inside the scratch netns");
                let nl = Netlink::open().unwrap();
                nl.create_link(&LinkSpec::new(
                    "rtv0",
                    LinkKind::Veth(VethPeer::new("rtv1")),
                ))
                .unwrap();
                let link = nl.link_by_name("rtv0").unwrap().unwrap();
                nl.add_address(link.index, "10.7.0.2/24".parse().unwrap(), true)
                    .unwrap();
                nl.set_up(link.index, true).unwrap();
                let mut gw = crate::netlink::Route::new("0.0.0.0/0".parse().unwrap());
                gw.gateway = Some("10.7.0.1".parse().unwrap());
                gw.oif = Some(link.index);
                gw.mtu = Some(1300);
                nl.add_route(&gw).unwrap();
                let before = nl.table_routes(link.index, RT_TABLE_MAIN).unwrap();
                for r in &before {
                    nl.copy_route_to_table(r, 1000).unwrap();
                    // Replacing is idempotent.
                    nl.copy_route_to_table(r, 1000).unwrap();
                }
                for r in &before {
                    nl.del_table_route(r).unwrap();
                }
                assert!(
                    nl.table_routes(link.index, RT_TABLE_MAIN)
                        .unwrap()
                        .is_empty()
                );
                (before, nl.tables_in_use().unwrap())
            })
            .unwrap();
        assert!(
            before
                .iter()
                .any(|r| r.prefsrc == Some("10.7.0.2".parse().unwrap()))
        );
        assert!(
            tables.contains(&1000) && tables.contains(&255),
            "{tables:?}"
        );
        let copied = s.ip_json(&["-4", "route", "show", "table", "1000"]);
        let text = copied.to_string();
        assert!(text.contains("\"prefsrc\":\"10.7.0.2\""), "{text}");
        assert!(text.contains("\"protocol\":\"kernel\""), "{text}");
        assert!(text.contains("\"mtu\":1300"), "{text}");
        assert!(text.contains("\"gateway\":\"10.7.0.1\""), "{text}");
    }
}
