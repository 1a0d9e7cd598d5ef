//! vlan through its applet link, run inside a throwaway host namespace whose masters are the
//! two ends of a veth pair there: every spec version, the vlanId range, MTU, linkInContainer,
//! frames tagged with the right id (same id: reachable, other id: not), DEL after the master
//! is gone, the DEL teardown matrix, CHECK, STATUS, GC. The kernels of the project's machines
//! have no 802.1Q: these tests run in the VM lane (tests/vm) and print SKIP elsewhere.

mod common;
mod plugin_env;
mod single_iface;

use common::*;
use plugin_env::*;
use single_iface::*;

/// A host with the veth pair `vl0` – `vl1`, both up: a wire between two masters.
fn host_with_wire(tag: &str) -> Host {
    let host = Host::new(tag);
    host.ns
        .ip(&["link", "add", "vl0", "type", "veth", "peer", "name", "vl1"]);
    host.ns.ip(&["link", "set", "vl0", "up"]);
    host.ns.ip(&["link", "set", "vl1", "up"]);
    host
}

fn config(host: &Host, version: &str, network: &str, master: &str, id: i64) -> Value {
    json!({
        "cniVersion": version,
        "name": network,
        "type": "vlan",
        "master": master,
        "vlanId": id,
        "ipam": host_local(host, "10.74.0.0/24"),
    })
}

#[test]
fn add_check_del_for_every_spec_version() {
    if !require_link_kind("vlan") {
        return;
    }
    every_spec_version(&VersionCase {
        plugin: "vlan",
        host: &|| host_with_wire("vl-v"),
        conf: &|host, version| config(host, version, "vlv", "vl0", 42),
        network: "vlv",
        addr: "10.74.0.2/24",
        missing_prev: "vlan: Required prevResult missing",
        after_add: &|_, ctr, _| {
            let link = link_details(&ctr.name, "eth0");
            assert_eq!(link["linkinfo"]["info_kind"], "vlan", "{link}");
            assert_eq!(link["linkinfo"]["info_data"]["id"], 42, "{link}");
            assert_eq!(
                link["linkinfo"]["info_data"]["protocol"], "802.1Q",
                "{link}"
            );
        },
    });
}

#[test]
fn check_compares_the_vlan_id_and_mtu() {
    if !require_link_kind("vlan") {
        return;
    }
    let dir = AppletDir::new();
    let host = host_with_wire("vl-ck");
    let vl = Plugin::ours(&dir, &host, "vlan");
    let ctr = Netns::new("vl-ckc");
    let conf = config(&host, "1.0.0", "vlck", "vl0", 42);
    let add = vl.run("ADD", "ctr-c", ctr.path_str(), "eth0", &conf);
    add.assert_success();
    let prev = with_prev(&conf, &add.json());
    let mut wrong = prev.clone();
    wrong["vlanId"] = json!(43);
    let out = vl.run("CHECK", "ctr-c", ctr.path_str(), "eth0", &wrong);
    assert_eq!(
        out.json()["msg"],
        "Error: vlan link eth0 configured VLAN id is 43, current value is 42",
        "{out}"
    );
    let mut wrong = prev.clone();
    wrong["mtu"] = json!(1400);
    let out = vl.run("CHECK", "ctr-c", ctr.path_str(), "eth0", &wrong);
    assert!(
        out.json()["msg"]
            .as_str()
            .unwrap()
            .contains("configured MTU is 1400"),
        "{out}"
    );
    vl.run("DEL", "ctr-c", ctr.path_str(), "eth0", &conf)
        .assert_success();
}

#[test]
fn vlan_id_mtu_master_and_ipam_are_checked() {
    if !require_link_kind("vlan") {
        return;
    }
    let dir = AppletDir::new();
    let host = host_with_wire("vl-bad");
    let vl = Plugin::ours(&dir, &host, "vlan");
    let ctr = Netns::new("vl-badc");
    for id in [0, 4094] {
        let conf = config(&host, "1.0.0", "vlok", "vl0", id);
        vl.run("ADD", "ctr-ok", ctr.path_str(), "eth0", &conf)
            .assert_success();
        assert_eq!(
            link_details(&ctr.name, "eth0")["linkinfo"]["info_data"]["id"],
            id
        );
        vl.run("DEL", "ctr-ok", ctr.path_str(), "eth0", &conf)
            .assert_success();
    }
    let mut with_mtu = config(&host, "1.0.0", "vlok", "vl0", 7);
    with_mtu["mtu"] = json!(1400);
    vl.run("ADD", "ctr-ok", ctr.path_str(), "eth0", &with_mtu)
        .assert_success();
    assert_eq!(link_details(&ctr.name, "eth0")["mtu"], 1400);
    vl.run("DEL", "ctr-ok", ctr.path_str(), "eth0", &with_mtu)
        .assert_success();
    for (key, value, msg) in [
        (
            "vlanId",
            json!(4095),
            "invalid VLAN ID 4095 (must be between 0 and 4094 inclusive)",
        ),
        (
            "vlanId",
            json!(-1),
            "invalid VLAN ID -1 (must be between 0 and 4094 inclusive)",
        ),
        (
            "master",
            json!(""),
            "\"master\" field is required. It specifies the host interface name to create the VLAN for",
        ),
        (
            "master",
            json!("nope0"),
            "failed to lookup master \"nope0\": Link not found",
        ),
        (
            "mtu",
            json!(1501),
            "invalid MTU 1501, must be [0, master MTU(1500)]",
        ),
        (
            "ipam",
            json!({}),
            "vlan interface requires an IPAM configuration",
        ),
    ] {
        let mut conf = config(&host, "1.0.0", "vlbad", "vl0", 5);
        conf[key] = value;
        let out = vl.run("ADD", "ctr-b", ctr.path_str(), "eth0", &conf);
        assert_eq!(out.json()["msg"], msg, "{key}: {out}");
        assert!(links_of(&ctr.name).is_empty());
        assert_eq!(host.reservations("vlbad"), Vec::<String>::new());
    }
    let no_ipam = json!({"cniVersion": "1.1.0", "name": "vlbad", "type": "vlan", "master": "vl0"});
    let out = Invocation::new(&vl.wrapper)
        .command("STATUS")
        .cni_path(&vl.cni_path)
        .config(&no_ipam)
        .run();
    assert_eq!(
        out.json()["msg"],
        "vlan interface requires an IPAM configuration"
    );
}

/// Two containers on the same id at either end of the wire reach each other; a container on
/// another id does not reach them, though its frames cross the same wire.
#[test]
fn frames_carry_the_configured_id() {
    if !require_link_kind("vlan") {
        return;
    }
    let dir = AppletDir::new();
    let host = host_with_wire("vl-tr");
    let vl = Plugin::ours(&dir, &host, "vlan");
    let (a, b, c) = (
        Netns::new("vl-tra"),
        Netns::new("vl-trb"),
        Netns::new("vl-trc"),
    );
    let a_conf = config(&host, "1.0.0", "vltr", "vl0", 10);
    let b_conf = config(&host, "1.0.0", "vltr", "vl1", 10);
    let c_conf = config(&host, "1.0.0", "vltr", "vl1", 20);
    vl.run("ADD", "ctr-a", a.path_str(), "eth0", &a_conf)
        .assert_success();
    vl.run("ADD", "ctr-b", b.path_str(), "eth0", &b_conf)
        .assert_success();
    vl.run("ADD", "ctr-c", c.path_str(), "eth0", &c_conf)
        .assert_success();
    // a .2, b .3, c .4
    assert!(
        ping(&a.name, "10.74.0.3"),
        "same id 10 across the wire does not work"
    );
    assert!(ping(&b.name, "10.74.0.2"));
    assert!(!ping_once(&c.name, "10.74.0.2"), "id 20 reached id 10");
    for (ns, cid, conf) in [(&b, "ctr-b", &b_conf), (&c, "ctr-c", &c_conf)] {
        vl.run("DEL", cid, ns.path_str(), "eth0", conf)
            .assert_success();
    }
    // A plain 802.1Q link with id 10 on the host end (free again: one link per id and
    // master) sees the container's frames too.
    // The kernel frees a deleted VLAN's id on its master asynchronously: retry briefly.
    let probe_added = (0..50).any(|_| {
        let added = std::process::Command::new("ip")
            .args([
                "-n",
                &host.ns.name,
                "link",
                "add",
                "link",
                "vl1",
                "name",
                "probe10",
            ])
            .args(["type", "vlan", "id", "10"])
            .status()
            .is_ok_and(|s| s.success());
        if !added {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        added
    });
    assert!(probe_added, "id 10 on vl1 never became free after the DELs");
    host.ns
        .ip(&["addr", "add", "10.74.0.200/24", "dev", "probe10"]);
    host.ns.ip(&["link", "set", "probe10", "up"]);
    assert!(
        ping(&host.ns.name, "10.74.0.2"),
        "the host's id 10 cannot reach a"
    );
    vl.run("DEL", "ctr-a", a.path_str(), "eth0", &a_conf)
        .assert_success();
}

#[test]
fn link_in_container_and_del_after_the_master_is_gone() {
    if !require_link_kind("vlan") {
        return;
    }
    let dir = AppletDir::new();
    let host = host_with_wire("vl-lic");
    let vl = Plugin::ours(&dir, &host, "vlan");
    let ctr = Netns::new("vl-licc");
    ctr.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
    ctr.ip(&["link", "set", "up0", "up"]);
    let mut conf = config(&host, "1.0.0", "vllic", "up0", 30);
    conf["linkInContainer"] = json!(true);
    let add = vl.run("ADD", "ctr-l", ctr.path_str(), "eth0", &conf);
    add.assert_success();
    assert_eq!(link_details(&ctr.name, "eth0")["link"], "up0");
    vl.run(
        "CHECK",
        "ctr-l",
        ctr.path_str(),
        "eth0",
        &with_prev(&conf, &add.json()),
    )
    .assert_success();
    vl.run("DEL", "ctr-l", ctr.path_str(), "eth0", &conf)
        .assert_success();

    // The reference's DEL fails once the master is gone; ours releases and succeeds.
    let conf = config(&host, "1.0.0", "vllic", "vl0", 31);
    vl.run("ADD", "ctr-l", ctr.path_str(), "eth0", &conf)
        .assert_success();
    host.ns.ip(&["link", "del", "vl0"]);
    vl.run("DEL", "ctr-l", ctr.path_str(), "eth0", &conf)
        .assert_success();
    assert_eq!(host.reservations("vllic"), Vec::<String>::new());
    let mut left = links_of(&ctr.name);
    left.sort();
    assert_eq!(left, ["up0", "up1"]);
}

#[test]
fn del_succeeds_whatever_is_already_gone() {
    if !require_link_kind("vlan") {
        return;
    }
    let dir = AppletDir::new();
    for gone in ALL_GONE {
        let host = host_with_wire("vl-del");
        let vl = Plugin::ours(&dir, &host, "vlan");
        del_survives(
            &vl,
            &host,
            &config(&host, "1.0.0", "vldel", "vl0", 9),
            "vldel",
            gone,
        );
    }
}

#[test]
fn gc_and_status_delegate_to_ipam() {
    if !require_link_kind("vlan") {
        return;
    }
    let dir = AppletDir::new();
    let host = host_with_wire("vl-gc");
    let vl = Plugin::ours(&dir, &host, "vlan");
    let conf = config(&host, "1.1.0", "vlgc", "vl0", 11);
    // One id per master: each attachment gets its own.
    let mut id = 11;
    gc_and_status(&vl, &host, &conf, "vlgc", |cid| {
        let ctr = Netns::new("vl-gcc");
        id += 1;
        let mut c = conf.clone();
        c["vlanId"] = json!(id);
        vl.run("ADD", cid, ctr.path_str(), "eth0", &c)
            .assert_success();
        ctr
    });
}
