//! Root-only tests. Each works in its own throwaway named netns (never the machine's) and
//! checks the result with `ip -j -n NAME ...`.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::Value;

use super::*;
use crate::netns::tests::ScratchNetns;

/// Runs `f` with a netlink socket opened inside `scratch`. Refuses to run anywhere else, so
/// a broken `NetNs::run` fails the tests instead of rewiring the machine's own network.
pub(crate) fn in_ns<T>(scratch: &ScratchNetns, f: impl FnOnce(&Netlink) -> T) -> T {
    scratch
        .ns
        .run(|| {
            let here = crate::netns::NetNs::current().expect("open own netns");
            assert!(here.is_same(&scratch.ns), "not inside the scratch netns");
            f(&Netlink::open().expect("open netlink in scratch netns"))
        })
        .expect("run in scratch netns")
}

fn ip_links(scratch: &ScratchNetns) -> Vec<Value> {
    scratch
        .ip_json(&["link", "show"])
        .as_array()
        .unwrap()
        .clone()
}

fn ip_link(scratch: &ScratchNetns, name: &str) -> Option<Value> {
    ip_links(scratch).into_iter().find(|l| l["ifname"] == name)
}

pub(crate) fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

/// Creates the veth pair `a`/`b` in the socket's namespace and returns both indexes.
fn veth_pair(nl: &Netlink, a: &str, b: &str) -> (u32, u32) {
    nl.create_link(&LinkSpec::new(a, LinkKind::Veth(VethPeer::new(b))))
        .unwrap();
    let a = nl.link_by_name(a).unwrap().expect("veth end a");
    let b = nl.link_by_name(b).unwrap().expect("veth end b");
    (a.index, b.index)
}

#[test]
fn netlink_lo_up_down() {
    let s = ScratchNetns::new();
    let lo = in_ns(&s, |nl| {
        let lo = nl.link_by_name("lo").unwrap().expect("lo exists");
        assert!(!lo.up, "lo starts down in a new netns");
        nl.set_up(lo.index, true).unwrap();
        lo
    });
    assert_eq!(lo.index, 1);
    assert_eq!(lo.mtu, 65536);
    let flags = ip_link(&s, "lo").unwrap()["flags"].clone();
    assert!(flags.as_array().unwrap().contains(&"UP".into()), "{flags}");

    let up_after = in_ns(&s, |nl| {
        let up = nl.link_by_index(lo.index).unwrap().unwrap().up;
        nl.set_up(lo.index, false).unwrap();
        up
    });
    assert!(up_after);
    let flags = ip_link(&s, "lo").unwrap()["flags"].clone();
    assert!(!flags.as_array().unwrap().contains(&"UP".into()), "{flags}");
}

#[test]
fn netlink_missing_link_is_none() {
    let s = ScratchNetns::new();
    let (by_name, by_index) = in_ns(&s, |nl| {
        (
            nl.link_by_name("nosuch0").unwrap(),
            nl.link_by_index(4242).unwrap(),
        )
    });
    assert_eq!(by_name, None);
    assert_eq!(by_index, None);
}

#[test]
fn netlink_veth_peer_created_in_other_netns() {
    let host = ScratchNetns::new();
    let container = ScratchNetns::new();
    let peer_mac = [0x02, 0x42, 0x0a, 0x00, 0x00, 0x07];
    let (host_end, peer_index_seen) = in_ns(&host, |nl| {
        let mut peer = VethPeer::new("eth0");
        peer.netns = Some(container.ns.fd());
        peer.mac = Some(peer_mac);
        peer.mtu = Some(1400);
        let mut spec = LinkSpec::new("vh0", LinkKind::Veth(peer));
        spec.mtu = Some(1400);
        nl.create_link(&spec).unwrap();
        let host_end = nl.link_by_name("vh0").unwrap().expect("host end");
        // The peer is not in this namespace.
        assert_eq!(nl.link_by_name("eth0").unwrap(), None);
        (host_end.clone(), host_end.peer_index)
    });
    assert_eq!(host_end.kind.as_deref(), Some("veth"));
    assert_eq!(host_end.mtu, 1400);
    assert!(host_end.link_netnsid.is_some(), "{host_end:?}");

    let peer = in_ns(&container, |nl| {
        nl.link_by_name("eth0").unwrap().expect("peer")
    });
    assert_eq!(Some(peer.index), peer_index_seen);
    assert_eq!(peer.mac, Some(peer_mac));
    assert_eq!(peer.mtu, 1400);
    let json = ip_link(&container, "eth0").expect("ip sees eth0 in the container netns");
    assert_eq!(json["address"], "02:42:0a:00:00:07");
    assert_eq!(json["mtu"], 1400);
}

#[test]
fn netlink_move_link_to_other_netns() {
    let a = ScratchNetns::new();
    let b = ScratchNetns::new();
    in_ns(&a, |nl| {
        let (_, moving) = veth_pair(nl, "stay0", "move0");
        nl.move_to_netns(moving, b.ns.fd()).unwrap();
        assert_eq!(nl.link_by_name("move0").unwrap(), None);
    });
    assert!(ip_link(&a, "move0").is_none());
    assert!(ip_link(&a, "stay0").is_some());
    let moved = ip_link(&b, "move0").expect("move0 arrived in b");
    assert_eq!(moved["link_netnsid"], 0, "{moved}");
}

#[test]
fn netlink_bridge_and_master() {
    let s = ScratchNetns::new();
    let (bridge, port, all) = in_ns(&s, |nl| {
        nl.create_link(&LinkSpec::new("br-t", LinkKind::Bridge))
            .unwrap();
        let bridge = nl.link_by_name("br-t").unwrap().expect("bridge");
        let (port, _) = veth_pair(nl, "port0", "port1");
        nl.set_master(port, Some(bridge.index)).unwrap();
        let all = nl.links().unwrap();
        (bridge, port, all)
    });
    assert_eq!(bridge.kind.as_deref(), Some("bridge"));
    let names: Vec<_> = all.iter().map(|l| l.name.as_str()).collect();
    for name in ["lo", "br-t", "port0", "port1"] {
        assert!(names.contains(&name), "{names:?}");
    }
    let port_link = all.iter().find(|l| l.index == port).unwrap();
    assert_eq!(port_link.master, Some(bridge.index));
    assert_eq!(ip_link(&s, "port0").unwrap()["master"], "br-t");

    let released = in_ns(&s, |nl| {
        nl.set_master(port, None).unwrap();
        nl.link_by_index(port).unwrap().unwrap()
    });
    assert_eq!(released.master, None);
    assert!(ip_link(&s, "port0").unwrap().get("master").is_none());
}

#[test]
fn netlink_link_settings() {
    let s = ScratchNetns::new();
    let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    let (index, peer) = in_ns(&s, |nl| {
        let (index, peer) = veth_pair(nl, "set0", "set1");
        nl.rename(index, "renamed0").unwrap();
        nl.set_mtu(index, 1280).unwrap();
        nl.set_mac(index, mac).unwrap();
        nl.set_alias(index, "cnibox test").unwrap();
        (index, peer)
    });
    let json = ip_link(&s, "renamed0").expect("renamed link");
    assert_eq!(json["mtu"], 1280);
    assert_eq!(json["address"], "02:11:22:33:44:55");
    assert_eq!(json["ifalias"], "cnibox test");
    assert!(ip_link(&s, "set0").is_none());

    let (seen, cleared) = in_ns(&s, |nl| {
        let seen = nl.link_by_index(index).unwrap().unwrap();
        nl.set_alias(index, "").unwrap();
        let cleared = nl.link_by_index(index).unwrap().unwrap();
        nl.delete_link(index).unwrap();
        (seen, cleared)
    });
    assert_eq!(seen.name, "renamed0");
    assert_eq!(seen.mtu, 1280);
    assert_eq!(seen.mac, Some(mac));
    assert_eq!(seen.alias.as_deref(), Some("cnibox test"));
    assert_eq!(cleared.alias, None);
    // Deleting one veth end takes the other with it.
    let names: Vec<_> = ip_links(&s).iter().map(|l| l["ifname"].clone()).collect();
    assert_eq!(names, ["lo"]);
    let gone = in_ns(&s, |nl| nl.link_by_index(peer).unwrap());
    assert_eq!(gone, None);
}

#[test]
fn netlink_create_existing_link_is_eexist() {
    let s = ScratchNetns::new();
    let err = in_ns(&s, |nl| {
        nl.create_link(&LinkSpec::new("dup0", LinkKind::Bridge))
            .unwrap();
        nl.create_link(&LinkSpec::new("dup0", LinkKind::Bridge))
            .unwrap_err()
    });
    assert_eq!(err.errno(), libc::EEXIST, "{err}");
    assert!(err.to_string().starts_with("create bridge dup0: "), "{err}");
}

#[test]
fn netlink_addresses_add_list_delete() {
    let s = ScratchNetns::new();
    let v4 = net("10.9.8.7/24");
    let v6 = net("fd00:9::7/64");
    let (index, listed_v4, listed_v6, listed_all, dup) = in_ns(&s, |nl| {
        let (index, other) = veth_pair(nl, "addr0", "addr1");
        nl.add_address(index, v4, false).unwrap();
        nl.add_address(index, v6, true).unwrap();
        nl.add_address(other, net("10.9.8.8/24"), false).unwrap();
        (
            index,
            nl.addresses(Some(index), Some(Family::V4)).unwrap(),
            nl.addresses(Some(index), Some(Family::V6)).unwrap(),
            nl.addresses(None, None).unwrap(),
            nl.add_address(index, v4, false).unwrap_err(),
        )
    });
    assert_eq!(
        listed_v4.iter().map(|a| a.addr).collect::<Vec<_>>(),
        [v4],
        "kernel-side filter by link and family"
    );
    assert_eq!(listed_v4[0].index, index);
    assert_eq!(listed_v4[0].scope, RT_SCOPE_UNIVERSE);
    let v6_entry = listed_v6.iter().find(|a| a.addr == v6).expect("v6 listed");
    assert_ne!(
        v6_entry.flags & consts::IFA_F_NODAD,
        0,
        "nodad flag: {v6_entry:?}"
    );
    assert!(listed_v6.iter().all(|a| a.index == index));
    assert!(listed_all.iter().any(|a| a.addr == net("10.9.8.8/24")));
    assert_eq!(dup.errno(), libc::EEXIST, "{dup}");

    let json = s.ip_json(&["addr", "show", "dev", "addr0"]);
    let locals: Vec<_> = json[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    assert!(locals.contains(&"10.9.8.7/24".to_string()), "{locals:?}");
    assert!(locals.contains(&"fd00:9::7/64".to_string()), "{locals:?}");

    let (left, again) = in_ns(&s, |nl| {
        nl.del_address(index, v4).unwrap();
        nl.del_address(index, v6).unwrap();
        (
            nl.addresses(Some(index), None).unwrap(),
            nl.del_address(index, v4).unwrap_err(),
        )
    });
    assert!(
        left.iter().all(|a| a.addr != v4 && a.addr != v6),
        "{left:?}"
    );
    assert_eq!(again.errno(), libc::EADDRNOTAVAIL, "{again}");
    let json = s.ip_json(&["addr", "show", "dev", "addr0"]);
    assert!(!json.to_string().contains("10.9.8.7"), "{json}");
}

#[test]
fn netlink_routes_add_list_delete() {
    let s = ScratchNetns::new();
    let mut v4 = Route::new(net("192.168.77.0/24"));
    v4.gateway = Some("10.20.0.2".parse().unwrap());
    v4.priority = Some(50);
    v4.mtu = Some(1400);
    v4.advmss = Some(1360);
    let mut v6 = Route::new(net("fd00:77::/64"));
    v6.gateway = Some("fd00:20::2".parse().unwrap());
    let mut big_table = Route::new(net("0.0.0.0/0"));
    big_table.gateway = v4.gateway;
    big_table.table = 1000;

    let (index, main_v4, main_v6, table_1000, missing_table, dup) = in_ns(&s, |nl| {
        let (index, peer) = veth_pair(nl, "rt0", "rt1");
        nl.set_up(index, true).unwrap();
        nl.set_up(peer, true).unwrap();
        nl.add_address(index, net("10.20.0.1/24"), false).unwrap();
        nl.add_address(index, net("fd00:20::1/64"), true).unwrap();
        v4.oif = Some(index);
        v6.oif = Some(index);
        big_table.oif = Some(index);
        nl.add_route(&v4).unwrap();
        nl.add_route(&v6).unwrap();
        nl.add_route(&big_table).unwrap();
        (
            index,
            nl.routes(Some(Family::V4), Some(RT_TABLE_MAIN), Some(index))
                .unwrap(),
            nl.routes(Some(Family::V6), Some(RT_TABLE_MAIN), None)
                .unwrap(),
            nl.routes(Some(Family::V4), Some(1000), None).unwrap(),
            nl.routes(Some(Family::V4), Some(4242), None).unwrap(),
            nl.add_route(&v4).unwrap_err(),
        )
    });
    v4.oif = Some(index);
    v6.oif = Some(index);
    big_table.oif = Some(index);

    assert!(main_v4.contains(&v4), "{main_v4:#?}");
    // The kernel's own prefix route for the address, in the same table and device.
    let connected = main_v4
        .iter()
        .find(|r| r.dst == net("10.20.0.0/24"))
        .expect("prefix route");
    assert_eq!(connected.scope, RT_SCOPE_LINK);
    assert_eq!(connected.protocol, 2, "proto kernel");
    assert!(
        main_v4
            .iter()
            .all(|r| r.table == RT_TABLE_MAIN && r.oif == Some(index))
    );
    let listed_v6 = main_v6.iter().find(|r| r.dst == v6.dst).expect("v6 route");
    assert_eq!(listed_v6.gateway, v6.gateway);
    assert_eq!(listed_v6.priority, Some(1024), "kernel default v6 metric");
    assert_eq!(table_1000, [big_table.clone()]);
    assert!(missing_table.is_empty());
    assert_eq!(dup.errno(), libc::EEXIST, "{dup}");

    let json = s.ip_json(&["route", "show", "192.168.77.0/24"]);
    assert_eq!(json[0]["gateway"], "10.20.0.2", "{json}");
    assert_eq!(json[0]["metric"], 50, "{json}");
    let json = s.ip_json(&["route", "show", "table", "1000"]);
    assert_eq!(json[0]["dst"], "default", "{json}");

    let left = in_ns(&s, |nl| {
        nl.del_route(&v4).unwrap();
        nl.del_route(&v6).unwrap();
        nl.del_route(&big_table).unwrap();
        let gone = nl.del_route(&v4).unwrap_err();
        assert_eq!(gone.errno(), libc::ESRCH, "{gone}");
        nl.routes(None, None, Some(index)).unwrap()
    });
    let dsts: Vec<IpNetwork> = left.iter().map(|r| r.dst).collect();
    for removed in [v4.dst, v6.dst, big_table.dst] {
        assert!(!dsts.contains(&removed), "{dsts:?}");
    }
    assert!(
        s.ip_json(&["route", "show", "table", "1000"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn netlink_error_carries_extack() {
    let s = ScratchNetns::new();
    let mut route = Route::new(net("198.51.100.0/24"));
    route.gateway = Some(IpAddr::from([192, 0, 2, 1]));
    let err = in_ns(&s, |nl| nl.add_route(&route).unwrap_err());
    assert_eq!(err.errno(), libc::ENETUNREACH, "{err}");
    let extack = err.extack().expect("kernel explains the failure");
    assert!(!extack.is_empty());
    let text = err.to_string();
    assert!(
        text.starts_with("add route 198.51.100.0/24 via 192.0.2.1: "),
        "{text}"
    );
    assert!(text.contains("(os error 101)"), "{text}");
    assert!(text.ends_with(extack), "{text}");
}
