//! vrf through its applet link, run inside a throwaway host namespace against container
//! namespaces (a veth pair made with `ip`, or interfaces made by our ptp): the interface
//! enslaved and its routes recreated in the VRF's table at every spec version from 0.3.1,
//! IPv6 addresses the kernel drops on enslaving restored, traffic through the VRF, two
//! interfaces sharing one VRF, DEL keeping the VRF while a member remains and idempotent when
//! the interface, the VRF or the namespace is gone, table picking and conflicts, and a
//! differential run against Debian's Go vrf (v1.1.1, which moves no routes).
//!
//! Tests that create a VRF need the vrf link kind: they SKIP on kernels without it and run in
//! the full-kernel VM lane (tests/vm/). The refusals and the DELs with nothing to undo run
//! everywhere.

mod chain_env;
mod common;
mod plugin_env;

use chain_env::*;
use common::*;
use plugin_env::*;

const VERSIONS: [&str; 4] = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The pair: the host end has 10.81.0.1/24 and fd81::1/64; eth0 has 10.81.0.2/24 and
/// fd81::2/64 with default routes via the host end, one more IPv4 route via a second gateway,
/// and a second interface `eth1` (a veth pair inside the container) for the conflicts.
fn vrf_pair(tag: &str) -> Pair {
    Pair::setup(
        tag,
        &[],
        &[
            &["addr", "add", "10.81.0.1/24", "dev", "hv0"],
            &["addr", "add", "fd81::1/64", "dev", "hv0", "nodad"],
            &["link", "set", "hv0", "up"],
        ],
        &[
            &["link", "set", "lo", "up"],
            &["link", "set", "eth0", "up"],
            &["addr", "add", "10.81.0.2/24", "dev", "eth0"],
            &["addr", "add", "fd81::2/64", "dev", "eth0", "nodad"],
            &["route", "add", "default", "via", "10.81.0.1"],
            &["route", "add", "10.99.0.0/16", "via", "10.81.0.254"],
            &["-6", "route", "add", "default", "via", "fd81::1"],
            &[
                "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p",
            ],
        ],
    )
}

fn prev_result(version: &str, sandbox: &str) -> Value {
    json!({
        "cniVersion": version,
        "interfaces": [{"name": "hv0"}, {"name": "eth0", "sandbox": sandbox}],
        "ips": [
            {"address": "10.81.0.2/24", "gateway": "10.81.0.1", "interface": 1},
            {"address": "fd81::2/64", "gateway": "fd81::1", "interface": 1}
        ]
    })
}

fn config(version: &str, vrf: &str, prev: Option<Value>) -> Value {
    let mut conf =
        json!({"cniVersion": version, "name": "vrf-test", "type": "vrf", "vrfname": vrf});
    if let Some(prev) = prev {
        conf["prevResult"] = prev;
    }
    conf
}

/// The master of `dev` in `ns`, if any.
fn master_of(ns: &str, dev: &str) -> Option<String> {
    let v = ip_json(ns, &["link", "show", "dev", dev]);
    v[0]["master"].as_str().map(str::to_string)
}

/// The routing table of VRF `name` in `ns`; None if there is no such link.
fn vrf_table(ns: &str, name: &str) -> Option<u64> {
    let v = ip_json(ns, &["-d", "link", "show"]);
    let link = v.as_array().unwrap().iter().find(|l| l["ifname"] == name)?;
    assert_eq!(link["linkinfo"]["info_kind"], "vrf", "{link}");
    link["linkinfo"]["info_data"]["table"].as_u64()
}

fn link_exists(ns: &str, name: &str) -> bool {
    ip_json(ns, &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["ifname"] == name)
}

/// Unicast routes of `table` (a number or `main`), both families, as `DST [via GW] dev DEV`,
/// sorted; IPv6 link-local routes left out.
fn table_routes(ns: &str, table: &str) -> Vec<String> {
    let mut out = Vec::new();
    for family in ["-4", "-6"] {
        let v = ip_json(ns, &[family, "route", "show", "table", table]);
        for r in v.as_array().into_iter().flatten() {
            if r.get("type").is_some_and(|t| t != "unicast") {
                continue;
            }
            let mut dst = r["dst"].as_str().unwrap_or("?").to_string();
            if dst == "default" {
                dst = if family == "-4" { "0.0.0.0/0" } else { "::/0" }.into();
            }
            if dst.starts_with("fe80:") {
                continue;
            }
            let mut line = dst;
            if let Some(gw) = r["gateway"].as_str() {
                line += &format!(" via {gw}");
            }
            line += &format!(" dev {}", r["dev"].as_str().unwrap_or("?"));
            out.push(line);
        }
    }
    out.sort();
    out
}

/// The main table's routes but loopback's (`::1`).
fn main_routes(ns: &str) -> Vec<String> {
    table_routes(ns, "main")
        .into_iter()
        .filter(|r| !r.ends_with(" dev lo"))
        .collect()
}

fn sorted(lines: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Busybox ping from `ns` bound to device `dev` (a VRF: its table decides), retried a while.
fn ping_via(ns: &str, dev: &str, target: &str) -> bool {
    let tool = if target.contains(':') {
        "ping6"
    } else {
        "ping"
    };
    (0..20).any(|_| {
        let out = exec_in(
            ns,
            &["busybox", tool, "-c", "1", "-W", "1", "-I", dev, target],
        );
        out.status.success() || {
            std::thread::sleep(std::time::Duration::from_millis(250));
            false
        }
    })
}

fn msg(out: &Output) -> String {
    out.json()["msg"].as_str().unwrap_or_default().to_string()
}

// ------------------------------------------------------------------ everywhere

#[test]
fn refusals_and_dels_with_nothing_to_undo() {
    let dir = AppletDir::new();
    let pair = vrf_pair("vrf-r");
    let vrf = Plugin::ours(&dir, &pair.host, "vrf");
    let prev = prev_result("1.0.0", pair.netns());

    let mut conf = config("1.0.0", "blue", Some(prev.clone()));
    conf.as_object_mut().unwrap().remove("vrfname");
    for cmd in ["ADD", "CHECK", "DEL"] {
        let out = vrf.run(cmd, "ctr-r", pair.netns(), "eth0", &conf);
        assert_eq!(
            msg(&out),
            "configuration is expected to have a valid vrf name",
            "{cmd}: {out}"
        );
    }
    for bad in [json!(-1), json!(4294967296u64), json!("x"), json!(1.5)] {
        conf["vrfname"] = json!("blue");
        conf["table"] = bad.clone();
        let out = vrf.run("ADD", "ctr-r", pair.netns(), "eth0", &conf);
        assert!(
            msg(&out).starts_with("failed to load netconf"),
            "{bad}: {out}"
        );
    }

    let no_prev = config("1.0.0", "blue", None);
    let out = vrf.run("ADD", "ctr-r", pair.netns(), "eth0", &no_prev);
    assert_eq!(msg(&out), "missing prevResult from earlier plugin", "{out}");
    let out = vrf.run("CHECK", "ctr-r", pair.netns(), "eth0", &no_prev);
    assert_eq!(msg(&out), "missing prevResult from earlier plugin", "{out}");

    // Versions before 0.3.1 are not spoken.
    let old = config("0.3.0", "blue", Some(prev_result("0.3.0", pair.netns())));
    let out = vrf.run("ADD", "ctr-r", pair.netns(), "eth0", &old);
    assert_eq!(out.json()["code"], 1, "{out}");
    assert!(!link_exists(&pair.ctr.name, "blue"));

    // A link of that name that is no VRF: refused on ADD and CHECK, left alone by DEL.
    let conf = config("1.0.0", "eth1", Some(prev.clone()));
    let out = vrf.run("ADD", "ctr-r", pair.netns(), "eth0", &conf);
    assert_eq!(
        msg(&out),
        "cmdAdd failed: Netlink eth1 is not a VRF",
        "{out}"
    );
    let out = vrf.run("CHECK", "ctr-r", pair.netns(), "eth0", &conf);
    assert_eq!(msg(&out), "Netlink eth1 is not a VRF", "{out}");
    vrf.run("DEL", "ctr-r", pair.netns(), "eth0", &conf)
        .assert_success();
    assert!(link_exists(&pair.ctr.name, "eth1"));
    assert_eq!(master_of(&pair.ctr.name, "eth0"), None);

    // No VRF: CHECK fails, DEL has nothing to do (an empty or vanished namespace neither).
    let conf = config("1.0.0", "blue", Some(prev));
    let out = vrf.run("CHECK", "ctr-r", pair.netns(), "eth0", &conf);
    assert_eq!(msg(&out), "VRF blue not found", "{out}");
    for ifname in ["eth0", "eth9"] {
        let del = vrf.run("DEL", "ctr-r", pair.netns(), ifname, &conf);
        del.assert_success();
        assert!(del.stdout.is_empty(), "{del}");
    }
    vrf.run("DEL", "ctr-r", "", "eth0", &conf).assert_success();
    let (host, path) = pair.without_ctr();
    vrf.run("DEL", "ctr-r", &path, "eth0", &conf)
        .assert_success();
    assert!(!std::path::Path::new(&path).exists(), "DEL created {path}");
    drop(host);
}

// ------------------------------------------------------------------ VM lane

#[test]
fn add_check_del_for_every_spec_version() {
    if !require_link_kind("vrf") {
        return;
    }
    let dir = AppletDir::new();
    for version in VERSIONS {
        let pair = vrf_pair("vrf-v");
        let ns = pair.ctr.name.clone();
        let vrf = Plugin::ours(&dir, &pair.host, "vrf");
        let conf = config(version, "blue", Some(prev_result(version, pair.netns())));
        let add = vrf.run("ADD", "ctr-v", pair.netns(), "eth0", &conf);
        add.assert_success();
        let mut expected = conf["prevResult"].clone();
        if version < "1.0.0" {
            expected["ips"][0]["version"] = json!("4");
            expected["ips"][1]["version"] = json!("6");
            expected["dns"] = json!({});
        }
        assert_eq!(add.json(), expected, "{version}");

        assert_eq!(master_of(&ns, "eth0").as_deref(), Some("blue"), "{version}");
        assert_eq!(vrf_table(&ns, "blue"), Some(1), "{version}: lowest free id");
        assert_eq!(
            table_routes(&ns, "1"),
            sorted(&[
                "0.0.0.0/0 via 10.81.0.1 dev eth0",
                "10.81.0.0/24 dev eth0",
                "10.99.0.0/16 via 10.81.0.254 dev eth0",
                "::/0 via fd81::1 dev eth0",
                "fd81::/64 dev eth0",
            ]),
            "{version}"
        );
        assert_eq!(main_routes(&ns), Vec::<String>::new(), "{version}");
        // The kernel dropped the IPv6 address on enslaving; it is back.
        assert_eq!(
            addresses(&ns, "eth0"),
            ["10.81.0.2/24", "fd81::2/64"],
            "{version}"
        );

        let check = vrf.run("CHECK", "ctr-v", pair.netns(), "eth0", &conf);
        if version >= "0.4.0" {
            check.assert_success();
            let mut other = conf.clone();
            other["table"] = json!(7);
            let out = vrf.run("CHECK", "ctr-v", pair.netns(), "eth0", &other);
            assert_eq!(msg(&out), "VRF blue has routing table 1, not 7", "{out}");
        } else {
            assert_eq!(check.json()["code"], 1, "{version}: {check}");
        }

        let del = vrf.run("DEL", "ctr-v", pair.netns(), "eth0", &conf);
        del.assert_success();
        assert!(del.stdout.is_empty(), "{del}");
        assert!(!link_exists(&ns, "blue"), "{version}: VRF left behind");
        assert_eq!(master_of(&ns, "eth0"), None, "{version}");
        vrf.run("DEL", "ctr-v", pair.netns(), "eth0", &conf)
            .assert_success();
        if version >= "0.4.0" {
            let out = vrf.run("CHECK", "ctr-v", pair.netns(), "eth0", &conf);
            assert_eq!(msg(&out), "VRF blue not found", "{out}");
        }
    }
}

#[test]
fn traffic_leaves_through_the_vrf_table() {
    if !require_link_kind("vrf") {
        return;
    }
    let dir = AppletDir::new();
    let pair = vrf_pair("vrf-t");
    let ns = pair.ctr.name.clone();
    let vrf = Plugin::ours(&dir, &pair.host, "vrf");
    let conf = config("1.0.0", "blue", Some(prev_result("1.0.0", pair.netns())));
    vrf.run("ADD", "ctr-t", pair.netns(), "eth0", &conf)
        .assert_success();
    // Both families answer through the VRF, the re-added IPv6 address included.
    assert!(
        ping_via(&ns, "blue", "10.81.0.1"),
        "no IPv4 path in the VRF"
    );
    assert!(ping_via(&ns, "blue", "fd81::1"), "no IPv6 path in the VRF");
    vrf.run("DEL", "ctr-t", pair.netns(), "eth0", &conf)
        .assert_success();
}

#[test]
fn chained_after_ptp_two_interfaces_share_a_vrf() {
    if !require_link_kind("vrf") {
        return;
    }
    let Some(chain) = PtpChain::new("vrf-p", "vrf") else {
        return;
    };
    let (host, ctr, vrf) = (&chain.host, &chain.ctr, &chain.plugin);
    let ns = ctr.name.clone();
    let netns = ctr.path_str().to_string();
    let ptp0 = json!({"cniVersion": "1.0.0", "name": "vrf-ptp0", "type": "ptp",
        "ipam": {"type": "host-local", "dataDir": host.data_dir(),
                 "ranges": [[{"subnet": "10.82.0.0/24"}], [{"subnet": "fd82::/64"}]],
                 "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.200.0.0/16"}, {"dst": "::/0"}]}});
    let ptp1 = json!({"cniVersion": "1.0.0", "name": "vrf-ptp1", "type": "ptp",
        "ipam": {"type": "host-local", "dataDir": host.data_dir(), "subnet": "10.83.0.0/24",
                 "routes": [{"dst": "10.201.0.0/16"}]}});
    let mut prevs = Vec::new();
    for (ifname, ptp_conf, table) in [("eth0", &ptp0, Some(1234)), ("eth1", &ptp1, None)] {
        let prev = chain.ptp_add(ifname, ptp_conf);
        let mut conf = config("1.0.0", "red", Some(prev.clone()));
        if let Some(table) = table {
            conf["table"] = json!(table);
        }
        let out = vrf.run("ADD", "ctr-p", &netns, ifname, &conf);
        out.assert_success();
        assert_eq!(out.json(), prev, "{ifname}: prevResult passed through");
        vrf.run("CHECK", "ctr-p", &netns, ifname, &conf)
            .assert_success();
        prevs.push((ifname, ptp_conf, conf, prev));
    }
    assert_eq!(vrf_table(&ns, "red"), Some(1234));
    assert_eq!(master_of(&ns, "eth0").as_deref(), Some("red"));
    assert_eq!(master_of(&ns, "eth1").as_deref(), Some("red"));
    // ptp's routes, host route to the gateway included, all in the VRF's table now (the
    // subnet route via the gateway took the place of the kernel's connected route).
    assert_eq!(
        table_routes(&ns, "1234"),
        sorted(&[
            "0.0.0.0/0 via 10.82.0.1 dev eth0",
            "10.82.0.0/24 via 10.82.0.1 dev eth0",
            "10.82.0.1 dev eth0",
            "10.200.0.0/16 via 10.82.0.1 dev eth0",
            "10.83.0.0/24 via 10.83.0.1 dev eth1",
            "10.83.0.1 dev eth1",
            "10.201.0.0/16 via 10.83.0.1 dev eth1",
            "::/0 via fd82::1 dev eth0",
            "fd82::/64 dev eth0",
            "fd82::/64 via fd82::1 dev eth0",
            "fd82::1 dev eth0",
        ]),
    );
    assert_eq!(main_routes(&ns), Vec::<String>::new());
    for gw in ["10.82.0.1", "10.83.0.1", "fd82::1"] {
        assert!(ping_via(&ns, "red", gw), "no path to {gw} in the VRF");
    }

    // DEL of one member keeps the VRF for the other.
    let (_, _, conf1, _) = &prevs[1];
    vrf.run("DEL", "ctr-p", &netns, "eth1", conf1)
        .assert_success();
    assert_eq!(
        vrf_table(&ns, "red"),
        Some(1234),
        "VRF deleted with a member left"
    );
    assert_eq!(master_of(&ns, "eth0").as_deref(), Some("red"));
    assert_eq!(master_of(&ns, "eth1"), None);
    let out = vrf.run("CHECK", "ctr-p", &netns, "eth1", conf1);
    assert_eq!(
        msg(&out),
        "Failed to find eth1 associated to vrf red",
        "{out}"
    );
    vrf.run("DEL", "ctr-p", &netns, "eth1", conf1)
        .assert_success();
    assert!(link_exists(&ns, "red"), "a repeated DEL deleted the VRF");

    // The last member's DEL removes it; again is fine.
    let (_, _, conf0, _) = &prevs[0];
    vrf.run("DEL", "ctr-p", &netns, "eth0", conf0)
        .assert_success();
    assert!(!link_exists(&ns, "red"));
    vrf.run("DEL", "ctr-p", &netns, "eth0", conf0)
        .assert_success();
    for (ifname, ptp_conf, _, prev) in prevs.iter().rev() {
        chain.ptp_del(ifname, ptp_conf, prev);
    }
}

#[test]
fn del_is_idempotent_when_things_are_gone() {
    if !require_link_kind("vrf") {
        return;
    }
    let dir = AppletDir::new();
    let pair = vrf_pair("vrf-i");
    let ns = pair.ctr.name.clone();
    let vrf = Plugin::ours(&dir, &pair.host, "vrf");
    let conf = config("1.1.0", "blue", Some(prev_result("1.1.0", pair.netns())));
    vrf.run("ADD", "ctr-i", pair.netns(), "eth0", &conf)
        .assert_success();

    // A member of something else is not released by this VRF's DEL.
    pair.ctr.ip(&["link", "add", "br9", "type", "bridge"]);
    pair.ctr.ip(&["link", "set", "eth1", "master", "br9"]);
    vrf.run("DEL", "ctr-i", pair.netns(), "eth1", &conf)
        .assert_success();
    assert_eq!(master_of(&ns, "eth1").as_deref(), Some("br9"));
    assert!(link_exists(&ns, "blue"), "deleted with eth0 still in it");

    // The interface went first (the main plugin's DEL ran, or the netns is being torn down):
    // the VRF has no member left and goes.
    pair.host.ns.ip(&["link", "del", "hv0"]);
    assert!(!link_exists(&ns, "eth0"));
    vrf.run("DEL", "ctr-i", pair.netns(), "eth0", &conf)
        .assert_success();
    assert!(!link_exists(&ns, "blue"));
    vrf.run("DEL", "ctr-i", pair.netns(), "eth0", &conf)
        .assert_success();

    // The VRF went first.
    let pair = vrf_pair("vrf-j");
    let conf = config("1.1.0", "blue", Some(prev_result("1.1.0", pair.netns())));
    vrf.run("ADD", "ctr-j", pair.netns(), "eth0", &conf)
        .assert_success();
    pair.ctr.ip(&["link", "del", "blue"]);
    vrf.run("DEL", "ctr-j", pair.netns(), "eth0", &conf)
        .assert_success();
    // And the namespace.
    vrf.run("ADD", "ctr-j", pair.netns(), "eth0", &conf)
        .assert_success();
    let (host, path) = pair.without_ctr();
    vrf.run("DEL", "ctr-j", &path, "eth0", &conf)
        .assert_success();
    drop(host);
}

#[test]
fn tables_are_picked_and_conflicts_refused() {
    if !require_link_kind("vrf") {
        return;
    }
    let dir = AppletDir::new();
    let pair = vrf_pair("vrf-c");
    let ns = pair.ctr.name.clone();
    let vrf = Plugin::ours(&dir, &pair.host, "vrf");
    // Table 1 belongs to another VRF, table 2 holds a route, a rule names table 3.
    pair.ctr
        .ip(&["link", "add", "other", "type", "vrf", "table", "1"]);
    pair.ctr
        .ip(&["route", "add", "blackhole", "198.51.100.0/24", "table", "2"]);
    pair.ctr
        .ip(&["rule", "add", "from", "192.0.2.9", "lookup", "3"]);
    let prev = prev_result("1.0.0", pair.netns());
    let conf = config("1.0.0", "blue", Some(prev.clone()));
    vrf.run("ADD", "ctr-c", pair.netns(), "eth0", &conf)
        .assert_success();
    assert_eq!(vrf_table(&ns, "blue"), Some(4));

    // The same VRF with another table: refused, and eth1 stays out.
    let mut conf1 = conf.clone();
    conf1["table"] = json!(9);
    let out = vrf.run("ADD", "ctr-c", pair.netns(), "eth1", &conf1);
    assert_eq!(
        msg(&out),
        "cmdAdd failed: VRF blue already exist with different routing table 4",
        "{out}"
    );
    assert_eq!(master_of(&ns, "eth1"), None);
    // With its own table it joins.
    conf1["table"] = json!(4);
    vrf.run("ADD", "ctr-c", pair.netns(), "eth1", &conf1)
        .assert_success();
    assert_eq!(master_of(&ns, "eth1").as_deref(), Some("blue"));

    // An interface with a master already: refused, and the VRF made for it removed again.
    let green = config("1.0.0", "green", Some(prev));
    let out = vrf.run("ADD", "ctr-c", pair.netns(), "eth0", &green);
    assert_eq!(
        msg(&out),
        "cmdAdd failed: interface eth0 has already a master set: blue",
        "{out}"
    );
    assert!(!link_exists(&ns, "green"), "the failed ADD left its VRF");
    // A missing interface.
    let out = vrf.run("ADD", "ctr-c", pair.netns(), "eth9", &green);
    assert_eq!(
        msg(&out),
        "cmdAdd failed: could not get link by name eth9",
        "{out}"
    );
    assert!(!link_exists(&ns, "green"));

    for ifname in ["eth0", "eth1"] {
        vrf.run("DEL", "ctr-c", pair.netns(), ifname, &conf)
            .assert_success();
    }
    assert!(!link_exists(&ns, "blue"));
    assert!(link_exists(&ns, "other"), "another VRF was touched");
}

#[test]
fn differential_against_the_go_vrf() {
    if !require_link_kind("vrf") {
        return;
    }
    if go_plugin("vrf").is_none() {
        skip("the differential run", "Debian's Go vrf is not installed");
        return;
    }
    let dir = AppletDir::new();
    let mut seen = Vec::new();
    for go in [false, true] {
        let pair = vrf_pair(if go { "vrf-dg" } else { "vrf-do" });
        let ns = pair.ctr.name.clone();
        let plugin = Plugin::pick(go, &dir, &pair.host, "vrf").unwrap();
        let conf = config("1.0.0", "blue", Some(prev_result("1.0.0", pair.netns())));
        let result = pair.diff_add(&plugin, &conf);
        let after_add = (
            result,
            master_of(&ns, "eth0"),
            vrf_table(&ns, "blue"),
            addresses(&ns, "eth0"),
        );
        plugin
            .run("CHECK", "ctr-d", pair.netns(), "eth0", &conf)
            .assert_success();
        plugin
            .run("DEL", "ctr-d", pair.netns(), "eth0", &conf)
            .assert_success();
        seen.push((after_add, link_exists(&ns, "blue"), master_of(&ns, "eth0")));
    }
    assert_eq!(seen[0], seen[1], "ours vs Go");
}
