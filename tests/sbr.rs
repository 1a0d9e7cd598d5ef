//! sbr through its applet link, run inside a throwaway host namespace against a container
//! namespace (a veth pair made with `ip`, or chained after our ptp): rules and per-address
//! tables at every spec version, the `table` option, table ids skipping used ones, CHECK,
//! DEL (also after the namespace is gone), inputs that must not crash, and the differential
//! run against Debian's Go sbr (v1.1.1, which has no `table` option).
//!
//! Known differences from the Go sbr, each asserted below where it shows:
//! * DEL after the namespace is gone: Go creates an empty file at the namespace path (its
//!   lock) and fails; ours succeeds and creates nothing.
//! * CHECK: Go's does nothing; ours fails when an address's rule is missing.
//! * A table id with routes but no rule counts as used here; Go would reuse it.
//! * The 1.0.0 result has no empty `dns` object (Debian's v1.1.1 library prints one).

mod chain_env;
mod common;
mod plugin_env;

use chain_env::*;
use common::*;
use plugin_env::*;

impl Pair {
    /// The pair where eth0 has 10.71.0.2/24 and fd71::2/64 with default routes and one more
    /// IPv4 route.
    fn new(tag: &str) -> Pair {
        Pair::setup(
            tag,
            &[],
            &[&["link", "set", "hv0", "up"]],
            &[
                &["link", "set", "eth0", "up"],
                &["addr", "add", "10.71.0.2/24", "dev", "eth0"],
                &["addr", "add", "fd71::2/64", "dev", "eth0", "nodad"],
                &["route", "add", "default", "via", "10.71.0.1"],
                &["route", "add", "10.99.0.0/16", "via", "10.71.0.254"],
                &["-6", "route", "add", "default", "via", "fd71::1"],
            ],
        )
    }

    /// `(family, priority, src, table)` of the rules with a source.
    fn rules(&self) -> Vec<String> {
        rules_of(&self.ctr.name)
    }

    /// Routes of every table but local, one line each, sorted.
    fn tables(&self) -> Vec<String> {
        tables_of(&self.ctr.name)
    }
}

fn rules_of(ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    for family in ["-4", "-6"] {
        for r in ip_json(ns, &[family, "rule", "show"]).as_array().unwrap() {
            if r["src"] == "all" {
                continue;
            }
            out.push(format!(
                "{} {} from {}/{} lookup {}",
                family,
                r["priority"],
                r["src"].as_str().unwrap_or("?"),
                r["srclen"]
                    .as_u64()
                    .unwrap_or(if family == "-4" { 32 } else { 128 }),
                r["table"].as_str().unwrap_or("?")
            ));
        }
    }
    out
}

fn tables_of(ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    for family in ["-4", "-6"] {
        let routes = ip_json(ns, &[family, "route", "show", "table", "all"]);
        for r in routes.as_array().unwrap() {
            let table = r["table"].as_str().unwrap_or("main");
            if table == "local" || r["type"] == "multicast" {
                continue;
            }
            let mut line = format!("table {table} {}", r["dst"].as_str().unwrap_or("?"));
            for key in [
                "gateway", "dev", "protocol", "scope", "prefsrc", "metric", "pref",
            ] {
                if let Some(v) = r.get(key).filter(|v| !v.is_null()) {
                    line += &format!(" {key} {}", v.as_str().map_or(v.to_string(), String::from));
                }
            }
            out.push(line);
        }
    }
    out.sort();
    out
}

fn prev_result(version: &str, sandbox: &str) -> Value {
    match version {
        "0.1.0" | "0.2.0" => json!({
            "cniVersion": version,
            "ip4": {"ip": "10.71.0.2/24", "gateway": "10.71.0.1"},
            "ip6": {"ip": "fd71::2/64", "gateway": "fd71::1"},
            "dns": {}
        }),
        _ => json!({
            "cniVersion": version,
            "interfaces": [{"name": "hv0"}, {"name": "eth0", "sandbox": sandbox}],
            "ips": [
                {"address": "10.71.0.2/24", "gateway": "10.71.0.1", "interface": 1},
                {"address": "fd71::2/64", "gateway": "fd71::1", "interface": 1}
            ]
        }),
    }
}

fn config(version: &str, sandbox: &str) -> Value {
    json!({"cniVersion": version, "name": "sbr-test", "type": "sbr",
           "prevResult": prev_result(version, sandbox)})
}

/// What ADD leaves in the container for [`Pair`]'s addresses with tables 100 and 101.
fn expected_tables() -> Vec<String> {
    let mut v = vec![
        "table 100 0.0.0.0/0 gateway 10.71.0.1 dev eth0".to_string(),
        "table 100 10.71.0.0/24 dev eth0 protocol kernel scope link prefsrc 10.71.0.2".into(),
        "table 100 10.99.0.0/16 gateway 10.71.0.254 dev eth0".into(),
        // Generic IPv6 routes (no source, no gateway) go to every address's table.
        "table 100 fd71::/64 dev eth0 protocol kernel metric 256 pref medium".into(),
        "table 100 fe80::/64 dev eth0 protocol kernel metric 256 pref medium".into(),
        "table 101 fd71::/64 dev eth0 protocol kernel metric 256 pref medium".into(),
        "table 101 fe80::/64 dev eth0 protocol kernel metric 256 pref medium".into(),
        "table 101 ::/0 gateway fd71::1 dev eth0 metric 1024 pref medium".into(),
    ];
    v.sort();
    v
}

fn normalise_default(mut lines: Vec<String>) -> Vec<String> {
    // `ip` prints the default route as "default"; name it like any other prefix.
    for l in &mut lines {
        *l = l.replace(" default ", " 0.0.0.0/0 ");
        if l.contains(" 0.0.0.0/0 ") && l.contains(':') {
            *l = l.replace(" 0.0.0.0/0 ", " ::/0 ");
        }
    }
    lines.sort();
    lines
}

#[test]
fn add_check_del_for_every_spec_version() {
    let dir = AppletDir::new();
    for version in VERSIONS {
        let pair = Pair::new("sbr-v");
        let sbr = Plugin::ours(&dir, &pair.host, "sbr");
        let conf = config(version, pair.netns());
        let add = sbr.run("ADD", "ctr-s", pair.netns(), "eth0", &conf);
        add.assert_success();
        let mut expected = conf["prevResult"].clone();
        expected["cniVersion"] = json!(version);
        if matches!(version, "0.3.0" | "0.3.1" | "0.4.0") {
            expected["ips"][0]["version"] = json!("4");
            expected["ips"][1]["version"] = json!("6");
            expected["dns"] = json!({});
        }
        assert_eq!(add.json(), expected, "{version}");
        assert_eq!(
            pair.rules(),
            [
                "-4 32765 from 10.71.0.2/32 lookup 100",
                "-6 32765 from fd71::2/128 lookup 101"
            ],
            "{version}"
        );
        assert_eq!(
            normalise_default(pair.tables()),
            expected_tables(),
            "{version}"
        );

        let check = sbr.run("CHECK", "ctr-s", pair.netns(), "eth0", &conf);
        if version >= "0.4.0" {
            check.assert_success();
            pair.ctr
                .ip(&["-6", "rule", "del", "from", "fd71::2", "lookup", "101"]);
            let out = sbr.run("CHECK", "ctr-s", pair.netns(), "eth0", &conf);
            assert_eq!(
                out.json()["msg"],
                "no source-based routing rule for fd71::2"
            );
            pair.ctr
                .ip(&["-6", "rule", "add", "from", "fd71::2", "lookup", "101"]);
        } else {
            assert_eq!(check.json()["code"], 1, "{version}: {check}");
        }

        let del = sbr.run("DEL", "ctr-s", pair.netns(), "eth0", &conf);
        del.assert_success();
        assert!(del.stdout.is_empty());
        assert!(pair.rules().is_empty(), "{version}: {:?}", pair.rules());
        sbr.run("DEL", "ctr-s", pair.netns(), "eth0", &conf)
            .assert_success();
    }
}

#[test]
fn table_option_only_adds_rules() {
    let dir = AppletDir::new();
    let pair = Pair::new("sbr-t");
    let sbr = Plugin::ours(&dir, &pair.host, "sbr");
    let before = pair.tables();
    let mut conf = config("1.1.0", pair.netns());
    conf["table"] = json!(5000);
    sbr.run("ADD", "ctr-t", pair.netns(), "eth0", &conf)
        .assert_success();
    assert_eq!(
        pair.rules(),
        [
            "-4 32765 from 10.71.0.2/32 lookup 5000",
            "-6 32765 from fd71::2/128 lookup 5000"
        ]
    );
    assert_eq!(pair.tables(), before, "routes are left alone");
    sbr.run("CHECK", "ctr-t", pair.netns(), "eth0", &conf)
        .assert_success();
    // A rule of another table from the same source is not this config's.
    pair.ctr
        .ip(&["rule", "add", "from", "10.71.0.2", "lookup", "77"]);
    sbr.run("DEL", "ctr-t", pair.netns(), "eth0", &conf)
        .assert_success();
    assert_eq!(pair.rules(), ["-4 32764 from 10.71.0.2/32 lookup 77"]);
    for bad in [json!(-1), json!(4294967296u64), json!("x")] {
        conf["table"] = bad.clone();
        let out = sbr.run("ADD", "ctr-t", pair.netns(), "eth0", &conf);
        assert!(
            out.json()["msg"]
                .as_str()
                .unwrap()
                .starts_with("failed to parse network configuration"),
            "{bad}: {out}"
        );
    }
}

#[test]
fn table_ids_skip_those_in_use() {
    let dir = AppletDir::new();
    let pair = Pair::new("sbr-u");
    let sbr = Plugin::ours(&dir, &pair.host, "sbr");
    pair.ctr
        .ip(&["rule", "add", "from", "192.0.2.9", "lookup", "100"]);
    pair.ctr.ip(&[
        "route",
        "add",
        "198.51.100.0/24",
        "dev",
        "eth0",
        "table",
        "101",
    ]);
    pair.ctr
        .ip(&["-6", "rule", "add", "from", "2001:db8::9", "lookup", "103"]);
    sbr.run(
        "ADD",
        "ctr-u",
        pair.netns(),
        "eth0",
        &config("1.0.0", pair.netns()),
    )
    .assert_success();
    let rules = pair.rules();
    assert!(
        rules.contains(&"-4 32764 from 10.71.0.2/32 lookup 102".to_string()),
        "{rules:?}"
    );
    assert!(
        rules.contains(&"-6 32764 from fd71::2/128 lookup 104".to_string()),
        "{rules:?}"
    );
}

#[test]
fn refusals_and_a_result_without_addresses_here() {
    let dir = AppletDir::new();
    let pair = Pair::new("sbr-r");
    let sbr = Plugin::ours(&dir, &pair.host, "sbr");
    let before = pair.tables();
    let mut conf = config("1.0.0", pair.netns());
    conf.as_object_mut().unwrap().remove("prevResult");
    let out = sbr.run("ADD", "ctr-r", pair.netns(), "eth0", &conf);
    assert_eq!(
        out.json()["msg"],
        "This plugin must be called as chained plugin",
        "{out}"
    );
    conf["prevResult"] = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}]});
    let out = sbr.run("ADD", "ctr-r", pair.netns(), "eth0", &conf);
    assert_eq!(
        out.json()["msg"],
        "No IP addresses supplied on interface: eth0",
        "{out}"
    );
    // Addresses of another interface only: passed through, nothing moved.
    conf["prevResult"] = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "net1"}],
                                "ips": [{"address": "10.72.0.2/24", "interface": 0}]});
    let out = sbr.run("ADD", "ctr-r", pair.netns(), "eth0", &conf);
    out.assert_success();
    assert_eq!(out.json(), conf["prevResult"]);
    assert_eq!(pair.tables(), before);
    assert!(pair.rules().is_empty());
    // An interface that is not there (addresses without an interface index are taken).
    conf["prevResult"] = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.72.0.2/24"}]});
    let out = sbr.run("ADD", "ctr-r", pair.netns(), "eth9", &conf);
    assert!(
        out.json()["msg"]
            .as_str()
            .unwrap()
            .starts_with("Cannot find network interface eth9"),
        "{out}"
    );
    sbr.run(
        "DEL",
        "ctr-r",
        pair.netns(),
        "eth9",
        &config("1.0.0", pair.netns()),
    )
    .assert_success();
}

#[test]
fn del_succeeds_after_the_namespace_is_gone() {
    let dir = AppletDir::new();
    let pair = Pair::new("sbr-g");
    let sbr = Plugin::ours(&dir, &pair.host, "sbr");
    let conf = config("1.0.0", pair.netns());
    sbr.run("ADD", "ctr-g", pair.netns(), "eth0", &conf)
        .assert_success();
    let (host, path) = pair.without_ctr();
    sbr.run("DEL", "ctr-g", &path, "eth0", &conf)
        .assert_success();
    assert!(!std::path::Path::new(&path).exists(), "DEL created {path}");
    sbr.run("DEL", "ctr-g", "", "eth0", &conf).assert_success();

    if let Some(go) = Plugin::go(&host, "sbr") {
        let out = go.run("DEL", "ctr-g", &path, "eth0", &conf);
        // The Go sbr locks by creating the path, then finds it is no namespace.
        let created = std::path::Path::new(&path).exists();
        let _ = std::fs::remove_file(&path);
        assert_ne!(out.status, 0, "{out}");
        assert!(created, "the Go sbr no longer creates {path}");
    }
}

#[test]
fn chained_after_ptp() {
    let Some(chain) = PtpChain::new("sbr-p", "sbr") else {
        return;
    };
    let (host, ctr, sbr) = (&chain.host, &chain.ctr, &chain.plugin);
    let ptp_conf = json!({"cniVersion": "1.0.0", "name": "sbr-ptp", "type": "ptp",
        "ipam": {"type": "host-local", "subnet": "10.73.0.0/24", "dataDir": host.data_dir()}});
    let prev = chain.ptp_add("eth0", &ptp_conf);
    let addr = prev["ips"][0]["address"].as_str().unwrap().to_string();
    let ip = addr.split('/').next().unwrap();
    let conf = json!({"cniVersion": "1.0.0", "name": "sbr-ptp", "type": "sbr", "prevResult": prev});
    let out = sbr.run("ADD", "ctr-p", ctr.path_str(), "eth0", &conf);
    out.assert_success();
    assert_eq!(out.json(), prev);
    assert_eq!(
        rules_of(&ctr.name),
        [format!("-4 32765 from {ip}/32 lookup 100")]
    );
    let tables = tables_of(&ctr.name);
    assert!(
        tables
            .iter()
            .all(|l| !l.starts_with("table main") || !l.contains("dev eth0")),
        "{tables:?}"
    );
    assert!(
        tables
            .iter()
            .any(|l| l.starts_with("table 100 default gateway 10.73.0.1")),
        "{tables:?}"
    );
    // Traffic from the address still reaches the gateway through table 100 (bound to it:
    // with main emptied, an unbound socket finds no source address, as with the reference).
    let reached = (0..20).any(|_| {
        let out = exec_in(
            &ctr.name,
            &[
                "busybox",
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "-I",
                ip,
                "10.73.0.1",
            ],
        );
        out.status.success() || {
            std::thread::sleep(std::time::Duration::from_millis(250));
            false
        }
    });
    assert!(reached, "no route from {ip} to its gateway");
    sbr.run("DEL", "ctr-p", ctr.path_str(), "eth0", &conf)
        .assert_success();
    assert!(rules_of(&ctr.name).is_empty());
    chain.ptp_del("eth0", &ptp_conf, &prev);
}

#[test]
fn no_input_makes_it_crash() {
    let dir = AppletDir::new();
    let pair = Pair::new("sbr-f");
    let sbr = Plugin::ours(&dir, &pair.host, "sbr");
    let bodies = [
        json!({"table": null}),
        json!({"table": 1.5}),
        json!({"prevResult": null}),
        json!({"prevResult": {"ips": [{"address": "10.71.0.2/24", "interface": 99}]}}),
        json!({"prevResult": {"ips": [{"address": "10.71.0.9/24", "gateway": "10.80.0.1"}]}}),
        json!({"prevResult": {"ips": [{"address": "fd71::2/64", "gateway": "10.71.0.1"}]}}),
        json!({"prevResult": {"cniVersion": "0.2.0", "ip4": null}}),
        json!({"prevResult": "x"}),
        json!({"table": 0}),
    ];
    for body in bodies {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "sbr-fuzz", "type": "sbr"});
        for (k, v) in body.as_object().unwrap() {
            conf[k] = v.clone();
        }
        for cmd in ["ADD", "CHECK", "DEL"] {
            let out = sbr.run(cmd, "ctr-f", pair.netns(), "eth0", &conf);
            assert!(out.status == 0 || out.status == 1, "{cmd} {body}: {out}");
            if out.status == 1 {
                assert!(out.json()["code"].is_u64(), "{cmd} {body}: {out}");
            }
        }
    }
}

#[test]
fn differential_against_the_go_sbr() {
    let dir = AppletDir::new();
    if go_plugin("sbr").is_none() {
        return;
    }
    let mut seen = Vec::new();
    for go in [false, true] {
        let pair = Pair::new(if go { "sbr-dg" } else { "sbr-do" });
        // A rule already using table 100, to see both pick the same next one.
        pair.ctr
            .ip(&["rule", "add", "from", "192.0.2.9", "lookup", "100"]);
        let plugin = Plugin::pick(go, &dir, &pair.host, "sbr").unwrap();
        let conf = config("1.0.0", pair.netns());
        let result = pair.diff_add(&plugin, &conf);
        let after_add = (result, pair.rules(), pair.tables());
        plugin
            .run("DEL", "ctr-d", pair.netns(), "eth0", &conf)
            .assert_success();
        seen.push((after_add, pair.rules(), pair.tables()));
    }
    assert_eq!(seen[0], seen[1], "ours vs Go");
    assert_eq!(seen[0].1, ["-4 32765 from 192.0.2.9/32 lookup 100"]);
}
