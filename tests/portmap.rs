//! portmap through its applet link, run inside a throwaway host namespace: HTTP through a
//! mapping from the host (127.0.0.1 and a host address) and from containers (hairpin), on
//! iptables and nftables; the rule layout and its removal (also without `portMappings` at
//! DEL); no firewall command at all without mappings; stale UDP conntrack entries; GC;
//! every spec version's pass-through; and interop with Debian's Go portmap.

mod chain_env;
mod common;
mod plugin_env;

use std::path::Path;
use std::process::Command;

use chain_env::*;
use common::*;
use plugin_env::*;

/// A synthetic prevResult: `ip` on the sandboxed eth0 (no kernel state needed for rules).
fn prev(version: &str, ips: &[&str]) -> Value {
    synthetic_prev(version, ips, "vethhost")
}

fn conf(host: &Host, version: &str, backend: &str, mappings: Value, prev: &Value) -> Value {
    let mut c = json!({
        "cniVersion": version,
        "name": "pmnet",
        "type": "portmap",
        "dataDir": host.data_dir().join("portmap"),
        "runtimeConfig": {"portMappings": mappings},
        "prevResult": prev,
    });
    if !backend.is_empty() {
        c["backend"] = json!(backend);
    }
    c
}

fn web_mapping() -> Value {
    json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5300, "containerPort": 53, "protocol": "udp"}
    ])
}

fn without_mappings(c: &Value) -> Value {
    let mut c = c.clone();
    c.as_object_mut().unwrap().remove("runtimeConfig");
    c
}

fn chain_hash(network: &str, cid: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s' '{network}{cid}' | sha512sum"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)[..21].to_string()
}

fn nft_rules_with_comment(host: &Host, comment: &str) -> usize {
    host.nft_ruleset()
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.get("rule"))
                .filter(|r| r["table"] == "cni_hostport" && r["comment"] == comment)
                .count()
        })
        .unwrap_or(0)
}

/// A busybox httpd serving `marker` on port 80 inside `ns`, killed on drop.
/// A ptp container in `host` (our ptp + host-local); returns its ADD result (1.0.0).
fn ptp_container(dir: &AppletDir, host: &Host, ctr: &Netns, cid: &str) -> Value {
    let ptp = Plugin::ours(dir, host, "ptp");
    let c = json!({
        "cniVersion": "1.0.0",
        "name": "pmnet",
        "type": "ptp",
        "ipam": {
            "type": "host-local",
            "subnet": "10.77.0.0/24",
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": host.data_dir()
        },
    });
    let out = ptp.run("ADD", cid, ctr.path_str(), "eth0", &c);
    out.assert_success();
    out.json()
}

fn traffic_through_mappings(backend: &str) {
    let dir = AppletDir::new();
    let host = Host::new("pm-h");
    // A host address that is neither loopback nor on a container's link.
    // (a veth pair: this kernel may have no dummy links)
    host.ns.ip(&[
        "link", "add", "hostnic", "type", "veth", "peer", "name", "hostnic2",
    ]);
    host.ns
        .ip(&["addr", "add", "192.0.2.1/24", "dev", "hostnic"]);
    host.ns.ip(&["link", "set", "hostnic", "up"]);
    host.ns.ip(&["link", "set", "hostnic2", "up"]);
    let (a, b) = (Netns::new("pm-a"), Netns::new("pm-b"));
    let ra = ptp_container(&dir, &host, &a, "ctr-a");
    let rb = ptp_container(&dir, &host, &b, "ctr-b");
    let gw = ra["ips"][0]["gateway"].as_str().unwrap().to_string();
    a.ip(&["link", "set", "lo", "up"]);
    let _web = WebServer::start(&a.name, "hello from a");
    assert!(
        fetch(&a.name, "http://127.0.0.1:80/", 10).is_some(),
        "server up"
    );

    let portmap = Plugin::ours(&dir, &host, "portmap");
    let c = conf(&host, "1.0.0", backend, web_mapping(), &ra);
    // Nothing answers on the host port before the mapping exists.
    assert!(!fetch_once(&host.ns.name, "http://127.0.0.1:8080/"));
    let add = portmap.run("ADD", "ctr-a", a.path_str(), "eth0", &c);
    add.assert_success();
    assert_eq!(add.json(), ra, "prevResult passes through");

    for url in [
        "http://127.0.0.1:8080/",
        "http://192.0.2.1:8080/",
        &format!("http://{gw}:8080/"),
    ] {
        assert_eq!(
            fetch(&host.ns.name, url, 10).as_deref(),
            Some("hello from a"),
            "{backend}: host -> {url}"
        );
    }
    // Hairpin: another container, and the container itself, through a host address.
    let gw_b = rb["ips"][0]["gateway"].as_str().unwrap();
    assert_eq!(
        fetch(&b.name, &format!("http://{gw_b}:8080/"), 10).as_deref(),
        Some("hello from a"),
        "{backend}: second container"
    );
    assert_eq!(
        fetch(&a.name, &format!("http://{gw}:8080/"), 10).as_deref(),
        Some("hello from a"),
        "{backend}: the container itself"
    );
    // Localhost access needs route_localnet on the host end of the veth.
    let host_veth = ra["interfaces"][0]["name"].as_str().unwrap();
    assert_eq!(
        host.sysctl(&format!("net/ipv4/conf/{host_veth}/route_localnet")),
        "1"
    );

    let with_prev = c.clone();
    portmap
        .run("CHECK", "ctr-a", a.path_str(), "eth0", &with_prev)
        .assert_success();

    // DEL without portMappings still removes everything of this container.
    portmap
        .run("DEL", "ctr-a", a.path_str(), "eth0", &without_mappings(&c))
        .assert_success();
    assert!(!fetch_once(&host.ns.name, "http://127.0.0.1:8080/"));
    assert!(!fetch_once(&b.name, &format!("http://{gw_b}:8080/")));
    match backend {
        "nftables" => assert_eq!(nft_rules_with_comment(&host, "ctr-a"), 0),
        _ => assert!(
            !host.nat_rules().contains("CNI-DN-"),
            "{}",
            host.nat_rules()
        ),
    }
    let check = portmap.run("CHECK", "ctr-a", a.path_str(), "eth0", &with_prev);
    check.assert_failure();
    // And a second DEL is fine.
    portmap
        .run("DEL", "ctr-a", a.path_str(), "eth0", &c)
        .assert_success();
    let _ = rb;
}

#[test]
fn iptables_forwarding_from_host_and_hairpin() {
    traffic_through_mappings("iptables");
}

#[test]
fn nftables_forwarding_from_host_and_hairpin() {
    traffic_through_mappings("nftables");
}

#[test]
fn iptables_rules_are_laid_out_as_the_reference() {
    let dir = AppletDir::new();
    let host = Host::new("pm-r");
    let portmap = Plugin::ours(&dir, &host, "portmap");
    let p = prev("1.0.0", &["10.99.0.2/24", "fd99::2/64"]);
    let mut c = conf(&host, "1.0.0", "iptables", web_mapping(), &p);
    c["markMasqBit"] = json!(5);
    c["conditionsV4"] = json!(["!", "-s", "192.0.2.0/24"]);
    portmap
        .run("ADD", "ctr-r", "/run/netns/none", "eth0", &c)
        .assert_success();
    let dn = format!("CNI-DN-{}", chain_hash("pmnet", "ctr-r"));
    let rules = host.nat_rules();
    let comment = r#"-m comment --comment "dnat name: \"pmnet\" id: \"ctr-r\"""#;
    for line in [
        "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT".to_string(),
        "-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT".to_string(),
        "-A POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ".to_string(),
        "-A CNI-HOSTPORT-MASQ -m mark --mark 0x20/0x20 -j MASQUERADE".to_string(),
        "-A CNI-HOSTPORT-SETMARK -m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark 0x20/0x20".to_string(),
        format!("-A CNI-HOSTPORT-DNAT ! -s 192.0.2.0/24 -p tcp {comment} -m multiport --dports 8080 -j {dn}"),
        format!("-A CNI-HOSTPORT-DNAT -p tcp {comment} -m multiport --dports 8080 -j {dn}"),
        format!("-A {dn} -s 10.99.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK"),
        format!("-A {dn} -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK"),
        format!("-A {dn} -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.99.0.2:80"),
        format!("-A {dn} -p udp -m udp --dport 5300 -j DNAT --to-destination 10.99.0.2:53"),
        format!("-A {dn} -s fd99::/64 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK"),
        format!("-A {dn} -p tcp -m tcp --dport 8080 -j DNAT --to-destination [fd99::2]:80"),
    ] {
        assert!(rules.lines().any(|l| l == line), "missing {line}\n{rules}");
    }
    // CHECK notices a missing rule.
    portmap
        .run("CHECK", "ctr-r", "/run/netns/none", "eth0", &c)
        .assert_success();
    let out = host.exec(&[
        "iptables",
        "-t",
        "nat",
        "-D",
        &dn,
        "-p",
        "tcp",
        "--dport",
        "8080",
        "-j",
        "DNAT",
        "--to-destination",
        "10.99.0.2:80",
    ]);
    assert!(out.status.success(), "{out:?}");
    let check = portmap.run("CHECK", "ctr-r", "/run/netns/none", "eth0", &c);
    check.assert_failure();
    assert!(
        check.json()["msg"]
            .as_str()
            .unwrap()
            .starts_with("could not check ipv4 dnat: rule"),
        "{check}"
    );
    portmap
        .run(
            "DEL",
            "ctr-r",
            "/run/netns/none",
            "eth0",
            &without_mappings(&c),
        )
        .assert_success();
    let after = host.nat_rules();
    assert!(!after.contains(&dn), "{after}");
    // The shared chains stay, as in the reference.
    assert!(after.contains(":CNI-HOSTPORT-DNAT"), "{after}");
}

#[test]
fn ipv4_only_check_passes_where_the_reference_fails() {
    let dir = AppletDir::new();
    let host = Host::new("pm-4");
    let portmap = Plugin::ours(&dir, &host, "portmap");
    let p = prev("1.0.0", &["10.99.0.4/24"]);
    let c = conf(&host, "1.0.0", "iptables", web_mapping(), &p);
    portmap
        .run("ADD", "ctr-4", "/run/netns/none", "eth0", &c)
        .assert_success();
    portmap
        .run("CHECK", "ctr-4", "/run/netns/none", "eth0", &c)
        .assert_success();
    assert!(!host.nat_rules().contains("--to-destination [")); // no IPv6 rules
    portmap
        .run("DEL", "ctr-4", "/run/netns/none", "eth0", &c)
        .assert_success();
}

/// Stub iptables/ip6tables/nft that log their arguments and succeed.
fn stub_tools(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("stubs");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("calls.log");
    for tool in ["iptables", "ip6tables", "nft"] {
        let script = bin.join(tool);
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> {}\nexit 0\n",
                log.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    log
}

#[test]
fn no_firewall_command_runs_without_mappings() {
    let dir = AppletDir::new();
    let host = Host::new("pm-n");
    let scratch = host.data_dir().join("stub");
    let log = stub_tools(&scratch);
    let path = format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        scratch.join("stubs").display()
    );
    let portmap = Plugin::ours(&dir, &host, "portmap");
    let p = prev("1.0.0", &["10.99.0.5/24"]);
    for backend in ["", "iptables", "nftables"] {
        let c = without_mappings(&conf(&host, "1.0.0", backend, json!([]), &p));
        for cmd in ["ADD", "DEL"] {
            let out = portmap
                .invocation(cmd, "ctr-n", "/run/netns/none", "eth0")
                .env("PATH", &path)
                .config(&c)
                .run();
            out.assert_success();
        }
        let mut empty = c.clone();
        empty["runtimeConfig"] = json!({"portMappings": []});
        for cmd in ["ADD", "DEL"] {
            portmap
                .invocation(cmd, "ctr-n", "/run/netns/none", "eth0")
                .env("PATH", &path)
                .config(&empty)
                .run()
                .assert_success();
        }
    }
    assert!(
        !log.exists(),
        "commands ran: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // The same stubs do see the commands once there is a mapping (the test can fail).
    let c = conf(&host, "1.0.0", "iptables", web_mapping(), &p);
    portmap
        .invocation("ADD", "ctr-n", "/run/netns/none", "eth0")
        .env("PATH", &path)
        .config(&c)
        .run()
        .assert_success();
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(calls.contains("iptables -t nat"), "{calls}");
}

#[test]
fn every_spec_version_passes_the_previous_result_through() {
    let dir = AppletDir::new();
    let host = Host::new("pm-v");
    let portmap = Plugin::ours(&dir, &host, "portmap");
    for version in VERSIONS {
        let p = prev(version, &["10.99.0.6/24", "fd99::6/64"]);
        for mappings in [json!([]), web_mapping()] {
            let c = conf(&host, version, "iptables", mappings.clone(), &p);
            let add = portmap.run("ADD", "ctr-v", "/run/netns/none", "eth0", &c);
            add.assert_success();
            assert_eq!(add.json(), p, "{version} {mappings}");
            if version >= "0.4.0" {
                portmap
                    .run("CHECK", "ctr-v", "/run/netns/none", "eth0", &c)
                    .assert_success();
            }
            portmap
                .run("DEL", "ctr-v", "/run/netns/none", "eth0", &c)
                .assert_success();
        }
        // A prevResult of another version is converted to the config's.
        let other = prev("1.0.0", &["10.99.0.6/24"]);
        let c = conf(&host, version, "iptables", json!([]), &other);
        let add = portmap.run("ADD", "ctr-v", "/run/netns/none", "eth0", &c);
        add.assert_success();
        assert_eq!(add.json()["cniVersion"], version);
    }
    assert!(!host.nat_rules().contains("CNI-DN-"));
}

#[test]
fn bad_configurations_are_refused() {
    let dir = AppletDir::new();
    let host = Host::new("pm-e");
    let portmap = Plugin::ours(&dir, &host, "portmap");
    let p = prev("1.0.0", &["10.99.0.7/24"]);
    let base = conf(&host, "1.0.0", "iptables", web_mapping(), &p);
    let cases = [
        (
            json!({"markMasqBit": 32}),
            "failed to parse config: MasqMarkBit must be between 0 and 31",
        ),
        (
            json!({"markMasqBit": 3, "externalSetMarkChain": "X"}),
            "failed to parse config: Cannot specify externalSetMarkChain and markMasqBit",
        ),
        (
            json!({"backend": "pf"}),
            "failed to parse config: unrecognized backend \"pf\"",
        ),
        (
            json!({"backend": "nftables", "conditionsV4": ["-s", "1.1.1.1"]}),
            "failed to parse config: nftables backend was requested but configuration contains iptables-specific options [conditionsV4]",
        ),
        (
            json!({"runtimeConfig": {"portMappings": [{"hostPort": 0, "containerPort": 80, "protocol": "tcp"}]}}),
            "failed to parse config: Invalid host port number: 0",
        ),
        (
            json!({"runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": -1, "protocol": "tcp"}]}}),
            "failed to parse config: Invalid container port number: -1",
        ),
        (
            json!({"prevResult": null}),
            "must be called as chained plugin",
        ),
    ];
    for (patch, msg) in cases {
        let mut c = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        let out = portmap.run("ADD", "ctr-e", "/run/netns/none", "eth0", &c);
        out.assert_failure();
        assert_eq!(out.json()["msg"], msg, "{patch}");
    }
    assert!(!host.nat_rules().contains("CNI-"), "{}", host.nat_rules());
}

#[test]
fn stale_udp_conntrack_entries_are_deleted() {
    let dir = AppletDir::new();
    let host = Host::new("pm-u");
    let client = Netns::new("pm-uc");
    host.ns.ip(&[
        "link",
        "add",
        "tocl",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &client.name,
    ]);
    host.ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "tocl"]);
    host.ns.ip(&["link", "set", "tocl", "up"]);
    client.ip(&["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
    client.ip(&["link", "set", "eth0", "up"]);
    let conntrack = || {
        let out = host.exec(&["cat", "/proc/net/nf_conntrack"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("udp") && l.contains("dport=5300"))
            .count()
    };
    let portmap = Plugin::ours(&dir, &host, "portmap");
    // Another container's TCP mapping: NAT (and so conntrack) is active in the host.
    let other = conf(
        &host,
        "1.0.0",
        "iptables",
        json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        &prev("1.0.0", &["10.99.0.9/24"]),
    );
    portmap
        .run("ADD", "ctr-t", "/run/netns/none", "eth0", &other)
        .assert_success();
    // A flow to the host port before its mapping exists (a NAT-less conntrack entry).
    let send = exec_in(
        &client.name,
        &["bash", "-c", "echo x > /dev/udp/192.0.2.1/5300"],
    );
    assert!(send.status.success(), "{send:?}");
    if conntrack() == 0 {
        skip(
            "conntrack cleanup",
            "no conntrack entry shows up in /proc/net/nf_conntrack",
        );
        return;
    }
    let p = prev("1.0.0", &["10.99.0.8/24"]);
    let c = conf(&host, "1.0.0", "iptables", web_mapping(), &p);
    portmap
        .run("ADD", "ctr-u", "/run/netns/none", "eth0", &c)
        .assert_success();
    assert_eq!(conntrack(), 0, "the stale UDP entry is gone");
    portmap
        .run("DEL", "ctr-u", "/run/netns/none", "eth0", &c)
        .assert_success();
}

#[test]
fn gc_removes_the_forwarding_of_stale_attachments() {
    let dir = AppletDir::new();
    let host = Host::new("pm-g");
    let portmap = Plugin::ours(&dir, &host, "portmap");
    for backend in ["iptables", "nftables"] {
        let (ca, cb) = (format!("keep-{backend}"), format!("gone-{backend}"));
        let pa = prev("1.1.0", &["10.99.0.10/24"]);
        let pb = prev("1.1.0", &["10.99.0.11/24"]);
        let a = conf(&host, "1.1.0", backend, web_mapping(), &pa);
        let b = conf(
            &host,
            "1.1.0",
            backend,
            json!([{"hostPort": 9090, "containerPort": 80, "protocol": "tcp"}]),
            &pb,
        );
        portmap
            .run("ADD", &ca, "/run/netns/none", "eth0", &a)
            .assert_success();
        portmap
            .run("ADD", &cb, "/run/netns/none", "eth0", &b)
            .assert_success();
        // Another network's container is not this GC's business.
        let mut other = b.clone();
        other["name"] = json!("othernet");
        portmap
            .run("ADD", "other", "/run/netns/none", "eth0", &other)
            .assert_success();

        let mut gc = without_mappings(&a);
        gc.as_object_mut().unwrap().remove("prevResult");
        gc["cni.dev/valid-attachments"] = json!([{"containerID": ca, "ifname": "eth0"}]);
        let out = portmap.invocation("GC", "", "", "").config(&gc).run();
        out.assert_success();
        let (kept, gone, foreign) = match backend {
            "nftables" => (
                nft_rules_with_comment(&host, &ca),
                nft_rules_with_comment(&host, &cb),
                nft_rules_with_comment(&host, "other"),
            ),
            _ => {
                let rules = host.nat_rules();
                let n = |net: &str, id: &str| {
                    rules
                        .matches(&format!("CNI-DN-{}", chain_hash(net, id)))
                        .count()
                };
                (n("pmnet", &ca), n("pmnet", &cb), n("othernet", "other"))
            }
        };
        assert!(kept > 0, "{backend}: the valid attachment keeps its rules");
        assert_eq!(gone, 0, "{backend}: the stale one loses them");
        assert!(foreign > 0, "{backend}: other networks are untouched");
        portmap
            .run("DEL", &ca, "/run/netns/none", "eth0", &a)
            .assert_success();
        portmap
            .run("DEL", "other", "/run/netns/none", "eth0", &other)
            .assert_success();
    }
}

#[test]
fn go_and_cnibox_remove_each_others_rules() {
    let dir = AppletDir::new();
    let host = Host::new("pm-go");
    let Some(go) = Plugin::go(&host, "portmap") else {
        skip("interop", "Debian's Go portmap is not installed");
        return;
    };
    let ours = Plugin::ours(&dir, &host, "portmap");
    let p = prev("1.0.0", &["10.99.0.12/24", "fd99::12/64"]);
    let c = conf(&host, "1.0.0", "", web_mapping(), &p);
    let mut go_conf = c.clone();
    go_conf.as_object_mut().unwrap().remove("dataDir");

    go.run("ADD", "ctr-go", "/run/netns/none", "eth0", &go_conf)
        .assert_success();
    let by_go = host.nat_rules();
    assert!(by_go.contains("CNI-DN-"));
    ours.run("CHECK", "ctr-go", "/run/netns/none", "eth0", &c)
        .assert_success();
    ours.run("DEL", "ctr-go", "/run/netns/none", "eth0", &c)
        .assert_success();
    assert!(
        !host.nat_rules().contains("CNI-DN-"),
        "{}",
        host.nat_rules()
    );

    ours.run("ADD", "ctr-go", "/run/netns/none", "eth0", &c)
        .assert_success();
    assert_eq!(host.nat_rules(), by_go, "the same rule set as Go's");
    go.run("DEL", "ctr-go", "/run/netns/none", "eth0", &go_conf)
        .assert_success();
    assert!(
        !host.nat_rules().contains("CNI-DN-"),
        "{}",
        host.nat_rules()
    );
}
