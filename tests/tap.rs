//! tap through its applet link, run inside a throwaway host namespace: every spec version,
//! MTU, the MAC sources, multiQueue, owner and group (and the device flags of the reference's
//! two creation paths), a bridge in the container, selinuxContext where SELinux is off, the
//! DEL teardown matrix, CHECK, STATUS and GC.
//!
//! There is no differential run: Debian's Go plugins v1.1.1 predate the tap plugin (it came
//! with v1.2.0), so /usr/lib/cni has no tap to compare with.

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
        "type": "tap",
        "ipam": host_local(host, "10.72.0.0/24"),
    })
}

/// The tun driver's view of `dev` in `ns` (`ip -d`'s `info_data`).
fn tun_info(ns: &str, dev: &str) -> Value {
    let link = link_details(ns, dev);
    assert_eq!(link["linkinfo"]["info_kind"], "tun", "{link}");
    link["linkinfo"]["info_data"].clone()
}

#[test]
fn add_check_del_for_every_spec_version() {
    every_spec_version(&VersionCase {
        plugin: "tap",
        host: &|| Host::new("tap-v"),
        conf: &|host, version| config(host, version, "tapv"),
        network: "tapv",
        addr: "10.72.0.2/24",
        missing_prev: "Required prevResult missing",
        after_add: &|host, ctr, _| {
            let info = tun_info(&ctr.name, "eth0");
            assert_eq!(info["type"], "tap", "{info}");
            assert_eq!(info["persist"], true, "{info}");
            assert_eq!(info["pi"], false, "{info}");
            assert_eq!(info["vnet_hdr"], false, "{info}");
            assert_eq!(info["multi_queue"], false, "{info}");
            assert!(
                info.get("user").is_none() && info.get("group").is_none(),
                "{info}"
            );
            assert_eq!(sysctl_in(&ctr.name, "net/ipv4/conf/eth0/arp_notify"), "1");
            // Made in the container: nothing in the host.
            assert_eq!(host.links_named(""), ["lo"]);
        },
    });
}

/// CHECK looks at the addresses and routes only, as the reference's.
#[test]
fn check_compares_addresses() {
    let dir = AppletDir::new();
    let host = Host::new("tap-ck");
    let tap = Plugin::ours(&dir, &host, "tap");
    let ctr = Netns::new("tap-ckc");
    let conf = config(&host, "1.0.0", "tapck");
    let add = tap.run("ADD", "ctr-c", ctr.path_str(), "eth0", &conf);
    add.assert_success();
    let mut bad = add.json();
    bad["ips"][0]["address"] = json!("10.72.0.99/24");
    let out = tap.run(
        "CHECK",
        "ctr-c",
        ctr.path_str(),
        "eth0",
        &with_prev(&conf, &bad),
    );
    assert_eq!(
        out.json()["msg"],
        "Failed to match addr 10.72.0.99/24 on interface eth0",
        "{out}"
    );
    tap.run("DEL", "ctr-c", ctr.path_str(), "eth0", &conf)
        .assert_success();
}

#[test]
fn device_keys_mtu_mac_queues_owner_group() {
    let dir = AppletDir::new();
    let host = Host::new("tap-k");
    let tap = Plugin::ours(&dir, &host, "tap");
    // (keys, CNI_ARGS, expected info_data members)
    let cases = [
        (
            json!({"mtu": 1400}),
            "",
            json!({"pi": false, "vnet_hdr": false, "multi_queue": false}),
        ),
        (
            json!({"multiQueue": true}),
            "",
            json!({"multi_queue": true, "pi": false}),
        ),
        (
            json!({"owner": 1000}),
            "",
            json!({"user": 1000, "vnet_hdr": false, "pi": false}),
        ),
        (
            json!({"group": 1001}),
            "",
            json!({"group": 1001, "vnet_hdr": false}),
        ),
        // Both set: the reference's netlink path, with a virtio header and packet info on.
        (
            json!({"owner": 1000, "group": 1001}),
            "",
            json!({"user": 1000, "group": 1001, "vnet_hdr": true, "pi": true}),
        ),
        (
            json!({"owner": 1000, "group": 1001, "multiQueue": true}),
            "",
            json!({"vnet_hdr": true, "pi": false, "multi_queue": true}),
        ),
        (json!({"mac": "02:00:00:00:30:01"}), "", json!({})),
        (
            json!({"mac": "02:00:00:00:30:01"}),
            "IgnoreUnknown=1;MAC=02:00:00:00:30:02",
            json!({}),
        ),
        (
            json!({"mac": "02:00:00:00:30:01", "runtimeConfig": {"mac": "02:00:00:00:30:03"}}),
            "IgnoreUnknown=1;MAC=02:00:00:00:30:02",
            json!({}),
        ),
    ];
    for (keys, args, want) in cases {
        let ctr = Netns::new("tap-kc");
        let mut conf = config(&host, "1.0.0", "tapk");
        for (k, v) in keys.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let add = tap
            .invocation("ADD", "ctr-k", ctr.path_str(), "eth0")
            .args(args)
            .config(&conf)
            .run();
        add.assert_success();
        let info = tun_info(&ctr.name, "eth0");
        for (k, v) in want.as_object().unwrap() {
            // `ip` prints a user or group by name when it has one.
            let got = &info[k];
            let ok = got == v || (v.is_u64() && got.is_string() && id_name(k, v) == *got);
            assert!(ok, "{keys} {args}: {k} is {got}, want {v} ({info})");
        }
        let link = link_details(&ctr.name, "eth0");
        let mtu = keys.get("mtu").cloned().unwrap_or(json!(1500));
        assert_eq!(link["mtu"], mtu, "{keys}");
        let mac = if args.is_empty() {
            keys.get("mac").cloned()
        } else if keys.get("runtimeConfig").is_some() {
            Some(json!("02:00:00:00:30:03"))
        } else {
            Some(json!("02:00:00:00:30:02"))
        };
        if let Some(mac) = mac {
            assert_eq!(link["address"], mac, "{keys} {args}");
            assert_eq!(add.json()["interfaces"][0]["mac"], mac);
        }
        tap.invocation("DEL", "ctr-k", ctr.path_str(), "eth0")
            .args(args)
            .config(&conf)
            .run()
            .assert_success();
        assert!(links_of(&ctr.name).is_empty(), "{keys}");
    }
}

/// The name `ip` shows for uid/gid `v` (`key` is "user" or "group"), or the number.
fn id_name(key: &str, v: &Value) -> Value {
    let file = if key == "user" {
        "/etc/passwd"
    } else {
        "/etc/group"
    };
    let id = v.to_string();
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == id).then(|| json!(f[0]))
            })
        })
        .unwrap_or_else(|| v.clone())
}

#[test]
fn l2_tap_enslaved_to_a_bridge_in_the_container() {
    let dir = AppletDir::new();
    let host = Host::new("tap-br");
    let tap = Plugin::ours(&dir, &host, "tap");
    let ctr = Netns::new("tap-brc");
    ctr.ip(&["link", "add", "br0", "type", "bridge"]);
    let conf = json!({"cniVersion": "1.0.0", "name": "tapbr", "type": "tap", "bridge": "br0",
                      "dns": {"nameservers": ["10.72.0.53"]}});
    let add = tap.run("ADD", "ctr-b", ctr.path_str(), "tap0", &conf);
    add.assert_success();
    let result = add.json();
    assert!(result.get("ips").is_none(), "{result}");
    assert_eq!(result["dns"]["nameservers"][0], "10.72.0.53");
    let link = link_details(&ctr.name, "tap0");
    assert_eq!(link["master"], "br0", "{link}");
    assert!(
        link["flags"].as_array().unwrap().contains(&json!("UP")),
        "{link}"
    );
    tap.run(
        "CHECK",
        "ctr-b",
        ctr.path_str(),
        "tap0",
        &with_prev(&conf, &result),
    )
    .assert_success();
    tap.run("DEL", "ctr-b", ctr.path_str(), "tap0", &conf)
        .assert_success();
    assert_eq!(links_of(&ctr.name), ["br0"]);

    // A bridge that is not there: an error, and no tap left behind.
    let mut missing = conf.clone();
    missing["bridge"] = json!("nobr0");
    let out = tap.run("ADD", "ctr-b", ctr.path_str(), "tap0", &missing);
    assert_eq!(
        out.json()["msg"],
        "failed to get bridge nobr0: Link not found",
        "{out}"
    );
    assert_eq!(links_of(&ctr.name), ["br0"]);
}

#[test]
fn selinux_context_fails_like_the_reference_where_selinux_is_off() {
    if std::path::Path::new("/sys/fs/selinux/enforce").exists() {
        skip("the SELinux-off case", "SELinux is on here");
        return;
    }
    let dir = AppletDir::new();
    let host = Host::new("tap-se");
    let tap = Plugin::ours(&dir, &host, "tap");
    let ctr = Netns::new("tap-sec");
    let mut conf = config(&host, "1.0.0", "tapse");
    conf["selinuxContext"] = json!("system_u:system_r:container_t:s0");
    let out = tap.run("ADD", "ctr-s", ctr.path_str(), "eth0", &conf);
    out.assert_failure();
    assert!(
        out.json()["msg"]
            .as_str()
            .unwrap()
            .starts_with("failed set socket label: "),
        "{out}"
    );
    assert!(links_of(&ctr.name).is_empty());
    assert_eq!(host.reservations("tapse"), Vec::<String>::new());
}

#[test]
fn bad_values_leave_nothing_behind() {
    let dir = AppletDir::new();
    let host = Host::new("tap-bad");
    let tap = Plugin::ours(&dir, &host, "tap");
    let ctr = Netns::new("tap-badc");
    for (key, value, needle) in [
        (
            "mac",
            json!("nonsense"),
            "invalid args nonsense for MAC addr",
        ),
        ("mtu", json!(100000), "failed to set tap MTU"),
        ("owner", json!(-1), "failed to load netconf"),
    ] {
        let mut conf = config(&host, "1.0.0", "tapbad");
        conf[key] = value;
        let out = tap.run("ADD", "ctr-x", ctr.path_str(), "eth0", &conf);
        out.assert_failure();
        let msg = out.json()["msg"].as_str().unwrap().to_string();
        assert!(msg.contains(needle), "{key}: {msg}");
        assert!(links_of(&ctr.name).is_empty(), "{key}");
        assert_eq!(host.reservations("tapbad"), Vec::<String>::new());
    }
}

#[test]
fn del_succeeds_whatever_is_already_gone() {
    let dir = AppletDir::new();
    for gone in ALL_GONE {
        let host = Host::new("tap-del");
        let tap = Plugin::ours(&dir, &host, "tap");
        del_survives(
            &tap,
            &host,
            &config(&host, "1.0.0", "tapdel"),
            "tapdel",
            gone,
        );
    }
}

#[test]
fn gc_and_status_delegate_to_ipam() {
    let dir = AppletDir::new();
    let host = Host::new("tap-gc");
    let tap = Plugin::ours(&dir, &host, "tap");
    let conf = config(&host, "1.1.0", "tapgc");
    gc_and_status(&tap, &host, &conf, "tapgc", |cid| {
        let ctr = Netns::new("tap-gcc");
        tap.run("ADD", cid, ctr.path_str(), "eth0", &conf)
            .assert_success();
        ctr
    });
}
