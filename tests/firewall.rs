//! firewall through its applet link, inside a throwaway host namespace: the CNI-FORWARD /
//! CNI-ADMIN layout (same as Debian's Go firewall), CHECK, DEL (also without prevResult), GC,
//! traffic admitted under a DROP forward policy and isolated by `ingressPolicy`, the firewalld
//! backend's error without a bus, and the spec versions.

mod chain_env;
mod common;
mod plugin_env;

use chain_env::*;
use common::*;
use plugin_env::*;

fn prev(version: &str, ips: &[&str]) -> Value {
    synthetic_prev(version, ips, "cnifw0")
}

fn conf(host: &Host, version: &str, extra: Value, prev: &Value) -> Value {
    let mut c = json!({
        "cniVersion": version,
        "name": "fwnet",
        "type": "firewall",
        "backend": "iptables",
        "dataDir": host.data_dir().join("firewall"),
        "prevResult": prev,
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn filter_rules(host: &Host) -> String {
    let mut text = String::new();
    for tool in ["iptables-save", "ip6tables-save"] {
        let out = host.exec(&[tool, "-t", "filter"]);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.starts_with('#') {
                continue;
            }
            match line.find(" [") {
                Some(at) if line.starts_with(':') => text += &line[..at],
                _ => text += line,
            }
            text.push('\n');
        }
    }
    text
}

fn without_prev(c: &Value) -> Value {
    let mut c = c.clone();
    c.as_object_mut().unwrap().remove("prevResult");
    c
}

#[test]
fn iptables_rules_check_and_del() {
    let dir = AppletDir::new();
    let host = Host::new("fw-r");
    let fw = Plugin::ours(&dir, &host, "firewall");
    let p = prev("1.0.0", &["10.99.0.2/24", "fd99::2/64"]);
    let c = conf(
        &host,
        "1.0.0",
        json!({"iptablesAdminChainName": "MY-ADMIN"}),
        &p,
    );
    let add = fw.run("ADD", "ctr-r", "/run/netns/none", "eth0", &c);
    add.assert_success();
    assert_eq!(add.json(), p);
    let rules = filter_rules(&host);
    for line in [
        "-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD",
        "-A CNI-FORWARD -m comment --comment \"CNI firewall plugin admin overrides\" -j MY-ADMIN",
        "-A CNI-FORWARD -d 10.99.0.2/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A CNI-FORWARD -s 10.99.0.2/32 -j ACCEPT",
        "-A CNI-FORWARD -d fd99::2/128 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A CNI-FORWARD -s fd99::2/128 -j ACCEPT",
        ":MY-ADMIN -",
    ] {
        assert!(rules.lines().any(|l| l == line), "missing {line}\n{rules}");
    }
    fw.run("CHECK", "ctr-r", "/run/netns/none", "eth0", &c)
        .assert_success();
    let out = host.exec(&[
        "iptables",
        "-D",
        "CNI-FORWARD",
        "-s",
        "10.99.0.2/32",
        "-j",
        "ACCEPT",
    ]);
    assert!(out.status.success());
    let check = fw.run("CHECK", "ctr-r", "/run/netns/none", "eth0", &c);
    check.assert_failure();
    assert_eq!(
        check.json()["msg"],
        "expected rule [-s 10.99.0.2/32 -j ACCEPT] not found"
    );
    let missing = fw.run(
        "CHECK",
        "ctr-r",
        "/run/netns/none",
        "eth0",
        &without_prev(&c),
    );
    assert_eq!(
        missing.json()["msg"],
        "missing prevResult from earlier plugin"
    );

    // DEL without prevResult: the addresses come from what ADD recorded.
    fw.run("DEL", "ctr-r", "/run/netns/none", "eth0", &without_prev(&c))
        .assert_success();
    let after = filter_rules(&host);
    assert!(
        !after.contains("10.99.0.2") && !after.contains("fd99::2"),
        "{after}"
    );
    fw.run("DEL", "ctr-r", "/run/netns/none", "eth0", &c)
        .assert_success();
}

#[test]
fn spec_versions_from_0_4_0() {
    let dir = AppletDir::new();
    let host = Host::new("fw-v");
    let fw = Plugin::ours(&dir, &host, "firewall");
    for version in ["0.4.0", "1.0.0", "1.1.0"] {
        let p = prev(version, &["10.99.0.3/24"]);
        let c = conf(&host, version, json!({}), &p);
        let add = fw.run("ADD", "ctr-v", "/run/netns/none", "eth0", &c);
        add.assert_success();
        assert_eq!(add.json(), p, "{version}");
        fw.run("CHECK", "ctr-v", "/run/netns/none", "eth0", &c)
            .assert_success();
        fw.run("DEL", "ctr-v", "/run/netns/none", "eth0", &c)
            .assert_success();
    }
    let old = conf(&host, "0.3.1", json!({}), &prev("0.3.1", &["10.99.0.3/24"]));
    let out = fw.run("ADD", "ctr-v", "/run/netns/none", "eth0", &old);
    assert_eq!(out.json()["code"], 1, "{out}");
    let bad = conf(
        &host,
        "1.0.0",
        json!({"ingressPolicy": "closed"}),
        &prev("1.0.0", &["10.99.0.3/24"]),
    );
    let out = fw.run("ADD", "ctr-v", "/run/netns/none", "eth0", &bad);
    assert_eq!(out.json()["msg"], "unknown ingress policy: \"closed\"");
    assert!(
        !filter_rules(&host).contains("10.99.0.3"),
        "nothing added before the error"
    );
}

#[test]
fn firewalld_without_a_bus_is_a_clear_error_and_auto_falls_back_to_iptables() {
    let dir = AppletDir::new();
    let host = Host::new("fw-d");
    let fw = Plugin::ours(&dir, &host, "firewall");
    let p = prev("1.0.0", &["10.99.0.4/24"]);
    let missing_bus = host.data_dir().join("no-such-bus");
    let address = format!("unix:path={}", missing_bus.display());
    let c = conf(&host, "1.0.0", json!({"backend": "firewalld"}), &p);
    let out = fw
        .invocation("ADD", "ctr-d", "/run/netns/none", "eth0")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
        .config(&c)
        .run();
    out.assert_failure();
    let msg = out.json()["msg"].as_str().unwrap().to_string();
    assert!(
        msg.contains("D-Bus system bus is not available")
            && msg.contains("org.fedoraproject.FirewallD1"),
        "{msg}"
    );
    let mut auto = c.clone();
    auto.as_object_mut().unwrap().remove("backend");
    fw.invocation("ADD", "ctr-d", "/run/netns/none", "eth0")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
        .config(&auto)
        .run()
        .assert_success();
    assert!(filter_rules(&host).contains("-s 10.99.0.4/32 -j ACCEPT"));
}

#[test]
fn gc_removes_the_rules_of_stale_attachments_only() {
    let dir = AppletDir::new();
    let host = Host::new("fw-g");
    let fw = Plugin::ours(&dir, &host, "firewall");
    let a = conf(&host, "1.1.0", json!({}), &prev("1.1.0", &["10.99.0.5/24"]));
    let b = conf(&host, "1.1.0", json!({}), &prev("1.1.0", &["10.99.0.6/24"]));
    fw.run("ADD", "keep", "/run/netns/none", "eth0", &a)
        .assert_success();
    fw.run("ADD", "gone", "/run/netns/none", "eth0", &b)
        .assert_success();
    let mut gc = without_prev(&a);
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    fw.invocation("GC", "", "", "")
        .config(&gc)
        .run()
        .assert_success();
    let rules = filter_rules(&host);
    assert!(rules.contains("-s 10.99.0.5/32 -j ACCEPT"), "{rules}");
    assert!(!rules.contains("10.99.0.6"), "{rules}");
}

#[test]
fn go_and_cnibox_lay_out_the_same_rules() {
    let dir = AppletDir::new();
    let Some(go_host) = Some(Host::new("fw-go")) else {
        return;
    };
    let Some(go) = Plugin::go(&go_host, "firewall") else {
        skip("interop", "Debian's Go firewall is not installed");
        return;
    };
    let our_host = Host::new("fw-us");
    let ours = Plugin::ours(&dir, &our_host, "firewall");
    let p = prev("1.0.0", &["10.99.0.7/24", "fd99::7/64"]);
    let c = conf(&our_host, "1.0.0", json!({}), &p);
    let mut go_conf = c.clone();
    go_conf.as_object_mut().unwrap().remove("dataDir");
    go.run("ADD", "ctr-go", "/run/netns/none", "eth0", &go_conf)
        .assert_success();
    ours.run("ADD", "ctr-go", "/run/netns/none", "eth0", &c)
        .assert_success();
    assert_eq!(filter_rules(&our_host), filter_rules(&go_host));
    // Each removes what the other made (both IPs, both families).
    let go_on_ours = Plugin::go(&our_host, "firewall").unwrap();
    go_on_ours
        .run("DEL", "ctr-go", "/run/netns/none", "eth0", &go_conf)
        .assert_success();
    assert!(!filter_rules(&our_host).contains("10.99.0.7"));
    let ours_on_go = Plugin::ours(&dir, &go_host, "firewall");
    ours_on_go
        .run("DEL", "ctr-go", "/run/netns/none", "eth0", &c)
        .assert_success();
    let left = filter_rules(&go_host);
    assert!(
        !left.contains("10.99.0.7") && !left.contains("fd99::7"),
        "{left}"
    );
}

fn ping_once(ns: &str, target: &str) -> bool {
    exec_in(ns, &["busybox", "ping", "-c", "1", "-W", "1", target])
        .status
        .success()
}

fn ptp(dir: &AppletDir, host: &Host, ctr: &Netns, cid: &str) -> Value {
    let c = json!({
        "cniVersion": "1.0.0",
        "name": "fwnet",
        "type": "ptp",
        "ipam": {"type": "host-local", "subnet": "10.78.0.0/24", "dataDir": host.data_dir()},
    });
    let out = Plugin::ours(dir, host, "ptp").run("ADD", cid, ctr.path_str(), "eth0", &c);
    out.assert_success();
    out.json()
}

#[test]
fn traffic_is_admitted_under_a_drop_forward_policy() {
    let dir = AppletDir::new();
    let host = Host::new("fw-t");
    let (a, b) = (Netns::new("fw-a"), Netns::new("fw-b"));
    let ra = ptp(&dir, &host, &a, "ctr-a");
    let rb = ptp(&dir, &host, &b, "ctr-b");
    let ip_b = result_addresses(&rb)[0].clone();
    assert!(ping(&a.name, &ip_b), "routed before any policy");
    let out = host.exec(&["iptables", "-P", "FORWARD", "DROP"]);
    assert!(out.status.success());
    assert!(!ping_once(&a.name, &ip_b), "the DROP policy blocks");

    let fw = Plugin::ours(&dir, &host, "firewall");
    let ca = conf(&host, "1.0.0", json!({}), &ra);
    let cb = conf(&host, "1.0.0", json!({}), &rb);
    fw.run("ADD", "ctr-a", a.path_str(), "eth0", &ca)
        .assert_success();
    fw.run("ADD", "ctr-b", b.path_str(), "eth0", &cb)
        .assert_success();
    assert!(ping(&a.name, &ip_b), "admitted by the firewall plugin");
    fw.run("DEL", "ctr-a", a.path_str(), "eth0", &ca)
        .assert_success();
    fw.run("DEL", "ctr-b", b.path_str(), "eth0", &cb)
        .assert_success();
    assert!(!ping_once(&a.name, &ip_b), "blocked again after DEL");
}

fn bridge_net(host: &Host, name: &str, bridge: &str, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": name,
        "type": "bridge",
        "bridge": bridge,
        "isGateway": true,
        "ipam": {
            "type": "host-local",
            "subnet": subnet,
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": host.data_dir()
        },
    })
}

#[test]
fn same_bridge_policy_isolates_other_bridges() {
    if !applets().iter().any(|a| a == "bridge") {
        skip("ingressPolicy", "there is no bridge applet yet");
        return;
    }
    let dir = AppletDir::new();
    let host = Host::new("fw-i");
    let bridge = Plugin::ours(&dir, &host, "bridge");
    let fw = Plugin::ours(&dir, &host, "firewall");
    let (x, y) = (Netns::new("fw-x"), Netns::new("fw-y"));
    let nx = bridge_net(&host, "fwa", "cnifwa", "10.81.0.0/24");
    let ny = bridge_net(&host, "fwb", "cnifwb", "10.82.0.0/24");
    let rx = bridge.run("ADD", "ctr-x", x.path_str(), "eth0", &nx);
    rx.assert_success();
    let ry = bridge.run("ADD", "ctr-y", y.path_str(), "eth0", &ny);
    ry.assert_success();
    let (rx, ry) = (rx.json(), ry.json());
    let ip_y = result_addresses(&ry)[0].clone();
    assert!(
        ping(&x.name, &ip_y),
        "bridges route to each other when open"
    );
    for (cid, ns, net, result) in [("ctr-x", &x, &nx, &rx), ("ctr-y", &y, &ny, &ry)] {
        let mut c = conf(
            &host,
            "1.0.0",
            json!({"ingressPolicy": "same-bridge"}),
            result,
        );
        c["name"] = net["name"].clone();
        fw.run("ADD", cid, ns.path_str(), "eth0", &c)
            .assert_success();
    }
    let rules = filter_rules(&host);
    assert!(
        rules.contains("-A CNI-ISOLATION-STAGE-2 -o cnifwa"),
        "{rules}"
    );
    assert!(!ping_once(&x.name, &ip_y), "isolated from the other bridge");
    assert!(ping(&x.name, "10.81.0.1"), "own gateway still reachable");
}
