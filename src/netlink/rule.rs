//! Policy routing rules (`ip rule`): list, add and delete, with priority, table and source.

use std::io::Cursor;

use ipnetwork::IpNetwork;
use neli::ToBytes;
use neli::consts::nl::NlmF;
use neli::consts::rtnl::{FrAct, Frattr, Frf, RtAddrFamily, RtTable, Rtm};
use neli::rtnl::{Fibmsg, FibmsgBuilder, Rtattr};
use neli::types::{Buffer, RtBuffer};

use super::addr::Family;
use super::attr::{self, CodecError};
use super::consts::RT_TABLE_UNSPEC;
use super::{Netlink, NetlinkError};

/// `FR_ACT_TO_TBL`: look the packet up in `table`.
const FR_ACT_TO_TBL: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub family: Family,
    /// None on add lets the kernel pick (the free slot just below the first non-zero one).
    pub priority: Option<u32>,
    pub table: u32,
    /// `from PREFIX`; None is `from all`.
    pub src: Option<IpNetwork>,
    /// `to PREFIX`; None is `to all`.
    pub dst: Option<IpNetwork>,
    /// `FR_ACT_*`; 1 (`lookup`) for rules made by [`Rule::lookup_from`].
    pub action: u8,
}

impl Rule {
    /// `from SRC lookup TABLE`, the priority left to the kernel.
    pub fn lookup_from(src: IpNetwork, table: u32) -> Rule {
        Rule {
            family: Family::of(src.ip()),
            priority: None,
            table,
            src: Some(src),
            dst: None,
            action: FR_ACT_TO_TBL,
        }
    }
}

impl Netlink {
    /// Every rule of one family, or of both.
    pub fn rules(&self, family: Option<Family>) -> Result<Vec<Rule>, NetlinkError> {
        let op = "list rules";
        let req = fib_msg(Family::to_af(family), 0, 0, RT_TABLE_UNSPEC, 0, Vec::new())
            .and_then(|m| to_buffer(&m));
        let msgs: Vec<Fibmsg> = self.dump(op, Rtm::Getrule, req)?;
        msgs.iter()
            .filter_map(|m| parse_rule(m).transpose())
            .collect::<Result<_, _>>()
            .map_err(|e| NetlinkError::codec(op, e))
    }

    /// Adds `rule`; EEXIST if an identical one is there.
    pub fn add_rule(&self, rule: &Rule) -> Result<(), NetlinkError> {
        let op = format!("add rule {}", describe(rule));
        let req = rule_msg(rule).and_then(|m| to_buffer(&m));
        self.ack(&op, Rtm::Newrule, NlmF::CREATE | NlmF::EXCL, req)
    }

    /// Deletes the rule matching every field of `rule` that is set (ENOENT if none does).
    pub fn del_rule(&self, rule: &Rule) -> Result<(), NetlinkError> {
        let op = format!("delete rule {}", describe(rule));
        let req = rule_msg(rule).and_then(|m| to_buffer(&m));
        self.ack(&op, Rtm::Delrule, NlmF::empty(), req)
    }
}

fn af(family: Family) -> RtAddrFamily {
    Family::to_af(Some(family))
}

/// neli's `Fibmsg` is not `Clone`, which dumps need; its bytes are.
fn to_buffer<T: ToBytes>(msg: &T) -> Result<Buffer, CodecError> {
    let mut out = Cursor::new(Vec::new());
    msg.to_bytes(&mut out)?;
    Ok(Buffer::from(out.into_inner()))
}

fn fib_msg(
    family: RtAddrFamily,
    dst_len: u8,
    src_len: u8,
    table: u32,
    action: u8,
    attrs: Vec<Rtattr<Frattr, Buffer>>,
) -> Result<Fibmsg, CodecError> {
    // Table ids above 255 only fit in FRA_TABLE.
    let table_u8 = u8::try_from(table).unwrap_or(RT_TABLE_UNSPEC as u8);
    Ok(FibmsgBuilder::default()
        .fib_family(family)
        .fib_dst_len(dst_len)
        .fib_src_len(src_len)
        .fib_tos(0)
        .fib_table(RtTable::from(table_u8))
        .fib_action(FrAct::from(action))
        .fib_flags(Frf::empty())
        .rtattrs(attrs.into_iter().collect::<RtBuffer<_, _>>())
        .build()?)
}

fn rule_msg(rule: &Rule) -> Result<Fibmsg, CodecError> {
    let mut attrs = vec![attr::attr(Frattr::Table, rule.table)?];
    if let Some(priority) = rule.priority {
        attrs.push(attr::attr(Frattr::Priority, priority)?);
    }
    for (ty, net) in [(Frattr::Src, rule.src), (Frattr::Dst, rule.dst)] {
        if let Some(net) = net.filter(|n| n.prefix() > 0) {
            attrs.push(attr::attr(ty, attr::ip_octets(net.ip()))?);
        }
    }
    let len = |net: Option<IpNetwork>| net.map_or(0, |n| n.prefix());
    fib_msg(
        af(rule.family),
        len(rule.dst),
        len(rule.src),
        rule.table,
        rule.action,
        attrs,
    )
}

/// None for families other than IPv4 and IPv6.
fn parse_rule(msg: &Fibmsg) -> Result<Option<Rule>, CodecError> {
    let family = match i32::from(u8::from(*msg.fib_family())) {
        libc::AF_INET => Family::V4,
        libc::AF_INET6 => Family::V6,
        _ => return Ok(None),
    };
    let attrs = msg.rtattrs();
    let prefix = |ty: Frattr, len: u8| -> Result<Option<IpNetwork>, CodecError> {
        match attr::find(attrs, ty).and_then(attr::to_ip) {
            Some(ip) => Ok(Some(IpNetwork::new(ip, len)?)),
            None => Ok(None),
        }
    };
    Ok(Some(Rule {
        family,
        priority: attr::find(attrs, Frattr::Priority).and_then(attr::to_u32),
        table: attr::find(attrs, Frattr::Table)
            .and_then(attr::to_u32)
            .unwrap_or_else(|| u32::from(u8::from(*msg.fib_table()))),
        src: prefix(Frattr::Src, *msg.fib_src_len())?,
        dst: prefix(Frattr::Dst, *msg.fib_dst_len())?,
        action: u8::from(*msg.fib_action()),
    }))
}

fn describe(rule: &Rule) -> String {
    let mut text = match rule.src {
        Some(src) => format!("from {src}"),
        None => "from all".to_string(),
    };
    if let Some(dst) = rule.dst {
        text += &format!(" to {dst}");
    }
    text += &format!(" lookup {}", rule.table);
    if let Some(priority) = rule.priority {
        text += &format!(" pref {priority}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::tests::{in_ns, net};
    use crate::netns::tests::ScratchNetns;

    #[test]
    fn netlink_rule_add_list_del_both_families() {
        let s = ScratchNetns::new();
        let (v4, v6) = (
            Rule::lookup_from(net("10.9.0.2/32"), 100),
            Rule {
                priority: Some(1234),
                ..Rule::lookup_from(net("fd00::2/128"), 70000)
            },
        );
        let listed = in_ns(&s, |nl| {
            nl.add_rule(&v4).unwrap();
            nl.add_rule(&v6).unwrap();
            let again = nl.add_rule(&v6).unwrap_err();
            assert_eq!(again.errno(), libc::EEXIST, "{again}");
            nl.rules(None).unwrap()
        });
        let ours: Vec<&Rule> = listed.iter().filter(|r| r.src.is_some()).collect();
        assert_eq!(ours.len(), 2, "{listed:?}");
        let got4 = ours.iter().find(|r| r.family == Family::V4).unwrap();
        assert_eq!(got4.table, 100);
        assert_eq!(got4.src, Some(net("10.9.0.2/32")));
        // The kernel picked the slot below main's 32766.
        assert_eq!(got4.priority, Some(32765));
        let got6 = ours.iter().find(|r| r.family == Family::V6).unwrap();
        assert_eq!((got6.table, got6.priority), (70000, Some(1234)));

        let shown = s.ip_json(&["-4", "rule", "show"]);
        assert!(
            shown
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["src"] == "10.9.0.2" && r["table"] == "100"),
            "{shown}"
        );

        in_ns(&s, |nl| {
            for rule in nl.rules(None).unwrap().iter().filter(|r| r.src.is_some()) {
                nl.del_rule(rule).unwrap();
            }
            let gone = nl.del_rule(&v4).unwrap_err();
            assert_eq!(gone.errno(), libc::ENOENT, "{gone}");
            assert!(nl.rules(None).unwrap().iter().all(|r| r.src.is_none()));
            assert_eq!(nl.rules(Some(Family::V6)).unwrap().len(), 2);
        });
    }
}
