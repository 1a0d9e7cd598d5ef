//! host-device through its applet link, run inside a throwaway host namespace; the device is a
//! veth end there. Moved in and back out intact, every spec version, every selector, the
//! sysfs-of-another-namespace case, rollback of a failed ADD, DEL without a namespace (IPAM
//! released), CHECK, STATUS, GC, and the differential run against Debian's Go host-device.

mod common;
mod plugin_env;
mod single_iface;

use common::*;
use plugin_env::*;
use single_iface::*;

const DEV_MAC: &str = "02:00:00:00:20:01";

/// A host with the veth pair `hd0` (the device: MAC [`DEV_MAC`], MTU 1400, up) – `zzpeer0`.
fn host_with_device(tag: &str) -> Host {
    let host = Host::new(tag);
    host.ns.ip(&[
        "link", "add", "hd0", "type", "veth", "peer", "name", "zzpeer0",
    ]);
    host.ns.ip(&[
        "link", "set", "hd0", "address", DEV_MAC, "mtu", "1400", "up",
    ]);
    host.ns.ip(&["link", "set", "zzpeer0", "up"]);
    host
}

fn config(host: &Host, version: &str, network: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": network,
        "type": "host-device",
        "device": "hd0",
        "ipam": host_local(host, "10.71.0.0/24"),
    })
}

/// The device as the host sees it: (MAC, MTU, alias, up).
fn device_state(ns: &str, dev: &str) -> (Value, Value, Value, bool) {
    let link = link_details(ns, dev);
    let up = link["flags"]
        .as_array()
        .is_some_and(|f| f.contains(&json!("UP")));
    (
        link["address"].clone(),
        link["mtu"].clone(),
        link.get("ifalias").cloned().unwrap_or(Value::Null),
        up,
    )
}

#[test]
fn moved_in_and_back_out_intact_for_every_spec_version() {
    let dir = AppletDir::new();
    for version in VERSIONS {
        let host = host_with_device("hd-v");
        let hd = Plugin::ours(&dir, &host, "host-device");
        let ctr = Netns::new("hd-vc");
        let conf = config(&host, version, "hdv");
        let add = hd.run("ADD", "ctr-v", ctr.path_str(), "eth0", &conf);
        add.assert_success();
        let result = add.json();
        let addrs = assert_single_result(&result, version, "eth0", ctr.path_str());
        assert_eq!(addrs, ["10.71.0.2/24"]);
        if version >= "0.3.0" {
            assert_eq!(result["interfaces"][0]["mac"], DEV_MAC);
        }
        assert_eq!(link_details(&host.ns.name, "hd0"), Value::Null);
        assert_eq!(
            device_state(&ctr.name, "eth0"),
            (json!(DEV_MAC), json!(1400), json!("hd0"), true)
        );
        assert_eq!(addresses(&ctr.name, "eth0"), ["10.71.0.2/24"]);
        // The moved device still carries traffic to its peer on the host.
        host.ns
            .ip(&["addr", "add", "10.71.0.1/24", "dev", "zzpeer0"]);
        assert!(
            ping(&ctr.name, "10.71.0.1"),
            "no traffic through the moved device"
        );
        host.ns
            .ip(&["addr", "del", "10.71.0.1/24", "dev", "zzpeer0"]);
        if version >= "0.4.0" {
            hd.run_with_prev("CHECK", ("ctr-v", ctr.path_str(), "eth0"), &conf, &result);
            let mut bad = result.clone();
            bad["interfaces"][0]["mac"] = json!("02:00:00:00:20:99");
            let out = hd.run(
                "CHECK",
                "ctr-v",
                ctr.path_str(),
                "eth0",
                &with_prev(&conf, &bad),
            );
            assert!(
                out.json()["msg"]
                    .as_str()
                    .unwrap()
                    .contains("doesn't match container Mac"),
                "{out}"
            );
            let missing = hd.run("CHECK", "ctr-v", ctr.path_str(), "eth0", &conf);
            assert_eq!(missing.json()["msg"], "Required prevResult missing");
        }
        let del = hd.run("DEL", "ctr-v", ctr.path_str(), "eth0", &conf);
        del.assert_success();
        // Back under its own name, same MAC and MTU, alias cleared, left down.
        assert_eq!(
            device_state(&host.ns.name, "hd0"),
            (json!(DEV_MAC), json!(1400), Value::Null, false)
        );
        assert!(links_of(&ctr.name).is_empty());
        assert_eq!(host.reservations("hdv"), Vec::<String>::new());
        hd.run("DEL", "ctr-v", ctr.path_str(), "eth0", &conf)
            .assert_success();
        assert_eq!(link_details(&host.ns.name, "hd0")["address"], DEV_MAC);
    }
}

#[test]
fn every_selector_finds_the_device() {
    let dir = AppletDir::new();
    // kernelpath: /sys/devices/virtual/net lists this host's virtual links (sysfs is
    // remounted for the namespace by `ip netns exec`); hd0 sorts first.
    let selectors = [
        json!({"device": "hd0"}),
        json!({"hwaddr": DEV_MAC.to_uppercase()}),
        json!({"kernelpath": "/sys/devices/virtual"}),
        // The key wins over the others (it is looked at first).
        json!({"device": "hd0", "hwaddr": "02:00:00:00:20:99"}),
    ];
    for sel in selectors {
        let host = host_with_device("hd-sel");
        let hd = Plugin::ours(&dir, &host, "host-device");
        let ctr = Netns::new("hd-selc");
        let mut conf = json!({"cniVersion": "1.0.0", "name": "hdsel", "type": "host-device"});
        for (k, v) in sel.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let add = hd.run("ADD", "ctr-s", ctr.path_str(), "net1", &conf);
        add.assert_success();
        let result = add.json();
        assert_eq!(result["interfaces"][0]["mac"], DEV_MAC, "{sel}");
        assert_eq!(result["interfaces"][0]["name"], "net1");
        assert!(
            result.get("ips").is_none() && result.get("dns").is_none(),
            "{result}"
        );
        assert_eq!(device_state(&ctr.name, "net1").2, json!("hd0"), "{sel}");
        hd.run("DEL", "ctr-s", ctr.path_str(), "net1", &conf)
            .assert_success();
        assert_eq!(
            link_details(&host.ns.name, "hd0")["address"],
            DEV_MAC,
            "{sel}"
        );
    }
}

#[test]
fn selector_errors_move_nothing() {
    let dir = AppletDir::new();
    let host = host_with_device("hd-bad");
    let hd = Plugin::ours(&dir, &host, "host-device");
    let ctr = Netns::new("hd-badc");
    for (sel, msg) in [
        (
            json!({}),
            "specify either \"device\", \"hwaddr\", \"kernelpath\" or \"pciBusID\"",
        ),
        (
            json!({"device": "nope0"}),
            "failed to find host device: Link not found",
        ),
        (
            json!({"hwaddr": "02:00:00:00:20:99"}),
            "failed to find host device: failed to find physical interface",
        ),
        (
            json!({"hwaddr": "nonsense"}),
            "failed to find host device: failed to parse MAC address \"nonsense\": address nonsense: invalid MAC address",
        ),
        (
            json!({"kernelpath": "/sys/class/net/hd0"}),
            "failed to find host device: kernel device path \"/sys/class/net/hd0\" must be absolute and begin with /sys/devices/",
        ),
        (
            json!({"pciBusID": "0000:ff:1f.7"}),
            "error with host device: No such file or directory (os error 2)",
        ),
        (
            json!({"runtimeConfig": {"deviceID": "0000:ff:1f.7"}}),
            "runtime config DeviceID 0000:ff:1f.7 not found or unsupported",
        ),
    ] {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "hdbad", "type": "host-device",
                              "ipam": host_local(&host, "10.71.0.0/24")});
        for (k, v) in sel.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let out = hd.run("ADD", "ctr-b", ctr.path_str(), "eth0", &conf);
        assert_eq!(out.json()["msg"], msg, "{sel}: {out}");
        assert!(links_of(&ctr.name).is_empty());
        assert_eq!(host.reservations("hdbad"), Vec::<String>::new());
    }
    assert!(device_state(&host.ns.name, "hd0").3);
}

/// A PCI NIC of the machine is listed by the test's sysfs but lives in the machine's own
/// namespace, not in the plugin's: selecting it by pciBusID or deviceID must fail there and
/// leave it alone (sysfs is per namespace; the plugin trusts netlink for the namespace).
#[test]
fn a_pci_device_of_another_namespace_is_not_taken() {
    let Some(pci) = first_pci_nic() else {
        skip("the PCI case", "this machine has no PCI network device");
        return;
    };
    let dir = AppletDir::new();
    let host = host_with_device("hd-pci");
    let hd = Plugin::ours(&dir, &host, "host-device");
    let ctr = Netns::new("hd-pcic");
    let before = ip_json("", &["link", "show"]);
    for sel in [
        json!({"pciBusID": pci}),
        json!({"runtimeConfig": {"deviceID": pci}}),
    ] {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "hdpci", "type": "host-device"});
        for (k, v) in sel.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let out = hd.run("ADD", "ctr-p", ctr.path_str(), "eth0", &conf);
        out.assert_failure();
        let msg = out.json()["msg"].as_str().unwrap().to_string();
        assert!(
            msg.starts_with("failed to find host device: failed to find network device in path"),
            "{sel}: {msg}"
        );
        assert!(links_of(&ctr.name).is_empty());
    }
    assert_eq!(
        ip_json("", &["link", "show"]),
        before,
        "the machine's links changed"
    );
}

/// The address of a PCI device with a network interface, per the test's own sysfs.
fn first_pci_nic() -> Option<String> {
    let mut devices: Vec<_> = std::fs::read_dir("/sys/bus/pci/devices")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    devices.sort();
    devices.into_iter().find_map(|dev| {
        let direct = dev.join("net").is_dir();
        let virtio = std::fs::read_dir(&dev).ok()?.flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with("virtio") && e.path().join("net").is_dir()
        });
        (direct || virtio).then(|| dev.file_name().unwrap().to_string_lossy().into_owned())
    })
}

#[test]
fn a_failed_add_gives_the_device_back_as_it_was() {
    let dir = AppletDir::new();
    let host = host_with_device("hd-rb");
    let hd = Plugin::ours(&dir, &host, "host-device");
    let ctr = Netns::new("hd-rbc");
    // The name is taken in the container: the last move fails.
    ctr.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
    ]);
    let conf = config(&host, "1.0.0", "hdrb");
    let out = hd.run("ADD", "ctr-r", ctr.path_str(), "eth0", &conf);
    out.assert_failure();
    assert!(
        out.json()["msg"]
            .as_str()
            .unwrap()
            .starts_with("failed to move link"),
        "{out}"
    );
    assert_eq!(
        device_state(&host.ns.name, "hd0"),
        (json!(DEV_MAC), json!(1400), Value::Null, true)
    );
    assert_eq!(host.reservations("hdrb"), Vec::<String>::new());
    // IPAM fails after the move: the device comes back too, up again.
    ctr.ip(&["link", "del", "eth0"]);
    let mut conf = conf.clone();
    conf["ipam"]["subnet"] = json!("not-a-subnet");
    let out = hd.run("ADD", "ctr-r", ctr.path_str(), "eth0", &conf);
    out.assert_failure();
    assert_eq!(
        device_state(&host.ns.name, "hd0"),
        (json!(DEV_MAC), json!(1400), Value::Null, true)
    );
    assert!(links_of(&ctr.name).is_empty());
}

/// The reference returns before IPAM DEL when `CNI_NETNS` is empty, so the address leaks;
/// ours releases it, and a later DEL with the namespace still brings the device back.
#[test]
fn del_without_a_namespace_releases_ipam() {
    let dir = AppletDir::new();
    let go_too = go_plugin("host-device").is_some();
    for go in [false, true] {
        if go && !go_too {
            continue;
        }
        let host = host_with_device("hd-nn");
        let hd = ours_or_go(&dir, &host, "host-device", go);
        let ctr = Netns::new("hd-nnc");
        let conf = config(&host, "1.0.0", "hdnn");
        hd.run("ADD", "ctr-n", ctr.path_str(), "eth0", &conf)
            .assert_success();
        hd.run("DEL", "ctr-n", "", "eth0", &conf).assert_success();
        let left = host.reservations("hdnn");
        if go {
            assert_eq!(
                left.len(),
                1,
                "Go host-device no longer leaks: update this test"
            );
        } else {
            assert_eq!(left, Vec::<String>::new());
        }
        hd.run("DEL", "ctr-n", ctr.path_str(), "eth0", &conf)
            .assert_success();
        assert_eq!(link_details(&host.ns.name, "hd0")["address"], DEV_MAC);
    }
}

#[test]
fn del_succeeds_whatever_is_already_gone() {
    let dir = AppletDir::new();
    for gone in ALL_GONE {
        let host = host_with_device("hd-del");
        let hd = Plugin::ours(&dir, &host, "host-device");
        del_survives(&hd, &host, &config(&host, "1.0.0", "hddel"), "hddel", gone);
        if gone == Gone::Nothing {
            assert_eq!(link_details(&host.ns.name, "hd0")["address"], DEV_MAC);
        }
    }
}

#[test]
fn gc_and_status_delegate_to_ipam() {
    let dir = AppletDir::new();
    let host = host_with_device("hd-gc");
    host.ns.ip(&[
        "link", "add", "hd1", "type", "veth", "peer", "name", "zzpeer1",
    ]);
    let hd = Plugin::ours(&dir, &host, "host-device");
    let conf = config(&host, "1.1.0", "hdgc");
    let mut devices = ["hd0", "hd1"].into_iter();
    gc_and_status(&hd, &host, &conf, "hdgc", |cid| {
        let ctr = Netns::new("hd-gcc");
        let mut c = conf.clone();
        c["device"] = json!(devices.next().unwrap());
        hd.run("ADD", cid, ctr.path_str(), "eth0", &c)
            .assert_success();
        ctr
    });
}

/// Known differences between Debian's Go host-device v1.1.1 and ours, each normalised or
/// checked apart below:
/// - the alias after DEL: v1.1.1 leaves the old name in the alias of the returned device;
///   v1.9.1 and ours clear it.
/// - the moves: v1.1.1 renames the device inside the container (the host briefly lacks it
///   only); v1.9.1 and ours rename it in a throwaway namespace. Not observable afterwards.
/// - DEL with an empty `CNI_NETNS`: see [`del_without_a_namespace_releases_ipam`].
/// - an empty DNS section: Go prints `"dns": {}`, ours leaves the key out.
/// - JSON key order of the printed result: compared semantically.
#[test]
fn differential_against_go_host_device() {
    let Some(_) = go_plugin("host-device") else {
        return;
    };
    let dir = AppletDir::new();
    for with_ipam in [true, false] {
        let mut seen = Vec::new();
        for go in [false, true] {
            let host = host_with_device(if go { "hd-go" } else { "hd-rs" });
            let plugin = ours_or_go(&dir, &host, "host-device", go);
            let ctr = Netns::new("hd-dc");
            let mut conf = json!({
                "cniVersion": "1.0.0", "name": "hddiff", "type": "host-device",
                "device": "hd0",
                "dns": {"nameservers": ["10.71.0.53"]},
            });
            if with_ipam {
                conf["ipam"] = routed_ipam(&host, "10.71.0.0/24", "10.81.0.0/16", "10.71.0.1");
            }
            let add = plugin.run("ADD", "ctr-diff", ctr.path_str(), "net1", &conf);
            add.assert_success();
            let mut result = add.json();
            // Go prints an empty `"dns": {}`; the protocol layer here leaves it out.
            if result["dns"] == json!({}) {
                result.as_object_mut().unwrap().remove("dns");
            }
            let inside = device_state(&ctr.name, "net1");
            let addrs = addresses(&ctr.name, "net1");
            plugin.check_and_del(("ctr-diff", ctr.path_str(), "net1"), &conf, &result);
            let (mac, mtu, alias, up) = device_state(&host.ns.name, "hd0");
            assert_eq!(
                alias,
                if go { json!("hd0") } else { Value::Null },
                "alias after DEL"
            );
            seen.push(json!({
                "result": normalise(&result),
                "mac": result["interfaces"][0]["mac"],
                "addrs": addrs,
                "inside": [inside.0, inside.1, inside.2, inside.3],
                "back": [mac, mtu, up],
                "ctr_links": links_of(&ctr.name),
                "reservations": host.reservations("hddiff"),
            }));
        }
        assert_eq!(
            seen[0], seen[1],
            "ipam {with_ipam}: ours (left) vs Go (right)"
        );
    }
}
