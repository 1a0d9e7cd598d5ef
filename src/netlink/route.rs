//! Routes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use neli::consts::nl::NlmF;
use neli::consts::rtnl::{RtScope, RtTable, Rta, Rtm, RtmF, Rtn, Rtprot};
use neli::rtnl::{Rtattr, Rtmsg, RtmsgBuilder};
use neli::types::Buffer;

use super::addr::Family;
use super::attr::{self, CodecError};
use super::consts::{
    RT_SCOPE_UNIVERSE, RT_TABLE_MAIN, RT_TABLE_UNSPEC, RTAX_ADVMSS, RTAX_MTU, RTPROT_BOOT,
};
use super::{Netlink, NetlinkError};

/// `RT_SCOPE_NOWHERE` in a delete request means "any scope" (what `ip route del` sends).
const RT_SCOPE_ANY: u8 = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNetwork,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub table: u32,
    /// `RT_SCOPE_UNIVERSE` (0), `RT_SCOPE_LINK` (253) or `RT_SCOPE_HOST` (254).
    pub scope: u8,
    pub priority: Option<u32>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    /// `RTPROT_*`: who made the route (2 kernel, 3 boot, 4 static, ...).
    pub protocol: u8,
    /// `RTA_PREFSRC`: the source address preferred for traffic along this route.
    pub prefsrc: Option<IpAddr>,
}

impl Route {
    /// A unicast route to `dst` in the main table with universe scope, marked as
    /// `ip route add` marks its routes; set the other fields as needed.
    pub fn new(dst: IpNetwork) -> Route {
        Route {
            dst,
            gateway: None,
            oif: None,
            table: RT_TABLE_MAIN,
            scope: RT_SCOPE_UNIVERSE,
            priority: None,
            mtu: None,
            advmss: None,
            protocol: RTPROT_BOOT,
            prefsrc: None,
        }
    }
}

impl Netlink {
    /// Unicast routes, optionally only one family, table and/or output link (filtered by the
    /// kernel). Local, broadcast and multicast entries are left out. A table that does not
    /// exist has no routes.
    pub fn routes(
        &self,
        family: Option<Family>,
        table: Option<u32>,
        oif: Option<u32>,
    ) -> Result<Vec<Route>, NetlinkError> {
        let op = match table {
            Some(t) => format!("list routes of table {t}"),
            None => "list routes".to_string(),
        };
        let req = dump_msg(family, table, oif);
        let msgs: Vec<Rtmsg> = match self.dump(&op, Rtm::Getroute, req) {
            Ok(msgs) => msgs,
            Err(e) if table.is_some() && e.errno() == libc::ENOENT => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        msgs.iter()
            .filter_map(|m| parse_route(m).transpose())
            .collect::<Result<_, _>>()
            .map_err(|e| NetlinkError::codec(&op, e))
    }

    /// Adds a route; EEXIST if the same one is already there.
    pub fn add_route(&self, route: &Route) -> Result<(), NetlinkError> {
        let op = format!("add route {}", describe(route));
        self.ack(
            &op,
            Rtm::Newroute,
            NlmF::CREATE | NlmF::EXCL,
            add_msg(route),
        )
    }

    /// Adds a route without `NLM_F_EXCL`, as `RouteAddEcmp` of the reference does: an IPv6
    /// route to the same destination with another next hop becomes a multipath sibling, and
    /// an IPv4 one an alternative. A route identical in every respect still fails (EEXIST).
    pub fn add_route_ecmp(&self, route: &Route) -> Result<(), NetlinkError> {
        let op = format!("add route {}", describe(route));
        self.ack(&op, Rtm::Newroute, NlmF::CREATE, add_msg(route))
    }

    /// Deletes the route matching `route`'s destination, table, gateway, output link and
    /// priority (those that are set). Scope, protocol and metrics are not compared, like
    /// `ip route del`.
    pub fn del_route(&self, route: &Route) -> Result<(), NetlinkError> {
        let op = format!("delete route {}", describe(route));
        let req = selector_attrs(route).and_then(|attrs| {
            route_msg(
                attr::address_family(route.dst.ip()),
                route.dst.prefix(),
                route.table,
                0,
                RT_SCOPE_ANY,
                Rtn::Unspec,
                attrs,
            )
        });
        self.ack(&op, Rtm::Delroute, NlmF::empty(), req)
    }
}

/// A dump request; strict checking wants every header field but family and table zero.
fn dump_msg(
    family: Option<Family>,
    table: Option<u32>,
    oif: Option<u32>,
) -> Result<Rtmsg, CodecError> {
    let mut attrs = Vec::new();
    if let Some(table) = table {
        attrs.push(attr::attr(Rta::Table, table)?);
    }
    if let Some(oif) = oif {
        attrs.push(attr::attr(Rta::Oif, oif)?);
    }
    route_msg(
        Family::to_af(family).into(),
        0,
        table.unwrap_or(RT_TABLE_UNSPEC),
        0,
        RT_SCOPE_UNIVERSE,
        Rtn::Unspec,
        attrs,
    )
}

fn add_msg(route: &Route) -> Result<Rtmsg, CodecError> {
    let mut attrs = selector_attrs(route)?;
    if let Some(src) = route.prefsrc {
        attrs.push(attr::attr(Rta::Prefsrc, attr::ip_octets(src))?);
    }
    let metrics = [(RTAX_MTU, route.mtu), (RTAX_ADVMSS, route.advmss)]
        .into_iter()
        .filter_map(|(ty, value)| value.map(|v| attr::attr::<u16, _>(ty, v)))
        .collect::<Result<Vec<_>, _>>()?;
    if !metrics.is_empty() {
        attrs.push(attr::nest(Rta::Metrics, &metrics)?);
    }
    route_msg(
        attr::address_family(route.dst.ip()),
        route.dst.prefix(),
        route.table,
        route.protocol,
        route.scope,
        Rtn::Unicast,
        attrs,
    )
}

/// The attributes that identify a route: destination, table, gateway, device, priority.
fn selector_attrs(route: &Route) -> Result<Vec<Rtattr<Rta, Buffer>>, CodecError> {
    let mut attrs = Vec::new();
    if route.dst.prefix() > 0 {
        attrs.push(attr::attr(Rta::Dst, attr::ip_octets(route.dst.ip()))?);
    }
    // rtm_table is 8 bits; larger table ids only fit in RTA_TABLE.
    if route.table > 255 {
        attrs.push(attr::attr(Rta::Table, route.table)?);
    }
    if let Some(gateway) = route.gateway {
        attrs.push(attr::attr(Rta::Gateway, attr::ip_octets(gateway))?);
    }
    if let Some(oif) = route.oif {
        attrs.push(attr::attr(Rta::Oif, oif)?);
    }
    if let Some(priority) = route.priority {
        attrs.push(attr::attr(Rta::Priority, priority)?);
    }
    Ok(attrs)
}

fn route_msg(
    family: u8,
    dst_len: u8,
    table: u32,
    protocol: u8,
    scope: u8,
    kind: Rtn,
    attrs: Vec<Rtattr<Rta, Buffer>>,
) -> Result<Rtmsg, CodecError> {
    let table_u8 = u8::try_from(table).unwrap_or(RT_TABLE_UNSPEC as u8);
    Ok(RtmsgBuilder::default()
        .rtm_family(family.into())
        .rtm_dst_len(dst_len)
        .rtm_src_len(0)
        .rtm_tos(0)
        .rtm_table(RtTable::from(table_u8))
        .rtm_protocol(Rtprot::from(protocol))
        .rtm_scope(RtScope::from(scope))
        .rtm_type(kind)
        .rtm_flags(RtmF::empty())
        .rtattrs(attrs.into_iter().collect())
        .build()?)
}

/// None for routes this API does not model (non-unicast, other families).
fn parse_route(msg: &Rtmsg) -> Result<Option<Route>, CodecError> {
    if *msg.rtm_type() != Rtn::Unicast {
        return Ok(None);
    }
    let unspecified = match i32::from(u8::from(*msg.rtm_family())) {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return Ok(None),
    };
    let attrs = msg.rtattrs();
    let dst_ip = attr::find(attrs, Rta::Dst)
        .and_then(attr::to_ip)
        .unwrap_or(unspecified);
    let metrics = match attr::find(attrs, Rta::Metrics) {
        Some(nest) => Some(attr::parse_nest(nest)?),
        None => None,
    };
    let metric = |ty: u16| {
        metrics
            .as_ref()
            .and_then(|m| attr::find(m, ty))
            .and_then(attr::to_u32)
    };
    Ok(Some(Route {
        dst: IpNetwork::new(dst_ip, *msg.rtm_dst_len())?,
        gateway: attr::find(attrs, Rta::Gateway).and_then(attr::to_ip),
        oif: attr::find(attrs, Rta::Oif).and_then(attr::to_u32),
        table: attr::find(attrs, Rta::Table)
            .and_then(attr::to_u32)
            .unwrap_or_else(|| u32::from(u8::from(*msg.rtm_table()))),
        scope: u8::from(*msg.rtm_scope()),
        priority: attr::find(attrs, Rta::Priority).and_then(attr::to_u32),
        mtu: metric(RTAX_MTU),
        advmss: metric(RTAX_ADVMSS),
        protocol: u8::from(*msg.rtm_protocol()),
        prefsrc: attr::find(attrs, Rta::Prefsrc).and_then(attr::to_ip),
    }))
}

fn describe(route: &Route) -> String {
    let mut text = route.dst.to_string();
    if let Some(gateway) = route.gateway {
        text += &format!(" via {gateway}");
    }
    if let Some(oif) = route.oif {
        text += &format!(" dev {oif}");
    }
    if route.table != RT_TABLE_MAIN {
        text += &format!(" table {}", route.table);
    }
    text
}
