//! Interface addresses.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use neli::consts::nl::NlmF;
use neli::consts::rtnl::{Ifa, IfaF, RtAddrFamily, RtScope, Rtm};
use neli::rtnl::{Ifaddrmsg, IfaddrmsgBuilder};
use neli::types::{Buffer, RtBuffer};

use super::attr::{self, CodecError};
use super::consts::RT_SCOPE_UNIVERSE;
use super::{Netlink, NetlinkError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub(super) fn to_af(family: Option<Family>) -> RtAddrFamily {
        match family {
            None => RtAddrFamily::Unspecified,
            Some(Family::V4) => RtAddrFamily::Inet,
            Some(Family::V6) => RtAddrFamily::Inet6,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub addr: IpNetwork,
    pub scope: u8,
    /// `IFA_F_*` flags, e.g. `IFA_F_NODAD` (0x02), `IFA_F_PERMANENT` (0x80).
    pub flags: u32,
}

impl Netlink {
    /// Addresses, optionally only those of link `index` and/or one family (filtered by the
    /// kernel). A link index that does not exist fails with ENODEV.
    pub fn addresses(
        &self,
        index: Option<u32>,
        family: Option<Family>,
    ) -> Result<Vec<Address>, NetlinkError> {
        let op = match index {
            Some(i) => format!("list addresses of link {i}"),
            None => "list addresses".to_string(),
        };
        let req = IfaddrmsgBuilder::default()
            .ifa_family(Family::to_af(family))
            .ifa_prefixlen(0)
            .ifa_scope(RtScope::from(RT_SCOPE_UNIVERSE))
            .ifa_index(index.unwrap_or(0))
            .build()
            .map_err(CodecError::from);
        let msgs: Vec<Ifaddrmsg> = self.dump(&op, Rtm::Getaddr, req)?;
        msgs.iter()
            .filter_map(|m| parse_address(m).transpose())
            .collect::<Result<_, _>>()
            .map_err(|e| NetlinkError::codec(&op, e))
    }

    /// Adds `addr` (address and prefix length) to link `index`. `nodad` skips IPv6 duplicate
    /// address detection so the address is usable at once.
    pub fn add_address(
        &self,
        index: u32,
        addr: IpNetwork,
        nodad: bool,
    ) -> Result<(), NetlinkError> {
        let op = format!("add address {addr} on link {index}");
        let flags = if nodad { IfaF::NODAD } else { IfaF::empty() };
        let req = address_msg(index, addr, flags);
        self.ack(&op, Rtm::Newaddr, NlmF::CREATE | NlmF::EXCL, req)
    }

    /// Adds `addr` as the Go netlink library does: an IPv4 address shorter than /31 gets its
    /// subnet's broadcast address (`IFA_BROADCAST`), so `ip addr` shows `brd`.
    pub fn add_address_with_broadcast(
        &self,
        index: u32,
        addr: IpNetwork,
    ) -> Result<(), NetlinkError> {
        let IpNetwork::V4(v4) = addr else {
            return self.add_address(index, addr, false);
        };
        if v4.prefix() >= 31 {
            return self.add_address(index, addr, false);
        }
        let op = format!("add address {addr} on link {index}");
        let req = address_msg(index, addr, IfaF::empty()).and_then(|msg| {
            let brd = attr::attr(Ifa::Broadcast, v4.broadcast().octets().as_slice())?;
            let mut attrs: RtBuffer<Ifa, Buffer> = msg.rtattrs().iter().cloned().collect();
            attrs.push(brd);
            Ok(IfaddrmsgBuilder::default()
                .ifa_family(*msg.ifa_family())
                .ifa_prefixlen(*msg.ifa_prefixlen())
                .ifa_flags(*msg.ifa_flags())
                .ifa_scope(*msg.ifa_scope())
                .ifa_index(*msg.ifa_index())
                .rtattrs(attrs)
                .build()?)
        });
        self.ack(&op, Rtm::Newaddr, NlmF::CREATE | NlmF::EXCL, req)
    }

    pub fn del_address(&self, index: u32, addr: IpNetwork) -> Result<(), NetlinkError> {
        let op = format!("delete address {addr} from link {index}");
        let req = address_msg(index, addr, IfaF::empty());
        self.ack(&op, Rtm::Deladdr, NlmF::empty(), req)
    }
}

fn address_msg(index: u32, addr: IpNetwork, flags: IfaF) -> Result<Ifaddrmsg, CodecError> {
    let octets = attr::ip_octets(addr.ip());
    // IFA_LOCAL is the address itself; IFA_ADDRESS would be the peer on point-to-point links.
    let attrs: RtBuffer<Ifa, Buffer> = [
        attr::attr(Ifa::Local, octets.as_slice())?,
        attr::attr(Ifa::Address, octets.as_slice())?,
    ]
    .into_iter()
    .collect();
    Ok(IfaddrmsgBuilder::default()
        .ifa_family(RtAddrFamily::from(attr::address_family(addr.ip())))
        .ifa_prefixlen(addr.prefix())
        .ifa_flags(flags)
        .ifa_scope(RtScope::from(RT_SCOPE_UNIVERSE))
        .ifa_index(index)
        .rtattrs(attrs)
        .build()?)
}

/// None for messages that carry no address of ours (neither IPv4 nor IPv6).
fn parse_address(msg: &Ifaddrmsg) -> Result<Option<Address>, CodecError> {
    let attrs = msg.rtattrs();
    let ip = attr::find(attrs, Ifa::Local)
        .or_else(|| attr::find(attrs, Ifa::Address))
        .and_then(attr::to_ip);
    let Some(ip) = ip else {
        return Ok(None);
    };
    let addr = IpNetwork::new(ip, *msg.ifa_prefixlen())?;
    // ifa_flags holds only the low 8 bits; IFA_FLAGS has them all.
    let flags = attr::find(attrs, Ifa::Flags)
        .and_then(attr::to_u32)
        .unwrap_or_else(|| u32::from(u8::from(*msg.ifa_flags())));
    Ok(Some(Address {
        index: *msg.ifa_index(),
        addr,
        scope: u8::from(*msg.ifa_scope()),
        flags,
    }))
}
