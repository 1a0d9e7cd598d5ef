//! Deleting conntrack entries over `NETLINK_NETFILTER` (ctnetlink), what the reference's
//! `utils.DeleteConntrackEntriesForDstPort` does through vishvananda/netlink: dump the table of
//! one address family, keep the flows whose original tuple has the protocol and destination
//! port asked for, and delete each by its original tuple (and zone). No `conntrack` binary is
//! needed. portmap uses it for UDP host ports, so that flows recorded before the DNAT rule
//! existed stop swallowing the traffic.
//!
//! The socket is opened in the calling thread's network namespace.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::consts::NLA_TYPE_MASK;

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

const NLA_F_NESTED: u16 = 0x8000;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;

pub const PROTO_UDP: u8 = 17;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// A flow to delete: the raw `CTA_TUPLE_ORIG` payload and the zone attribute, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Flow {
    tuple: Vec<u8>,
    zone: Option<Vec<u8>>,
}

/// Deletes the entries of family `AF_INET`/`AF_INET6` whose original tuple has protocol
/// `proto` and one of `ports` as destination port. Returns how many were deleted.
pub fn delete_by_dst_ports(family: u8, proto: u8, ports: &[u16]) -> io::Result<usize> {
    if ports.is_empty() {
        return Ok(0);
    }
    let sock = Socket::open()?;
    let dump = message(
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        family,
        &[],
    );
    sock.send(&dump)?;
    let mut flows = Vec::new();
    sock.receive(1, |payload| {
        if let Some(flow) = matching_flow(payload, proto, ports) {
            flows.push(flow);
        }
    })?;
    let mut deleted = 0;
    for (i, flow) in flows.iter().enumerate() {
        let seq = 2 + i as u32;
        let mut attrs = attribute(CTA_TUPLE_ORIG | NLA_F_NESTED, &flow.tuple);
        if let Some(zone) = &flow.zone {
            attrs.extend(attribute(CTA_ZONE, zone));
        }
        let req = message(
            (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            family,
            &attrs,
        );
        sock.send(&req)?;
        match sock.receive(seq, |_| {}) {
            Ok(()) => deleted += 1,
            // Expired meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// A netlink message: header, `nfgenmsg` (version 0, resource 0), then `attrs`.
fn message(ty: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
    let mut buf = Vec::with_capacity(len);
    buf.extend((len as u32).to_ne_bytes());
    buf.extend(ty.to_ne_bytes());
    buf.extend(flags.to_ne_bytes());
    buf.extend(seq.to_ne_bytes());
    buf.extend(0u32.to_ne_bytes());
    buf.extend([family, 0, 0, 0]);
    buf.extend_from_slice(attrs);
    buf
}

/// One attribute, padded to 4 bytes.
fn attribute(ty: u16, payload: &[u8]) -> Vec<u8> {
    let len = 4 + payload.len();
    let mut buf = Vec::with_capacity(align(len));
    buf.extend((len as u16).to_ne_bytes());
    buf.extend(ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align(len), 0);
    buf
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// The attributes of a buffer as `(type without flags, payload)`.
fn attributes(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((ty, &buf[4..len]));
        buf = &buf[align(len).min(buf.len())..];
    }
    out
}

fn find(attrs: &[(u16, &[u8])], ty: u16) -> Option<Vec<u8>> {
    attrs
        .iter()
        .find(|(t, _)| *t == ty)
        .map(|(_, p)| p.to_vec())
}

/// The flow of one `IPCTNL_MSG_CT_NEW` payload (after the nlmsghdr), if it matches.
fn matching_flow(payload: &[u8], proto: u8, ports: &[u16]) -> Option<Flow> {
    let attrs = attributes(payload.get(NFGENMSG_LEN..)?);
    let tuple = find(&attrs, CTA_TUPLE_ORIG)?;
    let tuple_attrs = attributes(&tuple);
    let proto_attrs = find(&tuple_attrs, CTA_TUPLE_PROTO)?;
    let proto_attrs = attributes(&proto_attrs);
    let num = find(&proto_attrs, CTA_PROTO_NUM)?;
    let port = find(&proto_attrs, CTA_PROTO_DST_PORT)?;
    if num.first() != Some(&proto) || port.len() < 2 {
        return None;
    }
    let port = u16::from_be_bytes([port[0], port[1]]);
    if !ports.contains(&port) {
        return None;
    }
    Some(Flow {
        zone: find(&attrs, CTA_ZONE),
        tuple,
    })
}

struct Socket {
    fd: OwnedFd,
}

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_nl is valid; the kernel picks the port id.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: addr is a properly sized sockaddr_nl.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket { fd })
    }

    fn send(&self, buf: &[u8]) -> io::Result<()> {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads the replies to request `seq` until DONE (dump) or the ACK/error (request),
    /// handing each data message's payload to `each`.
    fn receive(&self, seq: u32, mut each: impl FnMut(&[u8])) -> io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut msgs = &buf[..n as usize];
            while msgs.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes([msgs[0], msgs[1], msgs[2], msgs[3]]) as usize;
                let ty = u16::from_ne_bytes([msgs[4], msgs[5]]);
                let msg_seq = u32::from_ne_bytes([msgs[8], msgs[9], msgs[10], msgs[11]]);
                if len < NLMSG_HDRLEN || len > msgs.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let payload = &msgs[NLMSG_HDRLEN..len];
                msgs = &msgs[align(len).min(msgs.len())..];
                if msg_seq != seq {
                    continue;
                }
                match ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(-libc::EBADMSG);
                        return if errno == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(-errno))
                        };
                    }
                    _ => each(payload),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow_payload(proto: u8, dport: u16, zone: Option<u16>) -> Vec<u8> {
        let ip = attribute(
            1 | NLA_F_NESTED,
            &[attribute(1, &[10, 0, 0, 1]), attribute(2, &[10, 0, 0, 2])].concat(),
        );
        let l4 = attribute(
            CTA_TUPLE_PROTO | NLA_F_NESTED,
            &[
                attribute(CTA_PROTO_NUM, &[proto]),
                attribute(2, &40000u16.to_be_bytes()),
                attribute(CTA_PROTO_DST_PORT, &dport.to_be_bytes()),
            ]
            .concat(),
        );
        let mut payload = vec![libc::AF_INET as u8, 0, 0, 0];
        payload.extend(attribute(CTA_TUPLE_ORIG | NLA_F_NESTED, &[ip, l4].concat()));
        payload.extend(attribute(2 | NLA_F_NESTED, &[]));
        if let Some(z) = zone {
            payload.extend(attribute(CTA_ZONE, &z.to_be_bytes()));
        }
        payload
    }

    #[test]
    fn conntrack_flows_match_on_protocol_and_destination_port() {
        assert!(matching_flow(&flow_payload(PROTO_UDP, 53, None), PROTO_UDP, &[53]).is_some());
        assert!(matching_flow(&flow_payload(6, 53, None), PROTO_UDP, &[53]).is_none());
        assert!(matching_flow(&flow_payload(PROTO_UDP, 54, None), PROTO_UDP, &[53]).is_none());
        let zoned = matching_flow(&flow_payload(PROTO_UDP, 53, Some(7)), PROTO_UDP, &[1, 53]);
        assert_eq!(zoned.unwrap().zone, Some(vec![0, 7]));
        assert!(matching_flow(&[], PROTO_UDP, &[53]).is_none());
        assert!(matching_flow(&[2, 0, 0, 0, 9, 0], PROTO_UDP, &[53]).is_none());
    }

    #[test]
    fn conntrack_messages_are_padded_netlink() {
        let attr = attribute(CTA_ZONE, &[0, 1]);
        assert_eq!(attr, vec![6, 0, 18, 0, 0, 1, 0, 0]);
        let msg = message(0x102, NLM_F_REQUEST | NLM_F_ACK, 9, 2, &attr);
        assert_eq!(msg.len(), 28);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()), 28);
        assert_eq!(msg[16], 2);
    }
}
