//! Smoke test of the full-kernel VM lane (tests/vm): the link kinds this
//! project's host kernels lack can be created in a namespace there. On such a
//! host every test prints `SKIP: ... (runs in the VM lane, tests/vm)`; inside
//! the lane (`CNIBOX_VM=1`) a missing kind fails instead.

#[allow(unused_imports)] // common re-exports `json`, which this file does not use
mod common;

use common::{Netns, is_root, note};

/// Create a link of `kind` (the `ip link add` arguments after the name) in a
/// throwaway namespace and check the kernel reports that kind back.
fn create_in_netns(kind: &str, extra: &[&str]) {
    if !is_root() {
        note(&format!(
            "SKIP: {} because it needs root",
            common::test_name()
        ));
        return;
    }
    if !common::require_link_kind(kind) {
        return;
    }
    let ns = Netns::new("vmsmoke");
    let mut args = vec!["link", "add"];
    if matches!(kind, "vlan" | "ipvlan") {
        ns.ip(&[
            "link", "add", "parent0", "type", "veth", "peer", "name", "peer0",
        ]);
        ns.ip(&["link", "set", "parent0", "up"]);
        args.extend(["link", "parent0"]);
    }
    args.extend(["name", "smoke0", "type", kind]);
    args.extend(extra);
    ns.ip(&args);
    ns.ip(&["link", "set", "smoke0", "up"]);
    let links = ns.ip_json(&["-d", "link", "show", "smoke0"]);
    assert_eq!(
        links[0]["linkinfo"]["info_kind"], kind,
        "ip -d link show smoke0: {links}"
    );
}

#[test]
fn dummy_link() {
    create_in_netns("dummy", &[]);
}

#[test]
fn vlan_link() {
    create_in_netns("vlan", &["id", "42"]);
}

#[test]
fn ipvlan_link() {
    create_in_netns("ipvlan", &["mode", "l2"]);
}

#[test]
fn vrf_link() {
    create_in_netns("vrf", &["table", "100"]);
}

#[test]
fn bridge_vlan_filtering() {
    if !is_root() {
        note(&format!(
            "SKIP: {} because it needs root",
            common::test_name()
        ));
        return;
    }
    if !common::require_bridge_vlan_filtering() {
        return;
    }
    let ns = Netns::new("vmsmoke");
    ns.ip(&[
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "vlan_filtering",
        "1",
    ]);
    let links = ns.ip_json(&["-d", "link", "show", "br0"]);
    assert_eq!(
        links[0]["linkinfo"]["info_data"]["vlan_filtering"], 1,
        "ip -d link show br0: {links}"
    );
}

/// Inside the lane: the tools the tests call work (their libraries made it
/// into the initramfs) and the Go plugins are there.
#[test]
fn vm_lane_tools() {
    if !common::require_vm_lane() {
        return;
    }
    for (tool, args) in [
        ("ip", &["-V"][..]),
        ("bridge", &["-V"][..]),
        ("nft", &["list", "ruleset"][..]),
        ("iptables", &["-t", "nat", "-S"][..]),
        ("ip6tables", &["-S"][..]),
        ("iptables-save", &[][..]),
    ] {
        let out = std::process::Command::new(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        std::path::Path::new("/dev/net/tun").exists(),
        "/dev/net/tun is missing"
    );
    if std::env::var("CNIBOX_REQUIRE_GO").as_deref() == Ok("1") {
        let out = std::process::Command::new("/usr/lib/cni/loopback")
            .env("CNI_COMMAND", "VERSION")
            .output()
            .expect("running the Go loopback plugin");
        assert!(out.status.success(), "Go loopback VERSION failed: {out:?}");
    }
}
