//! bandwidth through its applet link, run inside a throwaway host namespace against a container
//! namespace (a veth pair made with `ip`, or chained after our ptp): qdisc parameters, the ifb
//! and the redirect after ADD and gone after DEL at every spec version, the key sources,
//! CHECK, refusals, DEL after the namespace is gone, GC, inputs that must not crash, and the
//! differential run against Debian's Go bandwidth (v1.1.1). Shaping is checked by its
//! parameters (`tc -j`), never by timing traffic.
//!
//! Known differences from the Go bandwidth, each asserted below where it shows:
//! * The redirect filter has one mirred action; Go's library adds a second, identical one
//!   that never runs (the first steals the packet).
//! * DEL also takes the tbf and ingress qdiscs off the host veth; Go leaves them to go with
//!   the veth.
//! * CHECK fails when the root tbf is missing (Go stops at the first qdisc that is not a tbf,
//!   so it passes); it also accepts a bucket of more than ~4.3 s read back capped, as kernels
//!   before 6.x report it (Go's CHECK then fails; this kernel reports it uncapped).
//! * The ifb carries the alias `cni-bandwidth/<network>/<container ID>`, which GC uses.
//! * ADD without a previous result is refused even when no limit is set (Go crashes).
//! * The 1.0.0 result has no empty `dns` object (Debian's v1.1.1 library prints one).

mod chain_env;
mod common;
mod plugin_env;

use chain_env::*;
use common::*;
use plugin_env::*;

impl Pair {
    /// The pair with `hv0` (MTU 1400) and `eth0` both up.
    fn new(tag: &str) -> Pair {
        Pair::setup(
            tag,
            &["mtu", "1400"],
            &[&["link", "set", "hv0", "up"]],
            &[&["link", "set", "eth0", "up"]],
        )
    }

    fn qdiscs(&self, dev: &str) -> Vec<Value> {
        qdiscs_in(&self.host.ns.name, dev)
    }

    /// The root qdisc of `dev` as `(kind, handle, rate, burst, lat)`.
    fn root(&self, dev: &str) -> Option<(String, String, u64, String, u64)> {
        self.qdiscs(dev)
            .into_iter()
            .find(|q| q["root"] == true)
            .map(|q| {
                (
                    q["kind"].as_str().unwrap_or("").to_string(),
                    q["handle"].as_str().unwrap_or("").to_string(),
                    q["options"]["rate"].as_u64().unwrap_or(0),
                    q["options"]["burst"].as_str().unwrap_or("").to_string(),
                    q["options"]["lat"].as_u64().unwrap_or(0),
                )
            })
    }

    fn has_ingress(&self) -> bool {
        self.qdiscs("hv0").iter().any(|q| q["kind"] == "ingress")
    }

    /// The `tc filter show dev hv0 ingress` text.
    fn filters(&self) -> String {
        let out = exec_in(
            &self.host.ns.name,
            &["tc", "filter", "show", "dev", "hv0", "ingress"],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn ifbs(&self) -> Vec<Value> {
        self.host
            .ip_json(&["-d", "link", "show", "type", "ifb"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn qdiscs_in(ns: &str, dev: &str) -> Vec<Value> {
    let out = exec_in(ns, &["tc", "-j", "-d", "qdisc", "show", "dev", dev]);
    if !out.status.success() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&out.stdout);
    parse_json(if text.trim().is_empty() { "[]" } else { &text })
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn prev_result(version: &str, sandbox: &str) -> Value {
    json!({
        "cniVersion": version,
        "interfaces": [{"name": "hv0"}, {"name": "eth0", "sandbox": sandbox}],
        "ips": [{"address": "10.74.0.2/24", "interface": 1}]
    })
}

fn config(version: &str, name: &str, sandbox: &str, limits: Value) -> Value {
    let mut c = json!({"cniVersion": version, "name": name, "type": "bandwidth",
                       "prevResult": prev_result(version, sandbox)});
    for (k, v) in limits.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// 1 Mbit/s with a 100 kbit burst in, 2 Mbit/s with a 200 kbit burst out.
fn both_ways() -> Value {
    json!({"ingressRate": 1_000_000, "ingressBurst": 100_000,
           "egressRate": 2_000_000, "egressBurst": 200_000})
}

/// `bwp` + 12 hex digits of sha512(network + container ID), computed with sha512sum.
fn ifb_name(network: &str, cid: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("printf %s '{network}{cid}' | sha512sum")])
        .output()
        .unwrap();
    format!("bwp{}", &String::from_utf8_lossy(&out.stdout)[..12])
}

#[test]
fn add_check_del_for_every_spec_version() {
    let dir = AppletDir::new();
    for version in VERSIONS {
        let pair = Pair::new("bw-v");
        let bw = Plugin::ours(&dir, &pair.host, "bandwidth");
        let conf = config(version, "bw-all", pair.netns(), both_ways());
        let add = bw.run("ADD", "ctr-v", pair.netns(), "eth0", &conf);
        if version < "0.3.0" {
            assert_eq!(add.json()["code"], 1, "{version}: {add}");
            assert!(pair.ifbs().is_empty());
            continue;
        }
        add.assert_success();
        let ifb = ifb_name("bw-all", "ctr-v");
        let result = add.json();
        assert_eq!(result["cniVersion"], version);
        assert_eq!(result["interfaces"][2]["name"], ifb.as_str(), "{result}");
        let links = pair.ifbs();
        assert_eq!(links.len(), 1, "{links:?}");
        let link = &links[0];
        assert_eq!(link["ifname"], ifb.as_str());
        assert_eq!(result["interfaces"][2]["mac"], link["address"]);
        assert_eq!(link["mtu"], 1400, "the ifb takes the host veth's MTU");
        assert!(link["flags"].as_array().unwrap().contains(&json!("UP")));
        assert_eq!(link["ifalias"], format!("cni-bandwidth/bw-all/ctr-v"));
        assert!(link.get("txqlen").is_none_or(|q| q == 0), "{link}");

        assert_eq!(
            pair.root("hv0"),
            Some((
                "tbf".into(),
                "1:".into(),
                125_000,
                "12500b/1".into(),
                25_000
            ))
        );
        assert_eq!(
            pair.root(&ifb),
            Some((
                "tbf".into(),
                "1:".into(),
                250_000,
                "25000b/1".into(),
                25_000
            ))
        );
        assert!(pair.has_ingress());
        let filters = pair.filters();
        assert!(filters.contains("protocol all pref 1 u32"), "{filters}");
        assert!(filters.contains("flowid 1:1"), "{filters}");
        assert!(
            filters.contains("match 00000000/00000000 at 0"),
            "{filters}"
        );
        assert!(
            filters.contains(&format!("mirred (Egress Redirect to device {ifb}) stolen")),
            "{filters}"
        );
        assert_eq!(filters.matches("action order").count(), 1, "{filters}");

        let check = bw.run("CHECK", "ctr-v", pair.netns(), "eth0", &conf);
        if version >= "0.4.0" {
            check.assert_success();
        } else {
            assert_eq!(check.json()["code"], 1);
        }

        bw.run("DEL", "ctr-v", pair.netns(), "eth0", &conf)
            .assert_success();
        assert!(pair.ifbs().is_empty(), "{version}: DEL removes the ifb");
        assert_eq!(pair.root("hv0").map(|r| r.0), Some("noqueue".into()));
        assert!(
            !pair.has_ingress(),
            "{version}: DEL removes the ingress qdisc"
        );
        bw.run("DEL", "ctr-v", pair.netns(), "eth0", &conf)
            .assert_success();
    }
}

#[test]
fn key_sources_and_one_direction_only() {
    let dir = AppletDir::new();
    let pair = Pair::new("bw-k");
    let bw = Plugin::ours(&dir, &pair.host, "bandwidth");
    // runtimeConfig alone: ingress only, so no ifb.
    let rc = config(
        "1.0.0",
        "bw-k",
        pair.netns(),
        json!({"runtimeConfig": {"bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 80_000}}}),
    );
    let add = bw.run("ADD", "ctr-k", pair.netns(), "eth0", &rc);
    add.assert_success();
    assert_eq!(add.json()["interfaces"].as_array().unwrap().len(), 2);
    assert_eq!(pair.root("hv0").map(|r| r.2), Some(1_000_000));
    assert!(pair.ifbs().is_empty() && !pair.has_ingress());
    bw.run("CHECK", "ctr-k", pair.netns(), "eth0", &rc)
        .assert_success();
    bw.run("DEL", "ctr-k", pair.netns(), "eth0", &rc)
        .assert_success();
    assert_eq!(pair.root("hv0").map(|r| r.0), Some("noqueue".into()));

    // Any top-level key wins over runtimeConfig entirely: egress only here.
    let mut top = rc.clone();
    top["egressRate"] = json!(16_000_000);
    top["egressBurst"] = json!(160_000);
    let add = bw.run("ADD", "ctr-k", pair.netns(), "eth0", &top);
    add.assert_success();
    assert_eq!(pair.root("hv0").map(|r| r.0), Some("noqueue".into()));
    let ifb = ifb_name("bw-k", "ctr-k");
    assert_eq!(pair.root(&ifb).map(|r| r.2), Some(2_000_000));
    bw.run("DEL", "ctr-k", pair.netns(), "eth0", &top)
        .assert_success();
    assert!(pair.ifbs().is_empty());

    // Rates of 2^32 bytes/s and more (40 Gbit/s) go through the 64-bit attribute.
    let fast = config(
        "1.0.0",
        "bw-k",
        pair.netns(),
        json!({"egressRate": 40_000_000_000u64, "egressBurst": 80_000_000}),
    );
    bw.run("ADD", "ctr-k", pair.netns(), "eth0", &fast)
        .assert_success();
    assert_eq!(pair.root(&ifb).map(|r| r.2), Some(5_000_000_000));
    bw.run("CHECK", "ctr-k", pair.netns(), "eth0", &fast)
        .assert_success();
    bw.run("DEL", "ctr-k", pair.netns(), "eth0", &fast)
        .assert_success();

    // No limit at all: the previous result passes through and nothing is made.
    for limits in [
        json!({}),
        json!({"ingressRate": 0, "ingressBurst": 0}),
        json!({"runtimeConfig": {"bandwidth": {}}}),
    ] {
        let conf = config("1.0.0", "bw-k", pair.netns(), limits.clone());
        let out = bw.run("ADD", "ctr-k", pair.netns(), "eth0", &conf);
        out.assert_success();
        assert_eq!(out.json(), conf["prevResult"], "{limits}");
        assert_eq!(pair.root("hv0").map(|r| r.0), Some("noqueue".into()));
    }
}

#[test]
fn check_reports_drift() {
    let dir = AppletDir::new();
    let pair = Pair::new("bw-c");
    let bw = Plugin::ours(&dir, &pair.host, "bandwidth");
    let conf = config("1.0.0", "bw-c", pair.netns(), both_ways());
    bw.run("ADD", "ctr-c", pair.netns(), "eth0", &conf)
        .assert_success();
    let ifb = ifb_name("bw-c", "ctr-c");
    let check = || bw.run("CHECK", "ctr-c", pair.netns(), "eth0", &conf).json()["msg"].clone();
    let tc = |args: &[&str]| {
        let out = exec_in(&pair.host.ns.name, &[&["tc"][..], args].concat());
        assert!(out.status.success(), "tc {args:?}: {out:?}");
    };
    tc(&[
        "qdisc", "replace", "dev", "hv0", "root", "handle", "1:", "tbf", "rate", "2mbit", "burst",
        "12500b", "latency", "25ms",
    ]);
    assert_eq!(check(), "Rate doesn't match");
    tc(&["qdisc", "del", "dev", "hv0", "root"]);
    assert_eq!(check(), "Failed to find qdisc");
    tc(&[
        "qdisc", "add", "dev", "hv0", "root", "handle", "1:", "tbf", "rate", "1mbit", "burst",
        "12500b", "latency", "25ms",
    ]);
    tc(&["filter", "del", "dev", "hv0", "ingress"]);
    assert_eq!(check(), format!("no redirect from hv0 to {ifb}"));
    tc(&["qdisc", "del", "dev", "hv0", "ingress"]);
    assert_eq!(check(), format!("no redirect from hv0 to {ifb}"));
    pair.host.ns.ip(&["link", "del", &ifb]);
    assert_eq!(check(), "get ifb device: Link not found");
    let mut no_prev = conf.clone();
    no_prev.as_object_mut().unwrap().remove("prevResult");
    let out = bw.run("CHECK", "ctr-c", pair.netns(), "eth0", &no_prev);
    assert_eq!(out.json()["msg"], "must be called as a chained plugin");
}

#[test]
fn refusals() {
    let dir = AppletDir::new();
    let pair = Pair::new("bw-r");
    let bw = Plugin::ours(&dir, &pair.host, "bandwidth");
    let sandbox = pair.netns().to_string();
    let run = |conf: &Value, ifname: &str| {
        let out = bw.run("ADD", "ctr-r", &sandbox, ifname, conf);
        assert_eq!(out.status, 1, "{out}");
        out.json()["msg"].as_str().unwrap().to_string()
    };
    let limits = [
        (
            json!({"ingressRate": 1000}),
            "if rate is set, burst must also be set",
        ),
        (
            json!({"egressBurst": 1000}),
            "if burst is set, rate must also be set",
        ),
        (
            json!({"egressRate": 1, "egressBurst": 34_359_738_360u64}),
            "burst cannot be more than 4GB",
        ),
        (
            json!({"runtimeConfig": {"bandwidth": {"ingressBurst": 5}}}),
            "if burst is set, rate must also be set",
        ),
        (
            json!({"ingressRate": -1}),
            "failed to parse network configuration",
        ),
    ];
    for (l, msg) in limits {
        let conf = config("1.0.0", "bw-r", &sandbox, l.clone());
        assert!(run(&conf, "eth0").starts_with(msg), "{l}");
        // DEL validates the same way, as the reference.
        let del = bw.run("DEL", "ctr-r", &sandbox, "eth0", &conf);
        assert!(del.json()["msg"].as_str().unwrap().starts_with(msg), "{l}");
    }
    let mut conf = config("1.0.0", "bw-r", &sandbox, both_ways());
    conf.as_object_mut().unwrap().remove("prevResult");
    assert_eq!(run(&conf, "eth0"), "must be called as chained plugin");
    conf["prevResult"] = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.74.0.2/24"}]});
    assert_eq!(run(&conf, "eth0"), "no interfaces provided");
    conf["prevResult"] = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": sandbox}]});
    assert_eq!(
        run(&conf, "eth0"),
        "no veth peer of container interface found in host ns"
    );
    let conf = config("1.0.0", "bw-r", &sandbox, both_ways());
    pair.ctr.ip(&["link", "add", "dummy0", "type", "bridge"]);
    assert_eq!(
        run(&conf, "dummy0"),
        "container interface dummy0 has no veth peer: interface dummy0 was not a veth interface"
    );
    assert_eq!(
        run(&conf, "eth7"),
        "container interface eth7 has no veth peer: Link not found"
    );
    // A veth whose peer lives in a third namespace: its index means nothing here.
    let third = Netns::new("bw-r3");
    pair.ctr.ip(&[
        "link",
        "add",
        "eth1",
        "type",
        "veth",
        "peer",
        "name",
        "x0",
        "netns",
        &third.name,
    ]);
    let msg = run(&conf, "eth1");
    assert!(
        msg.starts_with("veth peer with index") && msg.ends_with("is not in host ns"),
        "{msg}"
    );
    assert!(pair.ifbs().is_empty());
    assert_eq!(pair.root("hv0").map(|r| r.0), Some("noqueue".into()));
}

#[test]
fn a_failed_add_leaves_no_ifb_and_del_cleans_up_without_a_namespace() {
    let dir = AppletDir::new();
    let pair = Pair::new("bw-f");
    let bw = Plugin::ours(&dir, &pair.host, "bandwidth");
    let conf = config("1.0.0", "bw-f", pair.netns(), both_ways());
    // Someone else's ingress qdisc is in the way.
    pair.host.ns.ip(&["link", "set", "hv0", "up"]);
    let out = exec_in(
        &pair.host.ns.name,
        &["tc", "qdisc", "add", "dev", "hv0", "ingress"],
    );
    assert!(out.status.success());
    let add = bw.run("ADD", "ctr-f", pair.netns(), "eth0", &conf);
    assert!(
        add.json()["msg"]
            .as_str()
            .unwrap()
            .starts_with("create ingress qdisc:"),
        "{add}"
    );
    assert!(pair.ifbs().is_empty(), "the ifb of a failed ADD is removed");
    exec_in(
        &pair.host.ns.name,
        &["tc", "qdisc", "del", "dev", "hv0", "ingress"],
    );
    exec_in(
        &pair.host.ns.name,
        &["tc", "qdisc", "del", "dev", "hv0", "root"],
    );

    bw.run("ADD", "ctr-f", pair.netns(), "eth0", &conf)
        .assert_success();
    assert_eq!(pair.ifbs().len(), 1);
    let (host, path) = pair.without_ctr();
    // The veth went with the namespace; the ifb in the host did not, until DEL.
    let ifbs = host.links_named("bwp");
    assert_eq!(ifbs.len(), 1);
    bw.run("DEL", "ctr-f", &path, "eth0", &conf)
        .assert_success();
    assert!(host.links_named("bwp").is_empty());
    bw.run("DEL", "ctr-f", "", "eth0", &conf).assert_success();
}

#[test]
fn gc_removes_only_this_networks_stale_ifbs() {
    let dir = AppletDir::new();
    let host = Host::new("bw-gc-h");
    let bw = Plugin::ours(&dir, &host, "bandwidth");
    let mut ctrs = Vec::new();
    for (i, (net, cid)) in [("bw-gc", "live"), ("bw-gc", "dead"), ("bw-other", "dead")]
        .iter()
        .enumerate()
    {
        let ctr = Netns::new("bw-gc-c");
        let hv = format!("hv{i}");
        host.ns.ip(&[
            "link", "add", &hv, "type", "veth", "peer", "name", "eth0", "netns", &ctr.name,
        ]);
        let mut conf = config("1.0.0", net, ctr.path_str(), both_ways());
        conf["prevResult"]["interfaces"][0]["name"] = json!(hv);
        bw.run("ADD", cid, ctr.path_str(), "eth0", &conf)
            .assert_success();
        ctrs.push(ctr);
    }
    // An ifb nobody labelled (the Go plugin's, say).
    host.ns.ip(&["link", "add", "bwpforeign0", "type", "ifb"]);
    let gc = json!({"cniVersion": "1.1.0", "name": "bw-gc", "type": "bandwidth",
                    "cni.dev/valid-attachments": [{"containerID": "live", "ifname": "eth0"}]});
    let out = bw.invocation("GC", "", "", "").config(&gc).run();
    out.assert_success();
    let mut left = host.links_named("bwp");
    left.sort();
    let mut want = vec![
        ifb_name("bw-gc", "live"),
        ifb_name("bw-other", "dead"),
        "bwpforeign0".to_string(),
    ];
    want.sort();
    assert_eq!(left, want);
}

#[test]
fn chained_after_ptp() {
    let Some(chain) = PtpChain::new("bw-p", "bandwidth") else {
        return;
    };
    let (host, ctr, bw) = (&chain.host, &chain.ctr, &chain.plugin);
    let ptp_conf = json!({"cniVersion": "1.0.0", "name": "bw-ptp", "type": "ptp", "mtu": 1450,
        "ipam": {"type": "host-local", "subnet": "10.75.0.0/24", "dataDir": host.data_dir()}});
    let prev = chain.ptp_add("eth0", &ptp_conf);
    let host_veth = prev["interfaces"][0]["name"].as_str().unwrap().to_string();
    let mut conf = json!({"cniVersion": "1.0.0", "name": "bw-ptp", "type": "bandwidth",
                          "runtimeConfig": {"bandwidth": both_ways()}});
    conf["prevResult"] = prev.clone();
    let out = bw.run("ADD", "ctr-p", ctr.path_str(), "eth0", &conf);
    out.assert_success();
    let result = out.json();
    let ifb = ifb_name("bw-ptp", "ctr-p");
    assert_eq!(result["interfaces"].as_array().unwrap().len(), 3);
    assert_eq!(result["interfaces"][2]["name"], ifb.as_str());
    let root = qdiscs_in(&host.ns.name, &host_veth)
        .into_iter()
        .find(|q| q["root"] == true)
        .unwrap();
    assert_eq!(
        (root["kind"].clone(), root["options"]["rate"].clone()),
        (json!("tbf"), json!(125_000))
    );
    let links = host.ip_json(&["link", "show", &ifb]);
    assert_eq!(links[0]["mtu"], 1450);
    let mut with_result = conf.clone();
    with_result["prevResult"] = result.clone();
    bw.run("CHECK", "ctr-p", ctr.path_str(), "eth0", &with_result)
        .assert_success();
    bw.run("DEL", "ctr-p", ctr.path_str(), "eth0", &with_result)
        .assert_success();
    assert!(host.links_named("bwp").is_empty());
    let root = qdiscs_in(&host.ns.name, &host_veth)
        .into_iter()
        .find(|q| q["root"] == true)
        .unwrap();
    assert_eq!(root["kind"], "noqueue");
    chain.ptp_del("eth0", &ptp_conf, &prev);
}

#[test]
fn no_input_makes_it_crash() {
    let dir = AppletDir::new();
    let pair = Pair::new("bw-z");
    let bw = Plugin::ours(&dir, &pair.host, "bandwidth");
    let bodies = [
        json!({"ingressRate": null}),
        json!({"ingressRate": null, "ingressBurst": null, "runtimeConfig": {"bandwidth": {"ingressRate": 1, "ingressBurst": 1}}}),
        json!({"runtimeConfig": {"bandwidth": null}}),
        json!({"runtimeConfig": null}),
        json!({"runtimeConfig": "x"}),
        json!({"ingressRate": 1.5, "ingressBurst": 1}),
        json!({"ingressRate": 1, "ingressBurst": 1}),
        json!({"egressRate": 7, "egressBurst": 7}),
        json!({"egressRate": 18446744073709551615u64, "egressBurst": 8}),
        json!({"ingressRate": 8, "ingressBurst": 34_359_738_352u64}),
        json!({"prevResult": null, "ingressRate": 1000, "ingressBurst": 1000}),
        json!({"prevResult": null}),
        json!({"prevResult": {"interfaces": "x"}}),
        json!({"prevResult": {"interfaces": [{"name": "hv0", "sandbox": 5}]}}),
    ];
    for body in bodies {
        let mut conf = config("1.0.0", "bw-z", pair.netns(), json!({}));
        for (k, v) in body.as_object().unwrap() {
            conf[k] = v.clone();
        }
        for cmd in ["ADD", "CHECK", "DEL"] {
            let out = bw.run(cmd, "ctr-z", pair.netns(), "eth0", &conf);
            assert!(out.status == 0 || out.status == 1, "{cmd} {body}: {out}");
            if out.status == 1 {
                assert!(out.json()["code"].is_u64(), "{cmd} {body}: {out}");
            }
        }
    }
    bw.run(
        "DEL",
        "ctr-z",
        pair.netns(),
        "eth0",
        &config("1.0.0", "bw-z", pair.netns(), both_ways()),
    )
    .assert_success();
    assert!(pair.ifbs().is_empty());
}

#[test]
fn differential_against_the_go_bandwidth() {
    let dir = AppletDir::new();
    if go_plugin("bandwidth").is_none() {
        return;
    }
    let cases = [
        both_ways(),
        json!({"runtimeConfig": {"bandwidth": {"egressRate": 10_000_000, "egressBurst": 1_000_000}}}),
        json!({"ingressRate": 123_456_789, "ingressBurst": 987_654}),
    ];
    for (i, limits) in cases.iter().enumerate() {
        let mut seen = Vec::new();
        for go in [false, true] {
            let pair = Pair::new(if go { "bw-dg" } else { "bw-do" });
            let plugin = if go {
                Plugin::go(&pair.host, "bandwidth").unwrap()
            } else {
                Plugin::ours(&dir, &pair.host, "bandwidth")
            };
            let conf = config("1.0.0", "bw-diff", pair.netns(), limits.clone());
            let mut result = pair.diff_add(&plugin, &conf);
            if let Some(ifb) = result["interfaces"].get_mut(2) {
                ifb["mac"] = json!("MAC");
            }
            let ifb = ifb_name("bw-diff", "ctr-d");
            let ifb_link = pair.ifbs().first().map(|l| {
                (
                    l["ifname"].clone(),
                    l["mtu"].clone(),
                    l["flags"].clone(),
                    l.get("txqlen").cloned(),
                )
            });
            // The first action of the filter; Go's second one is a known difference.
            let filters = pair.filters();
            let first_action: Vec<&str> = filters
                .lines()
                .filter(|l| l.contains("mirred") || l.contains("match") || l.contains("flowid"))
                .take(3)
                .collect();
            let first_action = first_action.join("\n");
            assert_eq!(
                filters.matches("action order").count(),
                if !first_action.contains("mirred") {
                    0
                } else if go {
                    2
                } else {
                    1
                },
                "{filters}"
            );
            let check = plugin.run("CHECK", "ctr-d", pair.netns(), "eth0", &conf);
            check.assert_success();
            let state = (
                result,
                pair.root("hv0"),
                pair.root(&ifb),
                pair.has_ingress(),
                ifb_link,
                first_action,
            );
            plugin
                .run("DEL", "ctr-d", pair.netns(), "eth0", &conf)
                .assert_success();
            assert!(pair.ifbs().is_empty(), "{i} go={go}");
            // Go leaves the host veth's qdiscs; ours removes them.
            let left = pair.root("hv0").map(|r| r.0);
            if go && limits.to_string().contains("ingressRate") {
                assert_eq!(left, Some("tbf".into()));
            } else {
                assert_eq!(left, Some("noqueue".into()), "{i} go={go}");
            }
            seen.push(state);
        }
        assert_eq!(seen[0], seen[1], "case {i}: ours vs Go");
    }

    // Where the two CHECKs disagree on purpose.
    for go in [false, true] {
        let pair = Pair::new("bw-dc");
        let plugin = Plugin::pick(go, &dir, &pair.host, "bandwidth").unwrap();
        // A 10 s bucket, which kernels before 6.x read back capped at ~4.3 s.
        let conf = config(
            "1.0.0",
            "bw-dc",
            pair.netns(),
            json!({"ingressRate": 1_000_000, "ingressBurst": 10_000_000}),
        );
        plugin
            .run("ADD", "ctr-e", pair.netns(), "eth0", &conf)
            .assert_success();
        plugin
            .run("CHECK", "ctr-e", pair.netns(), "eth0", &conf)
            .assert_success();
        exec_in(
            &pair.host.ns.name,
            &["tc", "qdisc", "del", "dev", "hv0", "root"],
        );
        let check = plugin.run("CHECK", "ctr-e", pair.netns(), "eth0", &conf);
        if go {
            check.assert_success();
        } else {
            assert_eq!(check.json()["msg"], "Failed to find qdisc", "{check}");
        }
    }
}
