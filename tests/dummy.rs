//! dummy through its applet link, run inside a throwaway host namespace: every spec version,
//! IPAM required, CHECK (kind, MAC, up, addresses), the DEL teardown matrix, STATUS, GC. The
//! kernels of the project's machines have no dummy links: these tests run in the VM lane
//! (tests/vm) and print SKIP elsewhere.

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
        "type": "dummy",
        "ipam": host_local(host, "10.75.0.0/24"),
    })
}

#[test]
fn add_check_del_for_every_spec_version() {
    if !require_link_kind("dummy") {
        return;
    }
    every_spec_version(&VersionCase {
        plugin: "dummy",
        host: &|| Host::new("dm-v"),
        conf: &|host, version| {
            let mut conf = config(host, version, "dmv");
            // dummy keeps the IPAM result's DNS, not the config's.
            conf["dns"] = json!({"nameservers": ["10.75.0.53"]});
            conf
        },
        network: "dmv",
        addr: "10.75.0.2/24",
        missing_prev: "dummy: Required prevResult missing",
        after_add: &|host, ctr, result| {
            assert!(
                result.get("dns").is_none_or(|d| d == &json!({})),
                "{result}"
            );
            let link = link_details(&ctr.name, "eth0");
            assert_eq!(link["linkinfo"]["info_kind"], "dummy", "{link}");
            assert!(link["flags"].as_array().unwrap().contains(&json!("UP")));
            assert_eq!(host.links_named(""), ["lo"]);
        },
    });
}

#[test]
fn check_finds_a_dummy_that_is_down() {
    if !require_link_kind("dummy") {
        return;
    }
    let dir = AppletDir::new();
    let host = Host::new("dm-ck");
    let dm = Plugin::ours(&dir, &host, "dummy");
    let ctr = Netns::new("dm-ckc");
    let conf = config(&host, "1.0.0", "dmck");
    let add = dm.run("ADD", "ctr-c", ctr.path_str(), "eth0", &conf);
    add.assert_success();
    let prev = with_prev(&conf, &add.json());
    ctr.ip(&["link", "set", "eth0", "down"]);
    let out = dm.run("CHECK", "ctr-c", ctr.path_str(), "eth0", &prev);
    assert_eq!(out.json()["msg"], "Interface eth0 is down", "{out}");
    dm.run("DEL", "ctr-c", ctr.path_str(), "eth0", &conf)
        .assert_success();
}

#[test]
fn ipam_is_required_and_a_failed_add_leaves_nothing() {
    if !require_link_kind("dummy") {
        return;
    }
    let dir = AppletDir::new();
    let host = Host::new("dm-bad");
    let dm = Plugin::ours(&dir, &host, "dummy");
    let ctr = Netns::new("dm-badc");
    let no_ipam = json!({"cniVersion": "1.1.0", "name": "dmbad", "type": "dummy"});
    for verb in ["ADD", "CHECK", "STATUS"] {
        let out = dm
            .invocation(verb, "ctr-b", ctr.path_str(), "eth0")
            .config(&no_ipam)
            .run();
        assert_eq!(
            out.json()["msg"],
            "dummy interface requires an IPAM configuration",
            "{verb}: {out}"
        );
    }
    // IPAM fails after the link exists: the link goes again.
    let mut broken = config(&host, "1.0.0", "dmbad");
    broken["ipam"]["subnet"] = json!("not-a-subnet");
    dm.run("ADD", "ctr-b", ctr.path_str(), "eth0", &broken)
        .assert_failure();
    assert!(links_of(&ctr.name).is_empty());
    // The name is taken: nothing reserved.
    ctr.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    let out = dm.run(
        "ADD",
        "ctr-b",
        ctr.path_str(),
        "eth0",
        &config(&host, "1.0.0", "dmbad"),
    );
    assert!(
        out.json()["msg"]
            .as_str()
            .unwrap()
            .starts_with("failed to create dummy"),
        "{out}"
    );
    assert_eq!(host.reservations("dmbad"), Vec::<String>::new());
}

#[test]
fn del_succeeds_whatever_is_already_gone() {
    if !require_link_kind("dummy") {
        return;
    }
    let dir = AppletDir::new();
    for gone in ALL_GONE {
        let host = Host::new("dm-del");
        let dm = Plugin::ours(&dir, &host, "dummy");
        del_survives(&dm, &host, &config(&host, "1.0.0", "dmdel"), "dmdel", gone);
    }
}

#[test]
fn gc_and_status_delegate_to_ipam() {
    if !require_link_kind("dummy") {
        return;
    }
    let dir = AppletDir::new();
    let host = Host::new("dm-gc");
    let dm = Plugin::ours(&dir, &host, "dummy");
    let conf = config(&host, "1.1.0", "dmgc");
    gc_and_status(&dm, &host, &conf, "dmgc", |cid| {
        let ctr = Netns::new("dm-gcc");
        dm.run("ADD", cid, ctr.path_str(), "eth0", &conf)
            .assert_success();
        ctr
    });
}
