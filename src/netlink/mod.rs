//! rtnetlink on top of neli: one blocking socket per namespace, typed link/address/route
//! operations, and errors that keep the kernel's extended-ACK text.
//!
//! A socket works in the namespace it was opened in, so a plugin opens a [`Netlink`] inside
//! `NetNs::run` for the container side and another outside for the host side.
//!
//! neli's `NlRouter` is not used: it drops the extended ACK (`Nlmsgerr::to_typed` rebuilds
//! the error without it) and runs a thread per socket. The request loop here is small.

// The typed API is for the plugins that come next; not every call has a user yet.

mod addr;
mod attr;
mod bridge;
pub mod conntrack;
mod consts;
mod link;
mod link_flags;
mod link_kinds;
mod route;
mod route_table;
mod rule;
mod tc;
pub mod tun;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, Cursor};

use neli::consts::nl::{NlmF, Nlmsg, NlmsgerrAttr};
use neli::consts::rtnl::Rtm;
use neli::consts::socket::Msg;
use neli::consts::socket::NlFamily;
use neli::err::SocketError;
use neli::nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder};
use neli::socket::NlSocket;
use neli::types::{Buffer, GenlBuffer};
use neli::utils::Groups;
use neli::{FromBytes, FromBytesWithInput, Size, ToBytes};

pub use addr::{Address, Family};
pub use bridge::{BridgeVlan, PortSettings};
pub use consts::{
    IFA_F_DADFAILED, IFA_F_NODAD, IFA_F_TENTATIVE, RT_SCOPE_HOST, RT_SCOPE_LINK, RT_SCOPE_UNIVERSE,
    RT_TABLE_MAIN, RTN_UNICAST, RTPROT_KERNEL,
};
pub use link::{Link, LinkKind, LinkSpec, VethPeer, format_mac};
pub use link_flags::LinkFlag;
pub use link_kinds::{Ipvlan, IpvlanMode, LinkDetails, Macvlan, MacvlanMode, Vlan};
pub use route::Route;
pub use route_table::TableRoute;
pub use rule::Rule;
pub use tc::{
    ETH_P_ALL, INGRESS_HANDLE, TC_H_INGRESS, TC_H_ROOT, TCA_EGRESS_REDIR, Tbf, tc_handle,
};

use attr::CodecError;

/// A dump the kernel marks NLM_F_DUMP_INTR (the table changed mid-dump) is retried this often.
const DUMP_ATTEMPTS: usize = 5;

/// What one receive reads at the most: the kernel sizes dump messages to the reader's buffer,
/// up to 32 KiB.
const RECV_BUFFER: usize = 32 * 1024;

/// Message types below this are netlink control messages (NOOP, ERROR, DONE, OVERRUN).
const NLMSG_MIN_TYPE: u16 = 0x10;

/// A failed netlink operation: what was attempted, the errno, and the kernel's explanation.
#[derive(Debug, Clone)]
pub struct NetlinkError {
    op: String,
    errno: i32,
    /// Extended-ACK message from the kernel, e.g. "Nexthop has invalid gateway".
    extack: Option<String>,
    /// Local cause when the failure was ours (a message neli could not encode or decode).
    detail: Option<String>,
}

impl NetlinkError {
    /// The positive errno, to test for e.g. `libc::EEXIST`, `ENODEV`, `ENOENT`, `ESRCH`.
    pub fn errno(&self) -> i32 {
        self.errno
    }

    #[cfg_attr(not(test), allow(dead_code))] // only the tests use it in this build
    pub fn extack(&self) -> Option<&str> {
        self.extack.as_deref()
    }

    fn kernel(op: &str, errno: i32, extack: Option<String>) -> Self {
        NetlinkError {
            op: op.to_string(),
            errno,
            extack,
            detail: None,
        }
    }

    fn codec(op: &str, e: CodecError) -> Self {
        NetlinkError {
            op: op.to_string(),
            errno: libc::EBADMSG,
            extack: None,
            detail: Some(e.0),
        }
    }

    fn socket(op: &str, e: SocketError) -> Self {
        match e {
            SocketError::Io(io) => NetlinkError {
                op: op.to_string(),
                errno: io.raw_os_error().unwrap_or(libc::EIO),
                extack: None,
                detail: None,
            },
            other => NetlinkError::codec(op, CodecError::new(other)),
        }
    }
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.op,
            io::Error::from_raw_os_error(self.errno)
        )?;
        if let Some(text) = self.extack.as_ref().or(self.detail.as_ref()) {
            write!(f, ": {text}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NetlinkError {}

/// Data messages of one request, and whether the kernel flagged the dump as inconsistent.
struct Reply<T> {
    data: Vec<T>,
    interrupted: bool,
}

/// An rtnetlink socket bound to the namespace of the thread that opened it.
///
/// The plain socket, not neli's `NlSocketHandle`: that one allocates a pool of three zeroed
/// 32 KiB buffers per socket and zeroes one again after every receive, a good part of a
/// plugin's CPU time; here one buffer is made per socket and reused.
pub struct Netlink {
    socket: NlSocket,
    seq: Cell<u32>,
    recv_buf: RefCell<Vec<u8>>,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let op = "open rtnetlink socket";
        let socket = NlSocket::connect(NlFamily::Route, None, Groups::empty())
            .map_err(|e| NetlinkError::socket(op, e.into()))?;
        socket
            .enable_ext_ack(true)
            .map_err(|e| NetlinkError::socket(op, e.into()))?;
        // Strict checking makes the kernel honour the filters in dump requests.
        socket
            .enable_strict_checking(true)
            .map_err(|e| NetlinkError::socket(op, e.into()))?;
        Ok(Netlink {
            socket,
            seq: Cell::new(0),
            recv_buf: RefCell::new(vec![0; RECV_BUFFER]),
        })
    }

    /// A request answered by an ACK only (create, change, delete).
    fn ack<Req>(
        &self,
        op: &str,
        ty: Rtm,
        flags: NlmF,
        req: Result<Req, CodecError>,
    ) -> Result<(), NetlinkError>
    where
        Req: Size + ToBytes + fmt::Debug,
    {
        let req = req.map_err(|e| NetlinkError::codec(op, e))?;
        self.exchange::<Req, Buffer>(op, ty, flags | NlmF::ACK, req)
            .map(|_| ())
    }

    /// A single-object GET; the kernel answers with one message (or an error), so no ACK is
    /// asked for: it would cost a second receive.
    fn get<Req, Resp>(
        &self,
        op: &str,
        ty: Rtm,
        req: Result<Req, CodecError>,
    ) -> Result<Option<Resp>, NetlinkError>
    where
        Req: Size + ToBytes + fmt::Debug,
        Resp: Size + FromBytesWithInput<Input = usize>,
    {
        let req = req.map_err(|e| NetlinkError::codec(op, e))?;
        let reply = self.exchange::<Req, Resp>(op, ty, NlmF::empty(), req)?;
        Ok(reply.data.into_iter().next())
    }

    /// A dump, repeated while the kernel reports it was interrupted by a concurrent change.
    fn dump<Req, Resp>(
        &self,
        op: &str,
        ty: Rtm,
        req: Result<Req, CodecError>,
    ) -> Result<Vec<Resp>, NetlinkError>
    where
        Req: Size + ToBytes + fmt::Debug + Clone,
        Resp: Size + FromBytesWithInput<Input = usize>,
    {
        let req = req.map_err(|e| NetlinkError::codec(op, e))?;
        let mut attempt = 1;
        loop {
            let reply = self.exchange::<Req, Resp>(op, ty, NlmF::DUMP | NlmF::ACK, req.clone())?;
            if !reply.interrupted {
                return Ok(reply.data);
            }
            if attempt == DUMP_ATTEMPTS {
                tracing::warn!("{op}: dump still inconsistent after {attempt} attempts, using it");
                return Ok(reply.data);
            }
            attempt += 1;
        }
    }

    /// Sends one request and reads until its ACK, error or end of dump; without `NlmF::ACK`
    /// and `NlmF::DUMP`, until the one answer.
    fn exchange<Req, Resp>(
        &self,
        op: &str,
        ty: Rtm,
        flags: NlmF,
        req: Req,
    ) -> Result<Reply<Resp>, NetlinkError>
    where
        Req: Size + ToBytes + fmt::Debug,
        Resp: Size + FromBytesWithInput<Input = usize>,
    {
        let seq = self.seq.get().wrapping_add(1);
        self.seq.set(seq);
        let msg = NlmsghdrBuilder::default()
            .nl_type(ty)
            .nl_flags(flags | NlmF::REQUEST)
            .nl_seq(seq)
            .nl_payload(NlPayload::Payload(req))
            .build()
            .map_err(|e| NetlinkError::codec(op, e.into()))?;
        tracing::trace!("netlink request {seq}: {op}");
        let mut bytes = Cursor::new(Vec::with_capacity(msg.padded_size()));
        msg.to_bytes(&mut bytes)
            .map_err(|e| NetlinkError::codec(op, CodecError::new(e)))?;
        self.socket
            .send(bytes.get_ref(), Msg::empty())
            .map_err(|e| NetlinkError::socket(op, e.into()))?;

        let single = !flags.intersects(NlmF::ACK | NlmF::DUMP);
        let mut reply = Reply {
            data: Vec::new(),
            interrupted: false,
        };
        let mut buf = self.recv_buf.borrow_mut();
        loop {
            let len = match self.socket.recv(&mut buf[..], Msg::empty()) {
                Ok((len, _groups)) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NetlinkError::socket(op, e.into())),
            };
            let mut messages = Cursor::new(&buf[..len]);
            while (messages.position() as usize) < len {
                let msg = Nlmsghdr::<u16, Buffer>::from_bytes(&mut messages)
                    .map_err(|e| NetlinkError::socket(op, e.into()))?;
                // Replies to an earlier request that was abandoned after its error.
                if *msg.nl_seq() != seq {
                    continue;
                }
                if msg.nl_flags().contains(NlmF::DUMP_INTR) {
                    reply.interrupted = true;
                }
                let nl_type = *msg.nl_type();
                match msg.nl_payload() {
                    NlPayload::Err(err) => {
                        return Err(NetlinkError::kernel(
                            op,
                            -err.error(),
                            extack_text(err.ext_ack()),
                        ));
                    }
                    NlPayload::Ack(_) => return Ok(reply),
                    // End of a dump; a failed dump carries the error in it.
                    NlPayload::DumpExtAck(done) if *done.error() < 0 => {
                        return Err(NetlinkError::kernel(
                            op,
                            -done.error(),
                            extack_text(done.ext_ack()),
                        ));
                    }
                    NlPayload::DumpExtAck(_) => return Ok(reply),
                    _ if nl_type == u16::from(Nlmsg::Done) => return Ok(reply),
                    NlPayload::Payload(data) if nl_type >= NLMSG_MIN_TYPE => {
                        let parsed = Resp::from_bytes_with_input(
                            &mut Cursor::new(data.as_ref()),
                            data.len(),
                        )
                        .map_err(|e| NetlinkError::codec(op, e.into()))?;
                        reply.data.push(parsed);
                        if single {
                            return Ok(reply);
                        }
                    }
                    // NOOP and the like carry nothing for us.
                    _ => {}
                }
            }
        }
    }
}

fn extack_text(attrs: &GenlBuffer<NlmsgerrAttr, Buffer>) -> Option<String> {
    attrs
        .iter()
        .find(|a| *a.nla_type().nla_type() == NlmsgerrAttr::Msg)
        .and_then(|a| attr::to_string(a.nla_payload().as_ref()))
        .filter(|text| !text.is_empty())
}

#[cfg(test)]
mod tests;
