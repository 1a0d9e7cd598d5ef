//! Traffic control for the bandwidth plugin: the `tbf` and `ingress` qdiscs, a match-all `u32`
//! filter whose `mirred` action redirects to another device, and `ifb` devices.
//!
//! neli types only the `tcmsg` header and `TCA_KIND`/`TCA_OPTIONS`; the per-qdisc,
//! per-filter and per-action payloads (`struct tc_tbf_qopt`, `tc_u32_sel`, `tc_mirred`) are
//! packed here by hand, native-endian like the kernel's uapi structs.

use neli::consts::nl::NlmF;
use neli::consts::rtnl::{Iff, Ifla, IflaInfo, RtAddrFamily, Rtm, Tca};
use neli::rtnl::{IfinfomsgBuilder, Rtattr, Tcmsg, TcmsgBuilder};
use neli::types::{Buffer, RtBuffer};

use super::attr::{self, CodecError};
use super::{Netlink, NetlinkError};

/// `TC_H_ROOT`: the parent of a root qdisc.
pub const TC_H_ROOT: u32 = 0xffff_ffff;
/// `TC_H_INGRESS`: the parent of the ingress qdisc.
pub const TC_H_INGRESS: u32 = 0xffff_fff1;
/// `ffff:`, the handle of the ingress qdisc.
pub const INGRESS_HANDLE: u32 = 0xffff_0000;

/// `ETH_P_ALL`: a filter for every protocol.
pub const ETH_P_ALL: u16 = 0x0003;

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;

const TCA_U32_CLASSID: u16 = 1;
const TCA_U32_SEL: u16 = 5;
const TCA_U32_ACT: u16 = 7;
const TC_U32_TERMINAL: u8 = 1;

const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
const TCA_MIRRED_PARMS: u16 = 2;
/// `TCA_EGRESS_REDIR`: move the packet to the target's egress.
pub const TCA_EGRESS_REDIR: i32 = 1;
/// `TC_ACT_STOLEN`: the action consumed the packet.
const TC_ACT_STOLEN: i32 = 4;

/// `tc_tbf_qopt`: two `tc_ratespec` (12 bytes each), then limit, buffer, mtu.
const TBF_QOPT_LEN: usize = 36;
/// `tc_mirred`: `tc_gen` (5 × 4 bytes), eaction, ifindex.
const MIRRED_LEN: usize = 28;

/// `TC_H_MAKE(major << 16, minor)`.
pub const fn tc_handle(major: u16, minor: u16) -> u32 {
    ((major as u32) << 16) | minor as u32
}

/// Token bucket parameters as the kernel keeps them: bytes per second, a queue limit in
/// bytes, and the bucket size in scheduler ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbf {
    pub rate: u64,
    pub limit: u32,
    pub buffer: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub index: u32,
    pub handle: u32,
    pub parent: u32,
    pub kind: String,
    /// Set for `tbf` qdiscs.
    pub tbf: Option<Tbf>,
}

/// A tc filter and what its actions redirect to, as far as this module reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub index: u32,
    pub parent: u32,
    pub priority: u16,
    /// The protocol in host byte order (`ETH_P_ALL` is 3).
    pub protocol: u16,
    pub kind: String,
    pub classid: Option<u32>,
    /// `(eaction, ifindex)` of each `mirred` action, in order.
    pub mirred: Vec<(i32, u32)>,
}

impl Netlink {
    /// The qdiscs of link `index`.
    pub fn qdiscs(&self, index: u32) -> Result<Vec<Qdisc>, NetlinkError> {
        let op = format!("list qdiscs of link {index}");
        let msgs: Vec<Tcmsg> = self.dump(&op, Rtm::Getqdisc, tc_msg(index, 0, 0, 0, Vec::new()))?;
        msgs.iter()
            .filter(|m| u32::try_from(*m.tcm_ifindex()).ok() == Some(index))
            .map(|m| parse_qdisc(m).map_err(|e| NetlinkError::codec(&op, e)))
            .collect()
    }

    /// `tc qdisc add dev INDEX parent PARENT handle HANDLE tbf ...`; EEXIST if the parent
    /// already has a qdisc of its own.
    pub fn add_tbf(
        &self,
        index: u32,
        parent: u32,
        handle: u32,
        tbf: &Tbf,
    ) -> Result<(), NetlinkError> {
        let op = format!(
            "add tbf qdisc (rate {} B/s, limit {}, buffer {}) on link {index}",
            tbf.rate, tbf.limit, tbf.buffer
        );
        let req = tbf_options(tbf).and_then(|options| {
            tc_msg(
                index,
                handle,
                parent,
                0,
                vec![attr::attr(Tca::Kind, "tbf")?, options],
            )
        });
        self.ack(&op, Rtm::Newqdisc, NlmF::CREATE | NlmF::EXCL, req)
    }

    /// `tc qdisc add dev INDEX ingress` (handle `ffff:`).
    pub fn add_ingress_qdisc(&self, index: u32) -> Result<(), NetlinkError> {
        let op = format!("add ingress qdisc on link {index}");
        let req = attr::attr(Tca::Kind, "ingress")
            .and_then(|kind| tc_msg(index, INGRESS_HANDLE, TC_H_INGRESS, 0, vec![kind]));
        self.ack(&op, Rtm::Newqdisc, NlmF::CREATE | NlmF::EXCL, req)
    }

    /// Deletes the qdisc `handle` under `parent` of link `index`; a root qdisc gives way to
    /// the device's default.
    pub fn del_qdisc(&self, index: u32, parent: u32, handle: u32) -> Result<(), NetlinkError> {
        let op = format!("delete qdisc {handle:x} of link {index}");
        self.ack(
            &op,
            Rtm::Delqdisc,
            NlmF::empty(),
            tc_msg(index, handle, parent, 0, Vec::new()),
        )
    }

    /// `tc filter add dev INDEX parent PARENT prio PRIORITY protocol PROTOCOL u32 match u32 0 0
    /// classid CLASSID action mirred egress redirect dev TARGET`.
    pub fn add_redirect_filter(
        &self,
        index: u32,
        parent: u32,
        priority: u16,
        protocol: u16,
        classid: u32,
        target: u32,
    ) -> Result<(), NetlinkError> {
        let op = format!("add u32 redirect filter from link {index} to link {target}");
        let info = (u32::from(priority) << 16) | u32::from(protocol.to_be());
        let req = redirect_options(classid, target).and_then(|options| {
            tc_msg(
                index,
                0,
                parent,
                info,
                vec![attr::attr(Tca::Kind, "u32")?, options],
            )
        });
        self.ack(&op, Rtm::Newtfilter, NlmF::CREATE | NlmF::EXCL, req)
    }

    /// The filters attached to `parent` (a qdisc handle) of link `index`.
    pub fn filters(&self, index: u32, parent: u32) -> Result<Vec<Filter>, NetlinkError> {
        let op = format!("list filters of link {index}");
        let msgs: Vec<Tcmsg> = self.dump(
            &op,
            Rtm::Gettfilter,
            tc_msg(index, 0, parent, 0, Vec::new()),
        )?;
        msgs.iter()
            .map(|m| parse_filter(m).map_err(|e| NetlinkError::codec(&op, e)))
            .collect()
    }

    /// Creates an `ifb` device, optionally up and with a transmit queue length.
    pub fn create_ifb(
        &self,
        name: &str,
        mtu: u32,
        txqlen: Option<u32>,
        up: bool,
    ) -> Result<(), NetlinkError> {
        let op = format!("create ifb {name}");
        let req = ifb_msg(name, mtu, txqlen, up);
        self.ack(&op, Rtm::Newlink, NlmF::CREATE | NlmF::EXCL, req)
    }
}

fn tc_msg(
    index: u32,
    handle: u32,
    parent: u32,
    info: u32,
    attrs: Vec<Rtattr<Tca, Buffer>>,
) -> Result<Tcmsg, CodecError> {
    Ok(TcmsgBuilder::default()
        .tcm_family(libc::AF_UNSPEC as u8)
        .tcm_ifindex(i32::try_from(index)?)
        .tcm_handle(handle)
        .tcm_parent(parent)
        .tcm_info(info)
        .rtattrs(attrs.into_iter().collect::<RtBuffer<_, _>>())
        .build()?)
}

/// `struct tc_tbf_qopt` with only the rate, limit and buffer set, as the reference sends it
/// (no rate table; kernels since 3.x compute their own). Rates of 2^32 bytes/s and more go in
/// `TCA_TBF_RATE64`, the 32-bit field then holding the truncated value.
fn tbf_options(tbf: &Tbf) -> Result<Rtattr<Tca, Buffer>, CodecError> {
    let mut qopt = [0u8; TBF_QOPT_LEN];
    qopt[8..12].copy_from_slice(&(tbf.rate as u32).to_ne_bytes());
    qopt[24..28].copy_from_slice(&tbf.limit.to_ne_bytes());
    qopt[28..32].copy_from_slice(&tbf.buffer.to_ne_bytes());
    let mut children = vec![attr::attr::<u16, _>(TCA_TBF_PARMS, &qopt[..])?];
    if tbf.rate > u64::from(u32::MAX) {
        children.push(attr::attr::<u16, _>(TCA_TBF_RATE64, tbf.rate)?);
    }
    attr::nest(Tca::Options, &children)
}

fn parse_tbf(options: &[u8]) -> Result<Option<Tbf>, CodecError> {
    let attrs = attr::parse_nest(options)?;
    let Some(qopt) = attr::find(&attrs, TCA_TBF_PARMS).filter(|q| q.len() >= TBF_QOPT_LEN) else {
        return Ok(None);
    };
    let word = |at: usize| attr::to_u32(&qopt[at..]).unwrap_or(0);
    let rate64 = attr::find(&attrs, TCA_TBF_RATE64)
        .and_then(|p| Some(u64::from_ne_bytes(p.get(..8)?.try_into().ok()?)));
    Ok(Some(Tbf {
        rate: rate64.unwrap_or_else(|| u64::from(word(8))),
        limit: word(24),
        buffer: word(28),
    }))
}

/// `TCA_OPTIONS` of a u32 filter matching every packet (one all-zero key, terminal), with a
/// class id and one `mirred` egress redirect that steals the packet.
fn redirect_options(classid: u32, target: u32) -> Result<Rtattr<Tca, Buffer>, CodecError> {
    // tc_u32_sel: flags, offshift, nkeys, pad, offmask, off, offoff, hoff, hmask; a key of
    // mask, val, off, offmask follows.
    let mut sel = [0u8; 32];
    sel[0] = TC_U32_TERMINAL;
    sel[2] = 1;
    let mut mirred = [0u8; MIRRED_LEN];
    mirred[8..12].copy_from_slice(&TC_ACT_STOLEN.to_ne_bytes());
    mirred[20..24].copy_from_slice(&TCA_EGRESS_REDIR.to_ne_bytes());
    mirred[24..28].copy_from_slice(&target.to_ne_bytes());
    let parms = attr::attr::<u16, _>(TCA_MIRRED_PARMS, &mirred[..])?;
    let action = attr::nest::<u16, u16>(
        1u16,
        &[
            attr::attr::<u16, _>(TCA_ACT_KIND, "mirred")?,
            attr::nest::<u16, u16>(TCA_ACT_OPTIONS, &[parms])?,
        ],
    )?;
    attr::nest(
        Tca::Options,
        &[
            attr::attr::<u16, _>(TCA_U32_SEL, &sel[..])?,
            attr::attr::<u16, _>(TCA_U32_CLASSID, classid)?,
            attr::nest::<u16, u16>(TCA_U32_ACT, &[action])?,
        ],
    )
}

fn parse_qdisc(msg: &Tcmsg) -> Result<Qdisc, CodecError> {
    let attrs = msg.rtattrs();
    let kind = attr::find(attrs, Tca::Kind)
        .and_then(attr::to_string)
        .unwrap_or_default();
    let tbf = match attr::find(attrs, Tca::Options) {
        Some(options) if kind == "tbf" => parse_tbf(options)?,
        _ => None,
    };
    Ok(Qdisc {
        index: u32::try_from(*msg.tcm_ifindex())?,
        handle: *msg.tcm_handle(),
        parent: *msg.tcm_parent(),
        kind,
        tbf,
    })
}

fn parse_filter(msg: &Tcmsg) -> Result<Filter, CodecError> {
    let attrs = msg.rtattrs();
    let kind = attr::find(attrs, Tca::Kind)
        .and_then(attr::to_string)
        .unwrap_or_default();
    let info = *msg.tcm_info();
    let mut filter = Filter {
        index: u32::try_from(*msg.tcm_ifindex())?,
        parent: *msg.tcm_parent(),
        priority: (info >> 16) as u16,
        protocol: u16::from_be((info & 0xffff) as u16),
        kind,
        classid: None,
        mirred: Vec::new(),
    };
    if filter.kind != "u32" {
        return Ok(filter);
    }
    let Some(options) = attr::find(attrs, Tca::Options) else {
        return Ok(filter);
    };
    let options = attr::parse_nest(options)?;
    filter.classid = attr::find(&options, TCA_U32_CLASSID).and_then(attr::to_u32);
    if let Some(actions) = attr::find(&options, TCA_U32_ACT) {
        for action in attr::parse_nest(actions)?.iter() {
            let action = attr::parse_nest(action.rta_payload().as_ref())?;
            let kind = attr::find(&action, TCA_ACT_KIND).and_then(attr::to_string);
            let Some(opts) = attr::find(&action, TCA_ACT_OPTIONS) else {
                continue;
            };
            if kind.as_deref() != Some("mirred") {
                continue;
            }
            let opts = attr::parse_nest(opts)?;
            if let Some(parms) = attr::find(&opts, TCA_MIRRED_PARMS).filter(|p| p.len() >= 28) {
                let eaction = attr::to_i32(&parms[20..]).unwrap_or(0);
                let ifindex = attr::to_u32(&parms[24..]).unwrap_or(0);
                filter.mirred.push((eaction, ifindex));
            }
        }
    }
    Ok(filter)
}

fn ifb_msg(
    name: &str,
    mtu: u32,
    txqlen: Option<u32>,
    up: bool,
) -> Result<neli::rtnl::Ifinfomsg, CodecError> {
    let mut attrs = vec![attr::attr(Ifla::Ifname, name)?, attr::attr(Ifla::Mtu, mtu)?];
    if let Some(txqlen) = txqlen {
        attrs.push(attr::attr(Ifla::Txqlen, txqlen)?);
    }
    let kind = attr::attr::<IflaInfo, _>(IflaInfo::Kind, "ifb")?;
    attrs.push(attr::nest(Ifla::Linkinfo, &[kind])?);
    let flags = if up { Iff::UP } else { Iff::empty() };
    Ok(IfinfomsgBuilder::default()
        .ifi_family(RtAddrFamily::Unspecified)
        .ifi_flags(flags)
        .ifi_change(flags)
        .rtattrs(attrs.into_iter().collect::<RtBuffer<_, _>>())
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::tests::in_ns;
    use crate::netlink::{LinkKind, LinkSpec, VethPeer};
    use crate::netns::tests::ScratchNetns;
    use std::process::Command;

    fn tc_json(s: &ScratchNetns, args: &[&str]) -> serde_json::Value {
        let out = Command::new("tc")
            .args(["-j", "-n", &s.name])
            .args(args)
            .output()
            .expect("run tc");
        assert!(out.status.success(), "tc {args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).expect("tc -j output is JSON")
    }

    #[test]
    fn netlink_tc_tbf_ingress_and_redirect_to_ifb() {
        let s = ScratchNetns::new();
        let tbf = Tbf {
            rate: 125_000,
            limit: 128_125,
            buffer: 1_000_000,
        };
        let (veth, ifb) = in_ns(&s, |nl| {
            nl.create_link(&LinkSpec::new(
                "tcv0",
                LinkKind::Veth(VethPeer::new("tcv1")),
            ))
            .unwrap();
            let veth = nl.link_by_name("tcv0").unwrap().unwrap().index;
            nl.create_ifb("tcifb0", 1400, Some(0), true).unwrap();
            let again = nl.create_ifb("tcifb0", 1400, Some(0), true).unwrap_err();
            assert_eq!(again.errno(), libc::EEXIST);
            let ifb = nl.link_by_name("tcifb0").unwrap().unwrap();
            assert!(ifb.up && ifb.mtu == 1400 && ifb.kind.as_deref() == Some("ifb"));

            nl.add_tbf(veth, TC_H_ROOT, tc_handle(1, 0), &tbf).unwrap();
            nl.add_ingress_qdisc(veth).unwrap();
            nl.add_redirect_filter(
                veth,
                INGRESS_HANDLE,
                1,
                ETH_P_ALL,
                tc_handle(1, 1),
                ifb.index,
            )
            .unwrap();
            (veth, ifb.index)
        });

        let shown = tc_json(&s, &["qdisc", "show", "dev", "tcv0"]);
        let kinds: Vec<&str> = shown
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|q| q["kind"].as_str())
            .collect();
        assert_eq!(kinds, ["tbf", "ingress"], "{shown}");
        assert_eq!(shown[0]["handle"], "1:");
        assert_eq!(shown[0]["options"]["rate"], 125_000);
        let filters = tc_json(&s, &["filter", "show", "dev", "tcv0", "ingress"]);
        let text = filters.to_string();
        assert!(text.contains("\"to_dev\":\"tcifb0\""), "{text}");

        in_ns(&s, |nl| {
            let qdiscs = nl.qdiscs(veth).unwrap();
            let root = qdiscs.iter().find(|q| q.parent == TC_H_ROOT).unwrap();
            assert_eq!((root.kind.as_str(), root.handle), ("tbf", tc_handle(1, 0)));
            assert_eq!(root.tbf, Some(tbf));
            assert!(
                qdiscs
                    .iter()
                    .any(|q| q.kind == "ingress" && q.handle == INGRESS_HANDLE)
            );
            let filters = nl.filters(veth, INGRESS_HANDLE).unwrap();
            let redirect = filters.iter().find(|f| !f.mirred.is_empty()).unwrap();
            assert_eq!(redirect.mirred, [(TCA_EGRESS_REDIR, ifb)]);
            assert_eq!((redirect.priority, redirect.protocol), (1, ETH_P_ALL));
            assert_eq!(redirect.classid, Some(tc_handle(1, 1)));

            nl.del_qdisc(veth, TC_H_ROOT, tc_handle(1, 0)).unwrap();
            nl.del_qdisc(veth, TC_H_INGRESS, INGRESS_HANDLE).unwrap();
            let left = nl.qdiscs(veth).unwrap();
            assert!(
                left.iter().all(|q| q.kind != "tbf" && q.kind != "ingress"),
                "{left:?}"
            );
            let gone = nl
                .del_qdisc(veth, TC_H_INGRESS, INGRESS_HANDLE)
                .unwrap_err();
            assert!(
                matches!(gone.errno(), libc::ENOENT | libc::EINVAL),
                "{gone}"
            );
        });
    }

    #[test]
    fn netlink_tc_rate64_round_trips() {
        let s = ScratchNetns::new();
        let tbf = Tbf {
            rate: 10_000_000_000,
            limit: 250_000_000,
            buffer: 100,
        };
        in_ns(&s, |nl| {
            nl.create_ifb("tcifb1", 1500, None, false).unwrap();
            let ifb = nl.link_by_name("tcifb1").unwrap().unwrap();
            assert!(!ifb.up);
            nl.add_tbf(ifb.index, TC_H_ROOT, tc_handle(1, 0), &tbf)
                .unwrap();
            let root = nl
                .qdiscs(ifb.index)
                .unwrap()
                .into_iter()
                .find(|q| q.kind == "tbf");
            assert_eq!(root.unwrap().tbf, Some(tbf));
        });
    }

    #[test]
    fn netlink_tc_handles_and_payload_sizes() {
        assert_eq!(tc_handle(1, 0), 0x0001_0000);
        assert_eq!(tc_handle(0xffff, 0), INGRESS_HANDLE);
        let opts = tbf_options(&Tbf {
            rate: 1,
            limit: 2,
            buffer: 3,
        })
        .unwrap();
        // nest header 4 + (4 + 36) for TCA_TBF_PARMS.
        assert_eq!(opts.rta_payload().as_ref().len(), 40);
        let parsed = parse_tbf(opts.rta_payload().as_ref()).unwrap().unwrap();
        assert_eq!((parsed.rate, parsed.limit, parsed.buffer), (1, 2, 3));
        assert_eq!(parse_tbf(&[]).unwrap(), None);
    }
}
