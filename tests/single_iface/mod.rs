//! Helpers for the plugins that put one interface into the container (macvlan, ipvlan, vlan,
//! dummy, host-device, tap): result shapes per spec version, `ip -d` link details, a single
//! ping, and the DEL / GC / STATUS cycles they all share.
#![allow(dead_code)]

use std::time::Duration;

use super::common::*;
use super::plugin_env::*;

/// A host with the veth pair `<parent>` (the parent, up, 192.0.2.1/24) – `<parent>p` (up),
/// and a default route on the parent.
pub fn host_with_parent(tag: &str, parent: &str) -> Host {
    let host = Host::new(tag);
    let peer = format!("{parent}p");
    host.ns
        .ip(&["link", "add", parent, "type", "veth", "peer", "name", &peer]);
    host.ns.ip(&["link", "set", parent, "up"]);
    host.ns.ip(&["link", "set", &peer, "up"]);
    host.ns.ip(&["addr", "add", "192.0.2.1/24", "dev", parent]);
    host.ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "192.0.2.254",
        "dev",
        parent,
    ]);
    host
}

/// A host-local `ipam` section for `subnet` in `host`'s data dir.
pub fn host_local(host: &Host, subnet: &str) -> Value {
    json!({"type": "host-local", "subnet": subnet, "dataDir": host.data_dir()})
}

/// The host-local `ipam` section of the differential runs: one range `subnet` and one route
/// to `dst` via `gw`.
pub fn routed_ipam(host: &Host, subnet: &str, dst: &str, gw: &str) -> Value {
    json!({
        "type": "host-local", "dataDir": host.data_dir(),
        "ranges": [[{"subnet": subnet}]],
        "routes": [{"dst": dst, "gw": gw}],
    })
}

/// Checks the shape of an ADD result of a single-interface plugin for `version`: the legacy
/// `ip4` (no interfaces) before 0.3.0, else one interface `ifname` in `sandbox` with every
/// IP on index 0. Returns the addresses (`addr/prefix`).
pub fn assert_single_result(
    result: &Value,
    version: &str,
    ifname: &str,
    sandbox: &str,
) -> Vec<String> {
    assert_eq!(result["cniVersion"], version, "{result}");
    if version < "0.3.0" {
        assert!(result.get("interfaces").is_none(), "{result}");
        return result["ip4"]["ip"]
            .as_str()
            .map(|a| vec![a.to_string()])
            .unwrap_or_default();
    }
    let ifaces = result["interfaces"].as_array().expect("interfaces");
    assert_eq!(ifaces.len(), 1, "{result}");
    assert_eq!(ifaces[0]["name"], ifname, "{result}");
    assert_eq!(ifaces[0]["sandbox"], sandbox, "{result}");
    assert!(
        ifaces[0]["mac"].as_str().is_some_and(|m| m.len() == 17),
        "{result}"
    );
    let mut addrs = Vec::new();
    for ip in result["ips"].as_array().into_iter().flatten() {
        assert_eq!(ip["interface"], 0, "{result}");
        addrs.push(ip["address"].as_str().unwrap().to_string());
    }
    addrs
}

/// `ip -d -j link show dev` in `ns`, the one entry (Null if there is no such link).
pub fn link_details(ns: &str, dev: &str) -> Value {
    let out = exec_in(ns, &["ip", "-d", "-j", "link", "show", "dev", dev]);
    if !out.status.success() {
        return Value::Null;
    }
    parse_json(&String::from_utf8_lossy(&out.stdout))[0].clone()
}

/// The names of the links in `ns` other than `lo`.
pub fn links_of(ns: &str) -> Vec<String> {
    ip_json(ns, &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|n| *n != "lo")
        .map(str::to_string)
        .collect()
}

/// One ping attempt with a short wait, for a reachability that must NOT be there.
pub fn ping_once(ns: &str, target: &str) -> bool {
    exec_in(ns, &["busybox", "ping", "-c", "1", "-W", "1", target])
        .status
        .success()
}

/// How much of the attachment a DEL finds already gone ([`Gone`] is plugin_env's).
pub const ALL_GONE: [Gone; 4] = [Gone::Nothing, Gone::Link, Gone::Netns, Gone::EmptyNetnsVar];

/// ADD, take away what `gone` says, then DEL twice: both succeed, the container link and the
/// IPAM reservations of `network` are gone.
pub fn del_survives(plugin: &Plugin, host: &Host, conf: &Value, network: &str, gone: Gone) {
    let ctr = Netns::new("del");
    let add = plugin.run("ADD", "ctr-del", ctr.path_str(), "eth0", conf);
    add.assert_success();
    assert!(!host.reservations(network).is_empty() || conf.get("ipam").is_none());
    let path = ctr.path_str().to_string();
    let netns_var = match gone {
        Gone::EmptyNetnsVar => String::new(),
        _ => path.clone(),
    };
    let ctr = match gone {
        Gone::Link => {
            ctr.ip(&["link", "del", "eth0"]);
            Some(ctr)
        }
        Gone::Netns => {
            drop(ctr);
            None
        }
        _ => Some(ctr),
    };
    let del_conf = with_prev(conf, &add.json());
    for attempt in 0..2 {
        let del = plugin.run("DEL", "ctr-del", &netns_var, "eth0", &del_conf);
        assert!(del.success(), "{gone:?} DEL #{attempt}: {del}");
        assert!(del.stdout.trim().is_empty(), "{del}");
    }
    assert_eq!(host.reservations(network), Vec::<String>::new(), "{gone:?}");
    if let Some(ctr) = ctr
        && gone != Gone::EmptyNetnsVar
    {
        assert!(
            links_of(&ctr.name).is_empty(),
            "{gone:?}: {:?}",
            links_of(&ctr.name)
        );
    }
}

/// GC (spec 1.1.0) with one attachment listed drops the other's reservation; STATUS asks
/// IPAM and succeeds. `add` makes attachment `cid` and returns its container.
pub fn gc_and_status(
    plugin: &Plugin,
    host: &Host,
    conf: &Value,
    network: &str,
    mut add: impl FnMut(&str) -> Netns,
) {
    let keep = add("ctr-keep");
    let stale = add("ctr-stale");
    assert_eq!(host.reservations(network).len(), 2);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-keep", "ifname": "eth0"}]);
    Invocation::new(&plugin.wrapper)
        .command("GC")
        .cni_path(&plugin.cni_path)
        .config(&gc)
        .timeout(Duration::from_secs(60))
        .run()
        .assert_success();
    assert_eq!(
        host.reservations(network).len(),
        1,
        "GC kept the stale reservation"
    );
    Invocation::new(&plugin.wrapper)
        .command("STATUS")
        .cni_path(&plugin.cni_path)
        .config(conf)
        .run()
        .assert_success();
    // STATUS reports IPAM's failure: a host-local with a broken config.
    let mut broken = conf.clone();
    broken["ipam"]["subnet"] = json!("not-a-subnet");
    let out = Invocation::new(&plugin.wrapper)
        .command("STATUS")
        .cni_path(&plugin.cni_path)
        .config(&broken)
        .run();
    out.assert_failure();
    drop((keep, stale));
}

/// What [`every_spec_version`] needs to know about one plugin.
pub struct VersionCase<'a> {
    /// The applet.
    pub plugin: &'a str,
    /// The host namespace, set up as the plugin needs (parent links, ...).
    pub host: &'a dyn Fn() -> Host,
    /// The config for a host and a spec version; its network name is `network`.
    pub conf: &'a dyn Fn(&Host, &str) -> Value,
    pub network: &'a str,
    /// The address IPAM hands out first.
    pub addr: &'a str,
    /// CHECK's error without `prevResult`.
    pub missing_prev: &'a str,
    /// The plugin's own checks of the container (and host) after ADD.
    pub after_add: &'a dyn Fn(&Host, &Netns, &Value),
}

/// For every spec version: ADD (result shape, address on `eth0`), the plugin's own checks,
/// CHECK with and without `prevResult` (0.4.0 on), DEL (link and reservation gone), DEL again.
pub fn every_spec_version(case: &VersionCase) {
    let dir = AppletDir::new();
    for version in VERSIONS {
        let host = (case.host)();
        let plugin = Plugin::ours(&dir, &host, case.plugin);
        let ctr = Netns::new("ver");
        let conf = (case.conf)(&host, version);
        let add = plugin.run("ADD", "ctr-v", ctr.path_str(), "eth0", &conf);
        add.assert_success();
        let result = add.json();
        let addrs = assert_single_result(&result, version, "eth0", ctr.path_str());
        assert_eq!(addrs, [case.addr], "{version}");
        assert_eq!(addresses(&ctr.name, "eth0"), [case.addr], "{version}");
        (case.after_add)(&host, &ctr, &result);
        if version >= "0.4.0" {
            plugin
                .run(
                    "CHECK",
                    "ctr-v",
                    ctr.path_str(),
                    "eth0",
                    &with_prev(&conf, &result),
                )
                .assert_success();
            let missing = plugin.run("CHECK", "ctr-v", ctr.path_str(), "eth0", &conf);
            assert_eq!(missing.json()["msg"], case.missing_prev, "{missing}");
        }
        plugin
            .run("DEL", "ctr-v", ctr.path_str(), "eth0", &conf)
            .assert_success();
        assert!(links_of(&ctr.name).is_empty(), "{version}");
        assert_eq!(host.reservations(case.network), Vec::<String>::new());
        plugin
            .run("DEL", "ctr-v", ctr.path_str(), "eth0", &conf)
            .assert_success();
    }
}

/// CHECK of attachment `cid` (ADD result `result`, made with `conf`) passes, and fails with
/// `msg` once the config's `key` says `value`.
pub fn check_then_fail_on(
    plugin: &Plugin,
    ctr: &Netns,
    cid: &str,
    conf: &Value,
    result: &Value,
    (key, value, msg): (&str, Value, &str),
) {
    let prev = with_prev(conf, result);
    plugin
        .run("CHECK", cid, ctr.path_str(), "eth0", &prev)
        .assert_success();
    let mut wrong = prev;
    wrong[key] = value;
    let out = plugin.run("CHECK", cid, ctr.path_str(), "eth0", &wrong);
    assert_eq!(out.json()["msg"], msg, "{key}: {out}");
}

/// Our applet `name`, or Debian's Go plugin of that name when `go` (which must exist).
pub fn ours_or_go(dir: &AppletDir, host: &Host, name: &str, go: bool) -> Plugin {
    if go {
        Plugin::go(host, name).expect("the Go plugin")
    } else {
        Plugin::ours(dir, host, name)
    }
}
