//! Bridges: creation with bridge options, promiscuous mode, bridge-port flags (hairpin,
//! isolation, learning) and per-port VLAN entries (`AF_BRIDGE` `IFLA_AF_SPEC`), as
//! `ip link add type bridge`, `bridge link set` and `bridge vlan` do.

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{Iff, Ifla, IflaInfo, RtAddrFamily, Rtm};
use neli::rtnl::{Ifinfomsg, IfinfomsgBuilder, Rtattr};
use neli::types::{Buffer, RtBuffer};

use super::attr::{self, CodecError};
use super::consts::RTEXT_FILTER_BRVLAN;
use super::link::{link_msg, own_attrs};
use super::{Netlink, NetlinkError};

const AF_BRIDGE: u8 = libc::AF_BRIDGE as u8;

/// `linux/if_link.h`: `IFLA_BR_*` inside a bridge's `IFLA_INFO_DATA`.
const IFLA_BR_VLAN_FILTERING: u16 = 7;

/// `linux/if_link.h`: `IFLA_BRPORT_*` inside `IFLA_PROTINFO` / `IFLA_INFO_SLAVE_DATA`.
const IFLA_BRPORT_MODE: u16 = 4;
const IFLA_BRPORT_LEARNING: u16 = 8;
const IFLA_BRPORT_ISOLATED: u16 = 33;

/// `linux/if_bridge.h`: members of `IFLA_AF_SPEC` for `AF_BRIDGE`.
const IFLA_BRIDGE_FLAGS: u16 = 0;
const IFLA_BRIDGE_VLAN_INFO: u16 = 2;
const BRIDGE_FLAGS_MASTER: u16 = 1;
const BRIDGE_VLAN_INFO_PVID: u16 = 2;
const BRIDGE_VLAN_INFO_UNTAGGED: u16 = 4;

/// `NLA_F_NESTED`: the kernel's bridge code wants it on `IFLA_PROTINFO`.
const NLA_F_NESTED: u16 = 1 << 15;

#[cfg_attr(not(test), allow(dead_code))] // only the tests use it in this build
/// The flags of a bridge port, read from the port's `IFLA_INFO_SLAVE_DATA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BridgePort {
    pub hairpin: bool,
    pub isolated: bool,
    pub learning: bool,
}

/// Port flags to change; None leaves a flag as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortSettings {
    pub hairpin: Option<bool>,
    pub isolated: Option<bool>,
    pub learning: Option<bool>,
}

/// One VLAN of a bridge port (`bridge vlan show`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct BridgeVlan {
    pub vid: u16,
    /// Untagged frames arriving on the port are put in this VLAN.
    pub pvid: bool,
    /// Frames of this VLAN leave the port untagged.
    pub untagged: bool,
}

impl Netlink {
    /// Creates a bridge; `vlan_filtering` turns on `IFLA_BR_VLAN_FILTERING` (kernels built
    /// without it refuse with EOPNOTSUPP).
    pub fn create_bridge(
        &self,
        name: &str,
        mtu: Option<u32>,
        vlan_filtering: bool,
    ) -> Result<(), NetlinkError> {
        let op = format!("create bridge {name}");
        let req = (|| {
            let mut info = vec![attr::attr::<IflaInfo, _>(IflaInfo::Kind, "bridge")?];
            if vlan_filtering {
                let data = [attr::attr::<u16, _>(IFLA_BR_VLAN_FILTERING, 1u8)?];
                info.push(attr::nest(IflaInfo::Data, &data)?);
            }
            let mut attrs = own_attrs(name, mtu, None, None)?;
            attrs.push(attr::nest(Ifla::Linkinfo, &info)?);
            link_msg(0, attrs)
        })();
        self.ack(&op, Rtm::Newlink, NlmF::CREATE | NlmF::EXCL, req)
    }

    #[cfg_attr(not(test), allow(dead_code))] // only the tests use it in this build
    /// Whether the bridge `index` filters by VLAN; None if it is not a bridge or says nothing.
    pub fn bridge_vlan_filtering(&self, index: u32) -> Result<Option<bool>, NetlinkError> {
        let op = format!("get bridge options of link {index}");
        let Some(msg) = self.raw_link(&op, index)? else {
            return Ok(None);
        };
        let data = info_nest(&msg, IflaInfo::Data).map_err(|e| NetlinkError::codec(&op, e))?;
        Ok(data
            .as_ref()
            .and_then(|d| attr::find(d, IFLA_BR_VLAN_FILTERING))
            .and_then(|p| p.first())
            .map(|v| *v != 0))
    }

    /// Sets or clears `IFF_PROMISC`.
    pub fn set_promisc(&self, index: u32, on: bool) -> Result<(), NetlinkError> {
        let op = format!(
            "set promisc {} on link {index}",
            if on { "on" } else { "off" }
        );
        let req = i32::try_from(index)
            .map_err(CodecError::from)
            .and_then(|index| {
                Ok(IfinfomsgBuilder::default()
                    .ifi_family(RtAddrFamily::Unspecified)
                    .ifi_index(index)
                    .ifi_flags(if on { Iff::PROMISC } else { Iff::empty() })
                    .ifi_change(Iff::PROMISC)
                    .build()?)
            });
        self.ack(&op, Rtm::Newlink, NlmF::empty(), req)
    }

    #[cfg_attr(not(test), allow(dead_code))] // only the tests use it in this build
    /// The bridge-port flags of link `index`; None if it is not a bridge port (or is gone).
    pub fn bridge_port(&self, index: u32) -> Result<Option<BridgePort>, NetlinkError> {
        let op = format!("get bridge port flags of link {index}");
        let Some(msg) = self.raw_link(&op, index)? else {
            return Ok(None);
        };
        let codec = |e| NetlinkError::codec(&op, e);
        let Some(info) = attr::find(msg.rtattrs(), Ifla::Linkinfo) else {
            return Ok(None);
        };
        let info = attr::parse_nest(info).map_err(codec)?;
        let slave_kind = attr::find(&info, IflaInfo::SlaveKind).and_then(attr::to_string);
        if slave_kind.as_deref() != Some("bridge") {
            return Ok(None);
        }
        let Some(data) = attr::find(&info, IflaInfo::SlaveData) else {
            return Ok(None);
        };
        let data = attr::parse_nest(data).map_err(codec)?;
        let flag = |ty: u16| {
            attr::find(&data, ty)
                .and_then(|p| p.first())
                .is_some_and(|v| *v != 0)
        };
        Ok(Some(BridgePort {
            hairpin: flag(IFLA_BRPORT_MODE),
            isolated: flag(IFLA_BRPORT_ISOLATED),
            learning: flag(IFLA_BRPORT_LEARNING),
        }))
    }

    /// Changes bridge-port flags of link `index` (`bridge link set dev X hairpin on ...`).
    pub fn set_bridge_port(&self, index: u32, settings: &PortSettings) -> Result<(), NetlinkError> {
        let op = format!("set bridge port flags of link {index}");
        let flags = [
            (IFLA_BRPORT_MODE, settings.hairpin),
            (IFLA_BRPORT_ISOLATED, settings.isolated),
            (IFLA_BRPORT_LEARNING, settings.learning),
        ];
        let req = (|| {
            let children = flags
                .iter()
                .filter_map(|(ty, value)| value.map(|v| attr::attr::<u16, _>(*ty, u8::from(v))))
                .collect::<Result<Vec<_>, _>>()?;
            let protinfo = attr::nest::<Ifla, u16>(
                Ifla::from(u16::from(Ifla::Protinfo) | NLA_F_NESTED),
                &children,
            )?;
            bridge_msg(index, protinfo)
        })();
        if flags.iter().all(|(_, v)| v.is_none()) {
            return Ok(());
        }
        self.ack(&op, Rtm::Setlink, NlmF::empty(), req)
    }

    /// The VLAN entries of bridge port `index` (empty when it has none or filtering is off).
    pub fn bridge_vlans(&self, index: u32) -> Result<Vec<BridgeVlan>, NetlinkError> {
        let op = "list bridge vlans";
        let req = (|| {
            let mask = attr::attr::<Ifla, _>(Ifla::ExtMask, RTEXT_FILTER_BRVLAN)?;
            Ok(IfinfomsgBuilder::default()
                .ifi_family(RtAddrFamily::from(AF_BRIDGE))
                .ifi_index(0)
                .rtattrs([mask].into_iter().collect::<RtBuffer<_, _>>())
                .build()?)
        })();
        let msgs: Vec<Ifinfomsg> = self.dump(op, Rtm::Getlink, req)?;
        let mut vlans = Vec::new();
        for msg in msgs {
            if u32::try_from(*msg.ifi_index()).ok() != Some(index) {
                continue;
            }
            let Some(spec) = attr::find(msg.rtattrs(), Ifla::AfSpec) else {
                continue;
            };
            let spec = attr::parse_nest(spec).map_err(|e| NetlinkError::codec(op, e))?;
            for entry in spec.iter() {
                let ty = *entry.rta_type() & super::consts::NLA_TYPE_MASK;
                if ty != IFLA_BRIDGE_VLAN_INFO {
                    continue;
                }
                let payload: &[u8] = entry.rta_payload().as_ref();
                if payload.len() < 4 {
                    continue;
                }
                let flags = u16::from_ne_bytes([payload[0], payload[1]]);
                let vid = u16::from_ne_bytes([payload[2], payload[3]]);
                vlans.push(BridgeVlan {
                    vid,
                    pvid: flags & BRIDGE_VLAN_INFO_PVID != 0,
                    untagged: flags & BRIDGE_VLAN_INFO_UNTAGGED != 0,
                });
            }
        }
        vlans.sort();
        Ok(vlans)
    }

    /// Adds VLAN `vid` to bridge port `index` (`bridge vlan add vid V dev X [pvid] [untagged]
    /// master`).
    pub fn bridge_vlan_add(&self, index: u32, vlan: BridgeVlan) -> Result<(), NetlinkError> {
        let op = format!("add vlan {} to bridge port {index}", vlan.vid);
        self.ack(&op, Rtm::Setlink, NlmF::empty(), vlan_msg(index, vlan))
    }

    /// Removes VLAN `vid` from bridge port `index`.
    pub fn bridge_vlan_del(&self, index: u32, vid: u16) -> Result<(), NetlinkError> {
        let op = format!("delete vlan {vid} from bridge port {index}");
        let vlan = BridgeVlan {
            vid,
            pvid: false,
            untagged: false,
        };
        self.ack(&op, Rtm::Dellink, NlmF::empty(), vlan_msg(index, vlan))
    }

    /// The link `index` as the kernel sends it, for attributes `Link` does not carry.
    fn raw_link(&self, op: &str, index: u32) -> Result<Option<Ifinfomsg>, NetlinkError> {
        match self.get::<_, Ifinfomsg>(op, Rtm::Getlink, link_msg(index, Vec::new())) {
            Err(e) if e.errno() == libc::ENODEV => Ok(None),
            other => other,
        }
    }
}

#[cfg_attr(not(test), allow(dead_code))] // only the tests use it in this build
/// The payload of `IFLA_LINKINFO`'s member `which`, parsed.
fn info_nest(
    msg: &Ifinfomsg,
    which: IflaInfo,
) -> Result<Option<RtBuffer<u16, Buffer>>, CodecError> {
    let Some(info) = attr::find(msg.rtattrs(), Ifla::Linkinfo) else {
        return Ok(None);
    };
    let info = attr::parse_nest(info)?;
    attr::find(&info, which).map(attr::parse_nest).transpose()
}

/// An `AF_BRIDGE` link message for port `index` carrying one attribute.
fn bridge_msg(index: u32, attr: Rtattr<Ifla, Buffer>) -> Result<Ifinfomsg, CodecError> {
    Ok(IfinfomsgBuilder::default()
        .ifi_family(RtAddrFamily::from(AF_BRIDGE))
        .ifi_index(i32::try_from(index)?)
        .rtattrs([attr].into_iter().collect::<RtBuffer<_, _>>())
        .build()?)
}

fn vlan_msg(index: u32, vlan: BridgeVlan) -> Result<Ifinfomsg, CodecError> {
    let mut flags = 0u16;
    if vlan.pvid {
        flags |= BRIDGE_VLAN_INFO_PVID;
    }
    if vlan.untagged {
        flags |= BRIDGE_VLAN_INFO_UNTAGGED;
    }
    let mut info = Vec::with_capacity(4);
    info.extend_from_slice(&flags.to_ne_bytes());
    info.extend_from_slice(&vlan.vid.to_ne_bytes());
    let children = [
        attr::attr::<u16, _>(IFLA_BRIDGE_FLAGS, BRIDGE_FLAGS_MASTER)?,
        attr::attr::<u16, _>(IFLA_BRIDGE_VLAN_INFO, info.as_slice())?,
    ];
    let spec = attr::nest::<Ifla, u16>(Ifla::AfSpec, &children)?;
    bridge_msg(index, spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::tests::in_ns;
    use crate::netlink::{LinkKind, LinkSpec, VethPeer};
    use crate::netns::tests::ScratchNetns;

    /// A bridge `br0` with veth `p0` (peer `p1`) as its port; returns (bridge, port) indexes.
    fn bridge_with_port(nl: &Netlink, vlan_filtering: bool) -> Result<(u32, u32), NetlinkError> {
        nl.create_bridge("br0", Some(1400), vlan_filtering)?;
        // The port's MTU matches: a bridge follows its smallest port's MTU.
        let mut veth = LinkSpec::new("p0", LinkKind::Veth(VethPeer::new("p1")));
        veth.mtu = Some(1400);
        nl.create_link(&veth)?;
        let br = nl.link_by_name("br0")?.expect("br0");
        let port = nl.link_by_name("p0")?.expect("p0");
        nl.set_master(port.index, Some(br.index))?;
        Ok((br.index, port.index))
    }

    #[test]
    fn netlink_bridge_port_flags_round_trip() {
        let s = ScratchNetns::new();
        let (before, after, not_a_port, br) = in_ns(&s, |nl| {
            let (br, port) = bridge_with_port(nl, false).unwrap();
            let before = nl.bridge_port(port).unwrap();
            nl.set_bridge_port(
                port,
                &PortSettings {
                    hairpin: Some(true),
                    isolated: Some(true),
                    learning: Some(false),
                },
            )
            .unwrap();
            nl.set_bridge_port(port, &PortSettings::default()).unwrap();
            let after = nl.bridge_port(port).unwrap();
            (
                before,
                after,
                nl.bridge_port(br).unwrap(),
                nl.link_by_index(br).unwrap(),
            )
        });
        assert_eq!(
            before,
            Some(BridgePort {
                hairpin: false,
                isolated: false,
                learning: true
            })
        );
        assert_eq!(
            after,
            Some(BridgePort {
                hairpin: true,
                isolated: true,
                learning: false
            })
        );
        assert_eq!(not_a_port, None, "the bridge itself is no bridge port");
        let br = br.unwrap();
        assert_eq!((br.kind.as_deref(), br.mtu), (Some("bridge"), 1400));
        // iproute2 agrees.
        let link = s.ip_json(&["-d", "link", "show", "p0"]);
        let info = &link[0]["linkinfo"]["info_slave_data"];
        assert_eq!(info["hairpin"], true, "{link}");
        assert_eq!(info["isolated"], true, "{link}");
        assert_eq!(info["learning"], false, "{link}");
    }

    #[test]
    fn netlink_promisc_on_and_off() {
        let s = ScratchNetns::new();
        let (on, off) = in_ns(&s, |nl| {
            nl.create_bridge("br0", None, false).unwrap();
            let br = nl.link_by_name("br0").unwrap().unwrap();
            assert!(!br.promisc);
            nl.set_promisc(br.index, true).unwrap();
            let on = nl.link_by_index(br.index).unwrap().unwrap().promisc;
            nl.set_promisc(br.index, false).unwrap();
            (on, nl.link_by_index(br.index).unwrap().unwrap().promisc)
        });
        assert!(on && !off);
    }

    #[test]
    fn netlink_bridge_vlans_when_the_kernel_filters() {
        let s = ScratchNetns::new();
        let outcome = in_ns(&s, |nl| {
            let (br, port) = match bridge_with_port(nl, true) {
                Err(e) if e.errno() == libc::EOPNOTSUPP => return None,
                other => other.unwrap(),
            };
            assert_eq!(nl.bridge_vlan_filtering(br).unwrap(), Some(true));
            let default = nl.bridge_vlans(port).unwrap();
            nl.bridge_vlan_del(port, 1).unwrap();
            let access = BridgeVlan {
                vid: 10,
                pvid: true,
                untagged: true,
            };
            let trunk = BridgeVlan {
                vid: 20,
                pvid: false,
                untagged: false,
            };
            nl.bridge_vlan_add(port, access).unwrap();
            nl.bridge_vlan_add(port, trunk).unwrap();
            Some((default, nl.bridge_vlans(port).unwrap()))
        });
        let Some((default, configured)) = outcome else {
            eprintln!(
                "SKIP: netlink_bridge_vlans_when_the_kernel_filters because this kernel lacks bridge VLAN filtering"
            );
            assert_ne!(std::env::var("CNIBOX_VM").as_deref(), Ok("1"));
            return;
        };
        assert_eq!(
            default,
            [BridgeVlan {
                vid: 1,
                pvid: true,
                untagged: true
            }]
        );
        assert_eq!(
            configured,
            [
                BridgeVlan {
                    vid: 10,
                    pvid: true,
                    untagged: true
                },
                BridgeVlan {
                    vid: 20,
                    pvid: false,
                    untagged: false
                }
            ]
        );
    }
}
