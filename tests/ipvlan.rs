//! ipvlan through its applet link, run inside a throwaway host namespace whose parent link is
//! a veth end there: every spec version, each mode, MTU, chaining (master and addresses from
//! `prevResult`), the default-route master, linkInContainer, traffic between two containers,
//! the DEL teardown matrix, CHECK, STATUS, GC. The kernels of the project's machines have no
//! ipvlan: these tests run in the VM lane (tests/vm) and print SKIP elsewhere.

mod common;
mod plugin_env;
mod single_iface;

use common::*;
use plugin_env::*;
use single_iface::*;

fn config(host: &Host, version: &str, network: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": network,
        "type": "ipvlan",
        "master": "iv0",
        "ipam": host_local(host, "10.73.0.0/24"),
    })
}

#[test]
fn add_check_del_for_every_spec_version() {
    if !require_link_kind("ipvlan") {
        return;
    }
    every_spec_version(&VersionCase {
        plugin: "ipvlan",
        host: &|| host_with_parent("iv-v", "iv0"),
        conf: &|host, version| config(host, version, "ivv"),
        network: "ivv",
        addr: "10.73.0.2/24",
        missing_prev: "Required prevResult missing",
        after_add: &|host, ctr, _| {
            let link = link_details(&ctr.name, "eth0");
            assert_eq!(link["linkinfo"]["info_kind"], "ipvlan", "{link}");
            assert_eq!(link["linkinfo"]["info_data"]["mode"], "l2", "{link}");
            assert_eq!(sysctl_in(&ctr.name, "net/ipv4/conf/eth0/arp_notify"), "1");
            assert!(host.links_named("veth").is_empty());
        },
    });
}

#[test]
fn modes_mtu_and_check_of_the_mode() {
    if !require_link_kind("ipvlan") {
        return;
    }
    let dir = AppletDir::new();
    let host = host_with_parent("iv-mode", "iv0");
    let iv = Plugin::ours(&dir, &host, "ipvlan");
    for mode in ["l2", "l3", "l3s"] {
        let ctr = Netns::new("iv-modec");
        let mut conf = config(&host, "1.0.0", "ivmode");
        conf["mode"] = json!(mode);
        conf["mtu"] = json!(1400);
        let add = iv.run("ADD", "ctr-m", ctr.path_str(), "eth0", &conf);
        add.assert_success();
        let link = link_details(&ctr.name, "eth0");
        assert_eq!(link["linkinfo"]["info_data"]["mode"], mode, "{link}");
        assert_eq!(link["mtu"], 1400);
        let other = if mode == "l3" { "l2" } else { "l3" };
        let msg = format!("Container IPVlan mode {mode} does not match expected value: {other}");
        let wrong = ("mode", json!(other), msg.as_str());
        check_then_fail_on(&iv, &ctr, "ctr-m", &conf, &add.json(), wrong);
        iv.run("DEL", "ctr-m", ctr.path_str(), "eth0", &conf)
            .assert_success();
    }
    let ctr = Netns::new("iv-modec");
    for (key, value, msg) in [
        ("mode", json!("l4"), "unknown ipvlan mode: \"l4\""),
        (
            "master",
            json!("nope0"),
            "failed to lookup master \"nope0\": Link not found",
        ),
    ] {
        let mut conf = config(&host, "1.0.0", "ivbad");
        conf[key] = value;
        let out = iv.run("ADD", "ctr-b", ctr.path_str(), "eth0", &conf);
        assert_eq!(out.json()["msg"], msg, "{out}");
        assert!(links_of(&ctr.name).is_empty());
        assert_eq!(host.reservations("ivbad"), Vec::<String>::new());
    }
}

/// Chained after a plugin whose result names one interface: that is the master, and without
/// an `ipam` section the addresses of `prevResult` are put on the ipvlan link.
#[test]
fn chained_master_and_addresses_come_from_prev_result() {
    if !require_link_kind("ipvlan") {
        return;
    }
    let dir = AppletDir::new();
    let host = host_with_parent("iv-ch", "iv0");
    let iv = Plugin::ours(&dir, &host, "ipvlan");
    let ctr = Netns::new("iv-chc");
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "iv0p"}],
        "ips": [{"address": "10.73.5.7/24", "gateway": "10.73.5.1", "interface": 0}],
        "routes": [{"dst": "10.83.0.0/16"}],
    });
    let conf = json!({"cniVersion": "1.0.0", "name": "ivch", "type": "ipvlan", "prevResult": prev});
    let add = iv.run("ADD", "ctr-c", ctr.path_str(), "eth0", &conf);
    add.assert_success();
    let result = add.json();
    assert_single_result(&result, "1.0.0", "eth0", ctr.path_str());
    assert_eq!(result["ips"][0]["address"], "10.73.5.7/24");
    let iv0p = host.ip_json(&["link", "show", "iv0p"])[0]["ifindex"].clone();
    assert_eq!(link_details(&ctr.name, "eth0")["link_index"], iv0p);
    assert_eq!(addresses(&ctr.name, "eth0"), ["10.73.5.7/24"]);
    assert!(
        routes(&ctr.name).contains(&"10.83.0.0/16 dev eth0 via 10.73.5.1".to_string()),
        "{:?}",
        routes(&ctr.name)
    );
    iv.run(
        "CHECK",
        "ctr-c",
        ctr.path_str(),
        "eth0",
        &with_prev(&conf, &result),
    )
    .assert_success();
    iv.run("DEL", "ctr-c", ctr.path_str(), "eth0", &conf)
        .assert_success();
    assert!(links_of(&ctr.name).is_empty());

    let two = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "a"}, {"name": "b"}]});
    let mut bad = conf.clone();
    bad["prevResult"] = two;
    let out = iv.run("ADD", "ctr-c", ctr.path_str(), "eth0", &bad);
    assert_eq!(
        out.json()["msg"],
        "chained master failure. PrevResult lacks a single named interface"
    );
}

#[test]
fn master_defaults_to_the_default_route_link_and_can_live_in_the_container() {
    if !require_link_kind("ipvlan") {
        return;
    }
    let dir = AppletDir::new();
    let host = host_with_parent("iv-def", "iv0");
    let iv = Plugin::ours(&dir, &host, "ipvlan");
    let ctr = Netns::new("iv-defc");
    let mut conf = config(&host, "1.0.0", "ivdef");
    conf.as_object_mut().unwrap().remove("master");
    let add = iv.run("ADD", "ctr-d", ctr.path_str(), "eth0", &conf);
    add.assert_success();
    let iv0 = host.ip_json(&["link", "show", "iv0"])[0]["ifindex"].clone();
    assert_eq!(link_details(&ctr.name, "eth0")["link_index"], iv0);
    // CHECK without a master configured (the reference's always fails here).
    iv.run(
        "CHECK",
        "ctr-d",
        ctr.path_str(),
        "eth0",
        &with_prev(&conf, &add.json()),
    )
    .assert_success();
    iv.run("DEL", "ctr-d", ctr.path_str(), "eth0", &conf)
        .assert_success();
    // DEL needs no default route (the reference's looks for one).
    iv.run("ADD", "ctr-d", ctr.path_str(), "eth0", &conf)
        .assert_success();
    host.ns.ip(&["route", "del", "default"]);
    iv.run("DEL", "ctr-d", ctr.path_str(), "eth0", &conf)
        .assert_success();
    assert!(links_of(&ctr.name).is_empty());
    let out = iv.run("ADD", "ctr-d", ctr.path_str(), "eth0", &conf);
    assert_eq!(
        out.json()["msg"],
        "no default route interface found",
        "{out}"
    );

    ctr.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
    ctr.ip(&["link", "set", "up0", "up"]);
    conf["master"] = json!("up0");
    conf["linkInContainer"] = json!(true);
    iv.run("ADD", "ctr-d", ctr.path_str(), "eth0", &conf)
        .assert_success();
    assert_eq!(link_details(&ctr.name, "eth0")["link"], "up0");
    iv.run("DEL", "ctr-d", ctr.path_str(), "eth0", &conf)
        .assert_success();
    let mut left = links_of(&ctr.name);
    left.sort();
    assert_eq!(left, ["up0", "up1"]);
}

#[test]
fn two_containers_on_one_parent_reach_each_other() {
    if !require_link_kind("ipvlan") {
        return;
    }
    let dir = AppletDir::new();
    for mode in ["l2", "l3"] {
        let host = host_with_parent("iv-tr", "iv0");
        let iv = Plugin::ours(&dir, &host, "ipvlan");
        let (a, b) = (Netns::new("iv-tra"), Netns::new("iv-trb"));
        let mut conf = config(&host, "1.0.0", "ivtr");
        conf["mode"] = json!(mode);
        iv.run("ADD", "ctr-a", a.path_str(), "eth0", &conf)
            .assert_success();
        iv.run("ADD", "ctr-b", b.path_str(), "eth0", &conf)
            .assert_success();
        assert!(ping(&a.name, "10.73.0.3"), "{mode}: a cannot reach b");
        assert!(ping(&b.name, "10.73.0.2"), "{mode}: b cannot reach a");
        for (ns, cid) in [(&a, "ctr-a"), (&b, "ctr-b")] {
            iv.run("DEL", cid, ns.path_str(), "eth0", &conf)
                .assert_success();
        }
    }
}

#[test]
fn del_succeeds_whatever_is_already_gone() {
    if !require_link_kind("ipvlan") {
        return;
    }
    let dir = AppletDir::new();
    for gone in ALL_GONE {
        let host = host_with_parent("iv-del", "iv0");
        let iv = Plugin::ours(&dir, &host, "ipvlan");
        del_survives(&iv, &host, &config(&host, "1.0.0", "ivdel"), "ivdel", gone);
    }
}

#[test]
fn gc_and_status_delegate_to_ipam() {
    if !require_link_kind("ipvlan") {
        return;
    }
    let dir = AppletDir::new();
    let host = host_with_parent("iv-gc", "iv0");
    let iv = Plugin::ours(&dir, &host, "ipvlan");
    let conf = config(&host, "1.1.0", "ivgc");
    gc_and_status(&iv, &host, &conf, "ivgc", |cid| {
        let ctr = Netns::new("iv-gcc");
        iv.run("ADD", cid, ctr.path_str(), "eth0", &conf)
            .assert_success();
        ctr
    });
}
