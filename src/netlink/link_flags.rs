//! Link settings the tuning plugin reads and changes: the promiscuous and all-multicast
//! flags and the transmit queue length.

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{Iff, Ifla, RtAddrFamily, Rtm};
use neli::rtnl::{Ifinfomsg, IfinfomsgBuilder, Rtattr};
use neli::types::{Buffer, RtBuffer};

use super::attr::{self, CodecError};
use super::{Netlink, NetlinkError};

/// A flag [`Netlink::set_link_flag`] can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkFlag {
    /// `IFF_PROMISC`
    Promisc,
    /// `IFF_ALLMULTI`
    AllMulti,
}

impl LinkFlag {
    fn iff(self) -> Iff {
        match self {
            LinkFlag::Promisc => Iff::PROMISC,
            LinkFlag::AllMulti => Iff::ALLMULTI,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkFlags {
    pub promisc: bool,
    pub allmulti: bool,
    /// `IFLA_TXQLEN`.
    pub txqlen: u32,
}

impl Netlink {
    /// The flags and queue length of link `index`; None if there is no such link.
    pub fn link_flags(&self, index: u32) -> Result<Option<LinkFlags>, NetlinkError> {
        let op = format!("get link {index}");
        match self.get::<_, Ifinfomsg>(&op, Rtm::Getlink, msg(index, Iff::empty(), Iff::empty())) {
            Ok(Some(m)) => Ok(Some(LinkFlags {
                promisc: m.ifi_flags().contains(Iff::PROMISC),
                allmulti: m.ifi_flags().contains(Iff::ALLMULTI),
                txqlen: attr::find(m.rtattrs(), Ifla::Txqlen)
                    .and_then(attr::to_u32)
                    .unwrap_or(0),
            })),
            Ok(None) => Ok(None),
            Err(e) if e.errno() == libc::ENODEV => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets or clears one flag, leaving the others alone.
    pub fn set_link_flag(&self, index: u32, flag: LinkFlag, on: bool) -> Result<(), NetlinkError> {
        let op = format!(
            "turn {} {flag:?} on link {index}",
            if on { "on" } else { "off" }
        );
        let value = if on { flag.iff() } else { Iff::empty() };
        self.ack(
            &op,
            Rtm::Newlink,
            NlmF::empty(),
            msg(index, value, flag.iff()),
        )
    }

    pub fn set_link_txqlen(&self, index: u32, txqlen: u32) -> Result<(), NetlinkError> {
        let op = format!("set txqueuelen {txqlen} on link {index}");
        let req = attr::attr(Ifla::Txqlen, txqlen)
            .and_then(|a| msg_with(index, Iff::empty(), Iff::empty(), vec![a]));
        self.ack(&op, Rtm::Newlink, NlmF::empty(), req)
    }
}

fn msg(index: u32, flags: Iff, change: Iff) -> Result<Ifinfomsg, CodecError> {
    msg_with(index, flags, change, Vec::new())
}

fn msg_with(
    index: u32,
    flags: Iff,
    change: Iff,
    attrs: Vec<Rtattr<Ifla, Buffer>>,
) -> Result<Ifinfomsg, CodecError> {
    Ok(IfinfomsgBuilder::default()
        .ifi_family(RtAddrFamily::Unspecified)
        .ifi_index(i32::try_from(index)?)
        .ifi_flags(flags)
        .ifi_change(change)
        .rtattrs(attrs.into_iter().collect::<RtBuffer<_, _>>())
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{LinkKind, LinkSpec, VethPeer};
    use crate::netns::tests::ScratchNetns;

    #[test]
    fn netlink_link_flags_and_txqlen() {
        let s = ScratchNetns::new();
        s.ns.run(|| {
            let here = crate::netns::NetNs::current().unwrap();
            assert!(here.is_same(&s.ns), "not inside the scratch netns");
            let nl = Netlink::open().unwrap();
            nl.create_link(&LinkSpec::new(
                "lfv0",
                LinkKind::Veth(VethPeer::new("lfv1")),
            ))
            .unwrap();
            let index = nl.link_by_name("lfv0").unwrap().unwrap().index;
            let before = nl.link_flags(index).unwrap().unwrap();
            assert_eq!(
                (before.promisc, before.allmulti, before.txqlen),
                (false, false, 1000)
            );
            nl.set_link_flag(index, LinkFlag::Promisc, true).unwrap();
            nl.set_link_flag(index, LinkFlag::AllMulti, true).unwrap();
            nl.set_link_txqlen(index, 77).unwrap();
            let after = nl.link_flags(index).unwrap().unwrap();
            assert_eq!(
                (after.promisc, after.allmulti, after.txqlen),
                (true, true, 77)
            );
            nl.set_link_flag(index, LinkFlag::Promisc, false).unwrap();
            let last = nl.link_flags(index).unwrap().unwrap();
            assert_eq!((last.promisc, last.allmulti), (false, true));
            assert_eq!(nl.link_flags(9999).unwrap(), None);
        })
        .unwrap();
        let shown = s.ip_json(&["link", "show", "lfv0"]);
        assert_eq!(shown[0]["txqlen"], 77, "{shown}");
    }
}
