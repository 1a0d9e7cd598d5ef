//! The link kinds of the single-interface plugins (macvlan, ipvlan, vlan, dummy): their
//! `IFLA_INFO_DATA` when creating one, and reading back what CHECK and host-device look at
//! (the macvlan/ipvlan mode, the VLAN id, the parent device the kernel reports).

use neli::consts::rtnl::{Ifla, IflaInfo, Rtm};
use neli::rtnl::{Ifinfomsg, Rtattr};
use neli::types::Buffer;

use super::attr::{self, CodecError};
use super::link::{Link, LinkKind, link_msg, parse_link};
use super::{Netlink, NetlinkError};

/// `linux/if_link.h`: members of a macvlan's `IFLA_INFO_DATA`.
const IFLA_MACVLAN_MODE: u16 = 1;
const IFLA_MACVLAN_BC_QUEUE_LEN: u16 = 7;
/// Members of an ipvlan's `IFLA_INFO_DATA` (both u16).
const IFLA_IPVLAN_MODE: u16 = 1;
/// Members of a vlan's `IFLA_INFO_DATA`.
const IFLA_VLAN_ID: u16 = 1;
/// Members of a vrf's `IFLA_INFO_DATA`: the routing table (u32).
const IFLA_VRF_TABLE: u16 = 1;
/// The device a link sits on, e.g. `0000:00:03.0` on bus `pci` or `virtio2` on `virtio`
/// (kernel 5.16+); unlike sysfs, netlink answers for the namespace the socket is in.
const IFLA_PARENT_DEV_NAME: u16 = 56;
const IFLA_PARENT_DEV_BUS_NAME: u16 = 57;

/// `enum macvlan_mode` of `linux/if_link.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacvlanMode {
    Private = 1,
    Vepa = 2,
    Bridge = 4,
    Passthru = 8,
    Source = 16,
}

impl MacvlanMode {
    const ALL: [MacvlanMode; 5] = [
        MacvlanMode::Private,
        MacvlanMode::Vepa,
        MacvlanMode::Bridge,
        MacvlanMode::Passthru,
        MacvlanMode::Source,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Passthru => "passthru",
            MacvlanMode::Source => "source",
        }
    }

    #[cfg_attr(not(test), allow(dead_code))] // only the tests use it in this build
    pub fn from_name(name: &str) -> Option<MacvlanMode> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    fn from_kernel(value: u32) -> Option<MacvlanMode> {
        Self::ALL.into_iter().find(|m| *m as u32 == value)
    }
}

/// `enum ipvlan_mode` of `linux/if_link.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpvlanMode {
    L2 = 0,
    L3 = 1,
    L3s = 2,
}

impl IpvlanMode {
    const ALL: [IpvlanMode; 3] = [IpvlanMode::L2, IpvlanMode::L3, IpvlanMode::L3s];

    pub fn name(self) -> &'static str {
        match self {
            IpvlanMode::L2 => "l2",
            IpvlanMode::L3 => "l3",
            IpvlanMode::L3s => "l3s",
        }
    }

    pub fn from_name(name: &str) -> Option<IpvlanMode> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    fn from_kernel(value: u16) -> Option<IpvlanMode> {
        Self::ALL.into_iter().find(|m| *m as u16 == value)
    }
}

#[derive(Debug, Clone)]
pub struct Macvlan {
    pub parent: u32,
    pub mode: MacvlanMode,
    /// `IFLA_MACVLAN_BC_QUEUE_LEN`: the broadcast queue length; None keeps the default.
    pub bc_queue_len: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Ipvlan {
    pub parent: u32,
    pub mode: IpvlanMode,
}

#[derive(Debug, Clone)]
pub struct Vlan {
    pub parent: u32,
    /// 0..=4094.
    pub id: u16,
}

impl LinkKind<'_> {
    /// `IFLA_INFO_KIND` of the kind.
    pub fn kind_name(&self) -> &'static str {
        match self {
            LinkKind::Veth(_) => "veth",
            LinkKind::Bridge => "bridge",
            LinkKind::Macvlan(_) => "macvlan",
            LinkKind::Ipvlan(_) => "ipvlan",
            LinkKind::Vlan(_) => "vlan",
            LinkKind::Dummy => "dummy",
            LinkKind::Vrf { .. } => "vrf",
        }
    }

    /// The lower link (`IFLA_LINK`) of the kinds that sit on one.
    pub(super) fn parent(&self) -> Option<u32> {
        match self {
            LinkKind::Macvlan(m) => Some(m.parent),
            LinkKind::Ipvlan(i) => Some(i.parent),
            LinkKind::Vlan(v) => Some(v.parent),
            LinkKind::Veth(_) | LinkKind::Bridge | LinkKind::Dummy | LinkKind::Vrf { .. } => None,
        }
    }

    /// `IFLA_INFO_DATA` members of the kinds defined here (veth and bridge build their own).
    pub(super) fn info_data(&self) -> Result<Vec<Rtattr<u16, Buffer>>, CodecError> {
        Ok(match self {
            LinkKind::Macvlan(m) => {
                let mut data = vec![attr::attr(IFLA_MACVLAN_MODE, m.mode as u32)?];
                if let Some(len) = m.bc_queue_len {
                    data.push(attr::attr(IFLA_MACVLAN_BC_QUEUE_LEN, len)?);
                }
                data
            }
            LinkKind::Ipvlan(i) => vec![attr::attr(IFLA_IPVLAN_MODE, i.mode as u16)?],
            LinkKind::Vlan(v) => vec![attr::attr(IFLA_VLAN_ID, v.id)?],
            LinkKind::Vrf { table } => vec![attr::attr(IFLA_VRF_TABLE, *table)?],
            LinkKind::Veth(_) | LinkKind::Bridge | LinkKind::Dummy => Vec::new(),
        })
    }
}

/// A link with the kind-specific settings the plugins check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkDetails {
    pub link: Link,
    /// Set for a macvlan whose mode this code knows.
    pub macvlan_mode: Option<MacvlanMode>,
    pub ipvlan_mode: Option<IpvlanMode>,
    pub vlan_id: Option<u16>,
    /// A vrf's routing table (`IFLA_VRF_TABLE`).
    pub vrf_table: Option<u32>,
    /// `IFLA_PARENT_DEV_NAME` / `IFLA_PARENT_DEV_BUS_NAME`: None for virtual devices.
    pub parent_dev: Option<String>,
    pub parent_bus: Option<String>,
}

impl Netlink {
    /// The link called `name` with its kind-specific settings; None if there is none.
    pub fn link_details(&self, name: &str) -> Result<Option<LinkDetails>, NetlinkError> {
        let op = format!("get link {name}");
        let req = attr::attr(Ifla::Ifname, name).and_then(|a| link_msg(0, vec![a]));
        match self.get::<_, Ifinfomsg>(&op, Rtm::Getlink, req) {
            Ok(Some(msg)) => parse_details(&msg)
                .map(Some)
                .map_err(|e| NetlinkError::codec(&op, e)),
            Ok(None) => Ok(None),
            Err(e) if e.errno() == libc::ENODEV => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link of the namespace with its kind-specific settings.
    pub fn all_link_details(&self) -> Result<Vec<LinkDetails>, NetlinkError> {
        let op = "list links";
        let msgs: Vec<Ifinfomsg> = self.dump(op, Rtm::Getlink, link_msg(0, Vec::new()))?;
        msgs.iter()
            .map(|m| parse_details(m).map_err(|e| NetlinkError::codec(op, e)))
            .collect()
    }
}

fn parse_details(msg: &Ifinfomsg) -> Result<LinkDetails, CodecError> {
    let link = parse_link(msg)?;
    let attrs = msg.rtattrs();
    let data = match attr::find(attrs, Ifla::Linkinfo) {
        Some(info) => match attr::find(&attr::parse_nest(info)?, IflaInfo::Data) {
            Some(data) => Some(attr::parse_nest(data)?),
            None => None,
        },
        None => None,
    };
    let member = |ty: u16| data.as_ref().and_then(|d| attr::find(d, ty));
    let u16_member = |ty: u16| {
        member(ty)
            .and_then(|p| p.get(..2))
            .map(|p| u16::from_ne_bytes([p[0], p[1]]))
    };
    let kind = link.kind.clone().unwrap_or_default();
    let (mut macvlan_mode, mut ipvlan_mode, mut vlan_id, mut vrf_table) = (None, None, None, None);
    match kind.as_str() {
        "macvlan" | "macvtap" => {
            // A macvlan created without a mode reports none: the kernel's default is vepa.
            let raw = member(IFLA_MACVLAN_MODE)
                .and_then(attr::to_u32)
                .unwrap_or(MacvlanMode::Vepa as u32);
            macvlan_mode = MacvlanMode::from_kernel(raw);
        }
        "ipvlan" | "ipvtap" => {
            ipvlan_mode = IpvlanMode::from_kernel(u16_member(IFLA_IPVLAN_MODE).unwrap_or(0));
        }
        "vlan" => vlan_id = u16_member(IFLA_VLAN_ID),
        "vrf" => vrf_table = member(IFLA_VRF_TABLE).and_then(attr::to_u32),
        _ => {}
    }
    Ok(LinkDetails {
        link,
        macvlan_mode,
        ipvlan_mode,
        vlan_id,
        vrf_table,
        parent_dev: attr::find(attrs, IFLA_PARENT_DEV_NAME).and_then(attr::to_string),
        parent_bus: attr::find(attrs, IFLA_PARENT_DEV_BUS_NAME).and_then(attr::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_round_trip_by_name_and_kernel_value() {
        for name in ["private", "vepa", "bridge", "passthru", "source"] {
            let m = MacvlanMode::from_name(name).unwrap();
            assert_eq!(m.name(), name);
            assert_eq!(MacvlanMode::from_kernel(m as u32), Some(m));
        }
        assert_eq!(MacvlanMode::Bridge as u32, 4);
        assert_eq!(MacvlanMode::from_name("Bridge"), None);
        assert_eq!(MacvlanMode::from_kernel(3), None);
        for name in ["l2", "l3", "l3s"] {
            let m = IpvlanMode::from_name(name).unwrap();
            assert_eq!(m.name(), name);
            assert_eq!(IpvlanMode::from_kernel(m as u16), Some(m));
        }
        assert_eq!(IpvlanMode::from_name("l4"), None);
    }

    #[test]
    fn info_data_carries_mode_and_id() {
        let mv = LinkKind::Macvlan(Macvlan {
            parent: 3,
            mode: MacvlanMode::Private,
            bc_queue_len: Some(100),
        });
        assert_eq!(mv.parent(), Some(3));
        assert_eq!(mv.kind_name(), "macvlan");
        let data = mv.info_data().unwrap();
        assert_eq!(data.len(), 2);
        let vlan = LinkKind::Vlan(Vlan { parent: 9, id: 42 });
        let data = vlan.info_data().unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data[0].rta_payload().as_ref(), 42u16.to_ne_bytes());
        assert!(LinkKind::Dummy.info_data().unwrap().is_empty());
        assert_eq!(LinkKind::Dummy.parent(), None);
    }
}
