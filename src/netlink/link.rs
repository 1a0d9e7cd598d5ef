//! Links: lookup, creation (veth, bridge), and per-link settings.

use std::os::fd::{AsRawFd, BorrowedFd};

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{Iff, Ifla, IflaInfo, RtAddrFamily, Rtm};
use neli::rtnl::{Ifinfomsg, IfinfomsgBuilder, Rtattr};
use neli::types::{Buffer, RtBuffer};

use super::attr::{self, CodecError};
use super::consts::{RTEXT_FILTER_SKIP_STATS, VETH_INFO_PEER};
use super::link_kinds::{Ipvlan, Macvlan, Vlan};
use super::{Netlink, NetlinkError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`: "veth", "bridge", ...; None for plain devices such as lo.
    pub kind: Option<String>,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// `IFF_PROMISC` is set.
    pub promisc: bool,
    /// `IFLA_OPERSTATE` (RFC 2863: 6 is up, 2 down, 7 lower layer down, 0 unknown).
    pub oper_state: u8,
    pub master: Option<u32>,
    pub alias: Option<String>,
    /// Set when the link's peer or parent lives in another namespace.
    pub link_netnsid: Option<i32>,
    /// `IFLA_LINK`: a veth's peer index (in `link_netnsid`'s namespace if that is set).
    pub peer_index: Option<u32>,
}

/// What to create with [`Netlink::create_link`].
#[derive(Debug)]
pub struct LinkSpec<'a> {
    pub name: String,
    pub kind: LinkKind<'a>,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    /// Create the link straight in this namespace rather than the socket's.
    pub netns: Option<BorrowedFd<'a>>,
    /// Make it a port of this link (a bridge) as it is created.
    pub master: Option<u32>,
    /// Set it up as it is created (for a veth: this end; the peer stays down).
    pub up: bool,
}

impl<'a> LinkSpec<'a> {
    pub fn new(name: impl Into<String>, kind: LinkKind<'a>) -> Self {
        LinkSpec {
            name: name.into(),
            kind,
            mtu: None,
            mac: None,
            netns: None,
            master: None,
            up: false,
        }
    }
}

#[derive(Debug)]
pub enum LinkKind<'a> {
    Veth(VethPeer<'a>),
    #[cfg_attr(not(test), allow(dead_code))] // only the tests use it in this build
    Bridge,
    /// A macvlan on link `parent` (an index in the namespace the link is created from).
    Macvlan(Macvlan),
    /// An ipvlan on link `parent`.
    Ipvlan(Ipvlan),
    /// An 802.1Q sub-interface of link `parent`.
    Vlan(Vlan),
    Dummy,
    /// A VRF device whose routes live in routing table `table`.
    Vrf {
        table: u32,
    },
}

/// The other end of a veth pair.
#[derive(Debug)]
pub struct VethPeer<'a> {
    pub name: String,
    /// Namespace to create the peer in; the socket's namespace if None.
    pub netns: Option<BorrowedFd<'a>>,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
}

impl<'a> VethPeer<'a> {
    pub fn new(name: impl Into<String>) -> Self {
        VethPeer {
            name: name.into(),
            netns: None,
            mac: None,
            mtu: None,
        }
    }
}

impl Netlink {
    /// The link called `name`, or None if there is none.
    pub fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let op = format!("get link {name}");
        let req = (|| link_msg(0, vec![attr::attr(Ifla::Ifname, name)?, skip_stats()?]))();
        self.get_link(&op, req)
    }

    pub fn link_by_index(&self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let op = format!("get link {index}");
        let req = skip_stats().and_then(|mask| link_msg(index, vec![mask]));
        self.get_link(&op, req)
    }

    pub fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let op = "list links";
        let req = skip_stats().and_then(|mask| link_msg(0, vec![mask]));
        let msgs: Vec<Ifinfomsg> = self.dump(op, Rtm::Getlink, req)?;
        msgs.iter()
            .map(|m| parse_link(m).map_err(|e| NetlinkError::codec(op, e)))
            .collect()
    }

    pub fn create_link(&self, spec: &LinkSpec) -> Result<(), NetlinkError> {
        let op = match &spec.kind {
            LinkKind::Veth(peer) => format!("create veth {} (peer {})", spec.name, peer.name),
            LinkKind::Bridge => format!("create bridge {}", spec.name),
            other => format!("create {} {}", other.kind_name(), spec.name),
        };
        self.ack(
            &op,
            Rtm::Newlink,
            NlmF::CREATE | NlmF::EXCL,
            new_link_msg(spec),
        )
    }

    pub fn set_up(&self, index: u32, up: bool) -> Result<(), NetlinkError> {
        let op = format!("set link {index} {}", if up { "up" } else { "down" });
        let req = i32::try_from(index)
            .map_err(CodecError::from)
            .and_then(|index| {
                let builder = IfinfomsgBuilder::default()
                    .ifi_family(RtAddrFamily::Unspecified)
                    .ifi_index(index);
                let builder = if up { builder.up() } else { builder.down() };
                Ok(builder.build()?)
            });
        self.ack(&op, Rtm::Newlink, NlmF::empty(), req)
    }

    /// Renames a link; the kernel refuses (EBUSY) while it is up.
    pub fn rename(&self, index: u32, name: &str) -> Result<(), NetlinkError> {
        let op = format!("rename link {index} to {name}");
        self.change_link(&op, index, attr::attr(Ifla::Ifname, name))
    }

    pub fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let op = format!("set mtu {mtu} on link {index}");
        self.change_link(&op, index, attr::attr(Ifla::Mtu, mtu))
    }

    pub fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        let op = format!("set mac {} on link {index}", format_mac(mac));
        self.change_link(&op, index, attr::attr(Ifla::Address, mac))
    }

    /// Sets the alias; an empty one clears it.
    pub fn set_alias(&self, index: u32, alias: &str) -> Result<(), NetlinkError> {
        let op = format!("set alias {alias:?} on link {index}");
        // Raw bytes without a NUL, as iproute2 sends: a zero-length payload is what clears.
        self.change_link(&op, index, attr::attr(Ifla::Ifalias, alias.as_bytes()))
    }

    /// Enslaves the link to `master` (e.g. a bridge), or releases it with None.
    pub fn set_master(&self, index: u32, master: Option<u32>) -> Result<(), NetlinkError> {
        let op = match master {
            Some(m) => format!("set master of link {index} to {m}"),
            None => format!("release link {index} from its master"),
        };
        self.change_link(&op, index, attr::attr(Ifla::Master, master.unwrap_or(0)))
    }

    /// Moves the link into the namespace `netns`; its index may change there.
    pub fn move_to_netns(&self, index: u32, netns: BorrowedFd) -> Result<(), NetlinkError> {
        let op = format!("move link {index} to another netns");
        let fd = netns.as_raw_fd() as u32;
        self.change_link(&op, index, attr::attr(Ifla::NetNsFd, fd))
    }

    pub fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        let op = format!("delete link {index}");
        self.ack(
            &op,
            Rtm::Dellink,
            NlmF::empty(),
            link_msg(index, Vec::new()),
        )
    }

    fn change_link(
        &self,
        op: &str,
        index: u32,
        change: Result<Rtattr<Ifla, Buffer>, CodecError>,
    ) -> Result<(), NetlinkError> {
        let req = change.and_then(|a| link_msg(index, vec![a]));
        self.ack(op, Rtm::Newlink, NlmF::empty(), req)
    }

    fn get_link(
        &self,
        op: &str,
        req: Result<Ifinfomsg, CodecError>,
    ) -> Result<Option<Link>, NetlinkError> {
        match self.get::<_, Ifinfomsg>(op, Rtm::Getlink, req) {
            Ok(Some(msg)) => parse_link(&msg)
                .map(Some)
                .map_err(|e| NetlinkError::codec(op, e)),
            Ok(None) => Ok(None),
            Err(e) if e.errno() == libc::ENODEV => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// An `ifinfomsg` for link `index` (0: none) carrying `attrs`.
pub(super) fn link_msg(
    index: u32,
    attrs: Vec<Rtattr<Ifla, Buffer>>,
) -> Result<Ifinfomsg, CodecError> {
    Ok(IfinfomsgBuilder::default()
        .ifi_family(RtAddrFamily::Unspecified)
        .ifi_index(i32::try_from(index)?)
        .rtattrs(attrs.into_iter().collect::<RtBuffer<_, _>>())
        .build()?)
}

/// `IFLA_EXT_MASK` asking the kernel to leave the counters out of a link's description: no
/// caller reads them, and they are a fifth of the message.
fn skip_stats() -> Result<Rtattr<Ifla, Buffer>, CodecError> {
    attr::attr(Ifla::ExtMask, RTEXT_FILTER_SKIP_STATS)
}

fn new_link_msg(spec: &LinkSpec) -> Result<Ifinfomsg, CodecError> {
    let mut attrs = own_attrs(&spec.name, spec.mtu, spec.mac, spec.netns)?;
    if let Some(parent) = spec.kind.parent() {
        attrs.push(attr::attr(Ifla::Link, parent)?);
    }
    if let Some(master) = spec.master {
        attrs.push(attr::attr(Ifla::Master, master)?);
    }
    if matches!(spec.kind, LinkKind::Veth(_)) {
        attrs.extend(single_queue()?);
    }
    attrs.push(link_info(&spec.kind)?);
    let builder = IfinfomsgBuilder::default()
        .ifi_family(RtAddrFamily::Unspecified)
        .ifi_index(0)
        .rtattrs(attrs.into_iter().collect::<RtBuffer<_, _>>());
    let builder = if spec.up { builder.up() } else { builder };
    Ok(builder.build()?)
}

/// One TX and one RX queue for a veth end. The kernel gives a veth as many queues as CPUs but
/// then cuts the real number down to one, and that cut waits for two expedited RCU grace
/// periods under the RTNL lock (milliseconds, serialising parallel ADDs). Asking for one
/// queue up front ends in the same real queue count without the wait.
fn single_queue() -> Result<[Rtattr<Ifla, Buffer>; 2], CodecError> {
    Ok([
        attr::attr(Ifla::NumTxQueues, 1u32)?,
        attr::attr(Ifla::NumRxQueues, 1u32)?,
    ])
}

/// Name, MTU, MAC and target namespace: shared by a new link and a veth peer.
pub(super) fn own_attrs(
    name: &str,
    mtu: Option<u32>,
    mac: Option<[u8; 6]>,
    netns: Option<BorrowedFd>,
) -> Result<Vec<Rtattr<Ifla, Buffer>>, CodecError> {
    let mut attrs = vec![attr::attr(Ifla::Ifname, name)?];
    if let Some(mtu) = mtu {
        attrs.push(attr::attr(Ifla::Mtu, mtu)?);
    }
    if let Some(mac) = mac {
        attrs.push(attr::attr(Ifla::Address, mac)?);
    }
    if let Some(fd) = netns {
        attrs.push(attr::attr(Ifla::NetNsFd, fd.as_raw_fd() as u32)?);
    }
    Ok(attrs)
}

/// `IFLA_LINKINFO { IFLA_INFO_KIND, IFLA_INFO_DATA }` for a link kind.
fn link_info(kind: &LinkKind) -> Result<Rtattr<Ifla, Buffer>, CodecError> {
    let (name, data): (&str, Vec<Rtattr<u16, Buffer>>) = match kind {
        LinkKind::Veth(peer) => {
            let mut peer_attrs = own_attrs(&peer.name, peer.mtu, peer.mac, peer.netns)?;
            peer_attrs.extend(single_queue()?);
            let peer_msg = link_msg(0, peer_attrs)?;
            ("veth", vec![attr::attr(VETH_INFO_PEER, peer_msg)?])
        }
        LinkKind::Bridge => ("bridge", Vec::new()),
        other => (other.kind_name(), other.info_data()?),
    };
    let mut info = vec![attr::attr::<IflaInfo, _>(IflaInfo::Kind, name)?];
    if !data.is_empty() {
        info.push(attr::nest(IflaInfo::Data, &data)?);
    }
    attr::nest(Ifla::Linkinfo, &info)
}

pub(super) fn parse_link(msg: &Ifinfomsg) -> Result<Link, CodecError> {
    let attrs = msg.rtattrs();
    let index = u32::try_from(*msg.ifi_index())?;
    let name = attr::find(attrs, Ifla::Ifname)
        .and_then(attr::to_string)
        .ok_or_else(|| CodecError::new(format!("link {index} has no name")))?;
    let kind = match attr::find(attrs, Ifla::Linkinfo) {
        Some(info) => {
            attr::find(&attr::parse_nest(info)?, IflaInfo::Kind).and_then(attr::to_string)
        }
        None => None,
    };
    Ok(Link {
        index,
        name,
        kind,
        mac: attr::find(attrs, Ifla::Address).and_then(attr::to_mac),
        mtu: attr::find(attrs, Ifla::Mtu)
            .and_then(attr::to_u32)
            .unwrap_or(0),
        up: msg.ifi_flags().contains(Iff::UP),
        promisc: msg.ifi_flags().contains(Iff::PROMISC),
        oper_state: attr::find(attrs, Ifla::Operstate)
            .and_then(|p| p.first().copied())
            .unwrap_or(0),
        master: attr::find(attrs, Ifla::Master).and_then(attr::to_u32),
        alias: attr::find(attrs, Ifla::Ifalias).and_then(attr::to_string),
        link_netnsid: attr::find(attrs, Ifla::LinkNetnsid).and_then(attr::to_i32),
        peer_index: attr::find(attrs, Ifla::Link).and_then(attr::to_u32),
    })
}

pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
