//! Encoding and decoding of rtnetlink attribute payloads.
//!
//! neli types attribute *numbers* but leaves payloads as bytes, and its `String` decoder
//! panics on an empty payload, so payloads are decoded here from raw bytes.

use std::fmt;
use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use neli::consts::rtnl::RtaType;
use neli::rtnl::{Rtattr, RtattrBuilder};
use neli::types::{Buffer, RtBuffer};
use neli::{FromBytesWithInput, Size, ToBytes};

use super::consts::NLA_TYPE_MASK;

/// A request that could not be serialized or a reply that could not be parsed.
#[derive(Debug)]
pub struct CodecError(pub String);

// Lets `?` turn any neli builder/serializer/parser error into a CodecError.
impl<E: std::error::Error> From<E> for CodecError {
    fn from(e: E) -> Self {
        CodecError(e.to_string())
    }
}

impl CodecError {
    pub fn new(msg: impl fmt::Display) -> Self {
        CodecError(msg.to_string())
    }
}

/// One attribute; the attribute number type is whatever the enclosing message or nest uses.
pub fn attr<T: RtaType, P: Size + ToBytes>(
    ty: impl Into<T>,
    payload: P,
) -> Result<Rtattr<T, Buffer>, CodecError> {
    Ok(RtattrBuilder::default()
        .rta_type(ty.into())
        .rta_payload(payload)
        .build()?)
}

/// A nest holding `children`, e.g. `IFLA_LINKINFO { IFLA_INFO_KIND, IFLA_INFO_DATA }`.
/// NLA_F_NESTED is left unset, as iproute2 does; the kernel accepts that for every nest here.
pub fn nest<T: RtaType, C: RtaType>(
    ty: impl Into<T>,
    children: &[Rtattr<C, Buffer>],
) -> Result<Rtattr<T, Buffer>, CodecError> {
    let mut nest = attr(ty, Buffer::new())?;
    for child in children {
        nest = nest.nest(child)?;
    }
    Ok(nest)
}

/// The payload of the first attribute numbered `ty`, ignoring the nested/byte-order flags.
pub fn find<T: RtaType>(attrs: &RtBuffer<T, Buffer>, ty: impl Into<u16>) -> Option<&[u8]> {
    let ty = ty.into();
    attrs
        .iter()
        .find(|a| Into::<u16>::into(*a.rta_type()) & NLA_TYPE_MASK == ty)
        .map(|a| a.rta_payload().as_ref())
}

/// The attributes inside a nest payload.
pub fn parse_nest(payload: &[u8]) -> Result<RtBuffer<u16, Buffer>, CodecError> {
    Ok(RtBuffer::from_bytes_with_input(
        &mut Cursor::new(payload),
        payload.len(),
    )?)
}

pub fn to_u32(payload: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
}

pub fn to_i32(payload: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
}

/// A NUL-terminated (or unterminated) string attribute.
pub fn to_string(payload: &[u8]) -> Option<String> {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    String::from_utf8(payload[..end].to_vec()).ok()
}

pub fn to_mac(payload: &[u8]) -> Option<[u8; 6]> {
    payload.try_into().ok()
}

/// An address attribute; its length tells the family.
pub fn to_ip(payload: &[u8]) -> Option<IpAddr> {
    match payload.len() {
        4 => <[u8; 4]>::try_from(payload)
            .ok()
            .map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        16 => <[u8; 16]>::try_from(payload)
            .ok()
            .map(|o| IpAddr::V6(Ipv6Addr::from(o))),
        _ => None,
    }
}

/// Network byte order octets, as the kernel expects in address attributes.
pub fn ip_octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

pub fn address_family(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neli::consts::rtnl::{Ifla, IflaInfo};

    fn serialize<T: RtaType>(a: &Rtattr<T, Buffer>) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        a.to_bytes(&mut out).unwrap();
        out.into_inner()
    }

    #[test]
    fn netlink_attr_string_is_nul_terminated_and_padded() {
        let a = attr::<Ifla, _>(Ifla::Ifname, "eth0").unwrap();
        // len 4 (header) + 5 ("eth0\0"), padded to 12.
        assert_eq!(
            serialize(&a),
            [9, 0, 3, 0, b'e', b't', b'h', b'0', 0, 0, 0, 0]
        );
    }

    #[test]
    fn netlink_attr_nest_round_trips() {
        let kind = attr::<IflaInfo, _>(IflaInfo::Kind, "veth").unwrap();
        let mtu = attr::<u16, _>(7u16, 1400u32).unwrap();
        let data = nest::<IflaInfo, u16>(IflaInfo::Data, &[mtu]).unwrap();
        let info = nest::<Ifla, IflaInfo>(Ifla::Linkinfo, &[kind, data]).unwrap();
        let bytes = serialize(&info);
        // Outer length covers both padded children: 4 + 12 ("veth\0" padded) + 12.
        assert_eq!(u16::from_ne_bytes([bytes[0], bytes[1]]), 28);

        let top: RtBuffer<Ifla, Buffer> =
            RtBuffer::from_bytes_with_input(&mut Cursor::new(&bytes), bytes.len()).unwrap();
        let info = parse_nest(find(&top, Ifla::Linkinfo).unwrap()).unwrap();
        assert_eq!(
            to_string(find(&info, IflaInfo::Kind).unwrap()).as_deref(),
            Some("veth")
        );
        let data = parse_nest(find(&info, IflaInfo::Data).unwrap()).unwrap();
        assert_eq!(find(&data, 7u16).and_then(to_u32), Some(1400));
        assert_eq!(find(&data, 8u16), None);
    }

    #[test]
    fn netlink_attr_find_ignores_nested_flag() {
        // IFLA_LINKINFO (18) sent with NLA_F_NESTED set, as newer kernels do for some nests.
        let a = attr::<u16, _>(18u16 | 0x8000, 5u32).unwrap();
        let buf: RtBuffer<Ifla, Buffer> = {
            let bytes = serialize(&a);
            RtBuffer::from_bytes_with_input(&mut Cursor::new(&bytes), bytes.len()).unwrap()
        };
        assert_eq!(find(&buf, Ifla::Linkinfo).and_then(to_u32), Some(5));
    }

    #[test]
    fn netlink_attr_scalar_decoders_reject_short_payloads() {
        assert_eq!(to_u32(&7u32.to_ne_bytes()), Some(7));
        assert_eq!(to_u32(&[1, 2]), None);
        assert_eq!(to_i32(&(-3i32).to_ne_bytes()), Some(-3));
        assert_eq!(to_string(b"lo\0"), Some("lo".into()));
        assert_eq!(to_string(b""), Some(String::new()));
        assert_eq!(to_string(b"ab"), Some("ab".into()));
        assert_eq!(to_mac(&[2, 0, 0, 0, 0, 1]), Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(to_mac(&[0; 4]), None);
    }

    #[test]
    fn netlink_attr_ip_conversion_round_trips() {
        for ip in ["10.1.2.3", "fd00::1", "::", "255.255.255.255"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(to_ip(&ip_octets(ip)), Some(ip));
        }
        assert_eq!(ip_octets("1.2.3.4".parse().unwrap()), [1, 2, 3, 4]);
        assert_eq!(to_ip(&[1, 2, 3]), None);
        assert_eq!(address_family("::1".parse().unwrap()), libc::AF_INET6 as u8);
    }
}
