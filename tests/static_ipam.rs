//! static IPAM through its symlink name: every key and source of addresses, every spec version,
//! CHECK against a previous result, and the same inputs given to Debian's Go static.

mod common;

use std::path::Path;

use common::*;

fn config(version: &str, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = "static".into();
    json!({"cniVersion": version, "name": "stnet", "type": "bridge", "ipam": ipam})
}

fn full_ipam() -> Value {
    json!({
        "addresses": [
            {"address": "10.80.0.5/24", "gateway": "10.80.0.1"},
            {"address": "fd80::5/64"}
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd99::/64", "gw": "fd80::1"}],
        "dns": {"nameservers": ["10.80.0.53"], "domain": "example", "search": ["a.example"], "options": ["ndots:2"]}
    })
}

fn run(bin: &Path, cmd: &str, args: &str, conf: &Value) -> Output {
    let mut inv = Invocation::new(bin)
        .command(cmd)
        .container_id("st-ctr")
        .netns("/run/netns/cnibox-static-test-does-not-exist")
        .ifname("eth0")
        .cni_path(bin.parent().unwrap())
        .config(conf);
    if !args.is_empty() {
        inv = inv.args(args);
    }
    inv.run()
}

fn applet(dir: &AppletDir) -> std::path::PathBuf {
    dir.path("static")
}

fn error_of(out: &Output) -> (u64, String) {
    out.assert_failure();
    let e = out.json();
    (
        e["code"].as_u64().unwrap(),
        e["msg"].as_str().unwrap().to_string(),
    )
}

/// The result's `ips` as (address, gateway) pairs.
fn ips(result: &Value) -> Vec<(String, String)> {
    result["ips"]
        .as_array()
        .unwrap_or_else(|| panic!("no ips in {result}"))
        .iter()
        .map(|ip| {
            (
                ip["address"].as_str().unwrap().to_string(),
                ip["gateway"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn every_spec_version_has_its_result_shape() {
    let dir = AppletDir::new();
    let dns = json!({"nameservers": ["10.80.0.53"], "domain": "example", "search": ["a.example"], "options": ["ndots:2"]});
    for version in VERSIONS {
        let out = run(&applet(&dir), "ADD", "", &config(version, full_ipam()));
        out.assert_success();
        let expected = match version {
            "0.1.0" | "0.2.0" => json!({
                "cniVersion": version,
                "ip4": {"ip": "10.80.0.5/24", "gateway": "10.80.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
                "ip6": {"ip": "fd80::5/64", "routes": [{"dst": "fd99::/64", "gw": "fd80::1"}]},
                "dns": dns,
            }),
            "0.3.0" | "0.3.1" | "0.4.0" => json!({
                "cniVersion": version,
                "ips": [
                    {"version": "4", "address": "10.80.0.5/24", "gateway": "10.80.0.1"},
                    {"version": "6", "address": "fd80::5/64"}
                ],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd99::/64", "gw": "fd80::1"}],
                "dns": dns,
            }),
            _ => json!({
                "cniVersion": version,
                "ips": [
                    {"address": "10.80.0.5/24", "gateway": "10.80.0.1"},
                    {"address": "fd80::5/64"}
                ],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd99::/64", "gw": "fd80::1"}],
                "dns": dns,
            }),
        };
        assert_eq!(out.json(), expected, "{version}");
        // DEL has nothing to release.
        let del = run(&applet(&dir), "DEL", "", &config(version, full_ipam()));
        del.assert_success();
        assert!(del.stdout.is_empty());
    }
    // Host bits stay; an empty 1.x dns is left out.
    let out = run(
        &applet(&dir),
        "ADD",
        "",
        &config(
            "1.0.0",
            json!({"addresses": [{"address": "10.81.0.77/16"}]}),
        ),
    );
    assert_eq!(
        out.json(),
        json!({"cniVersion": "1.0.0", "ips": [{"address": "10.81.0.77/16"}]})
    );
}

#[test]
fn legacy_versions_take_one_address_per_family() {
    let dir = AppletDir::new();
    let two = json!({"addresses": [{"address": "10.80.0.5/24"}, {"address": "10.80.0.6/24"}]});
    for version in ["0.1.0", "0.2.0"] {
        let (code, msg) = error_of(&run(
            &applet(&dir),
            "ADD",
            "",
            &config(version, two.clone()),
        ));
        assert_eq!(code, 7);
        assert_eq!(
            msg,
            format!("CNI version {version} does not support more than 1 address per family")
        );
    }
    run(&applet(&dir), "ADD", "", &config("0.3.0", two)).assert_success();
}

#[test]
fn addresses_from_cni_args_args_and_runtime_config() {
    let dir = AppletDir::new();
    let base = json!({"addresses": [{"address": "10.82.0.5/24", "gateway": "10.82.0.1"}]});
    // CNI_ARGS IP is appended; GATEWAY goes to the CNI_ARGS address whose subnet holds it.
    let out = run(
        &applet(&dir),
        "ADD",
        "IP=10.83.0.5/24, fd83::5/64;GATEWAY=10.83.0.1,fd83::1",
        &config("1.0.0", base.clone()),
    );
    out.assert_success();
    assert_eq!(
        ips(&out.json()),
        [
            ("10.82.0.5/24".into(), "10.82.0.1".into()),
            ("10.83.0.5/24".into(), "10.83.0.1".into()),
            ("fd83::5/64".into(), "fd83::1".into())
        ]
    );
    // args.cni.ips replaces them all; runtimeConfig.ips replaces those in turn.
    let mut conf = config("1.0.0", base.clone());
    conf["args"] = json!({"cni": {"ips": ["10.84.0.5/24"]}});
    assert_eq!(
        ips(&run(&applet(&dir), "ADD", "IP=10.83.0.5/24", &conf).json()),
        [("10.84.0.5/24".into(), String::new())]
    );
    conf["runtimeConfig"] = json!({"ips": ["10.85.0.5/24", "fd85::5/64"]});
    assert_eq!(
        ips(&run(&applet(&dir), "ADD", "", &conf).json()),
        [
            ("10.85.0.5/24".into(), String::new()),
            ("fd85::5/64".into(), String::new())
        ]
    );
    // A replaced list is never read, so its errors do not matter.
    let mut conf = config("1.0.0", json!({"addresses": [{"address": "garbage"}]}));
    conf["runtimeConfig"] = json!({"ips": ["10.85.0.5/24"]});
    run(&applet(&dir), "ADD", "", &conf).assert_success();
}

#[test]
fn bad_input_is_refused_with_the_reference_messages() {
    let dir = AppletDir::new();
    let bin = applet(&dir);
    let cases = [
        (
            json!({"addresses": [{"address": "10.86.0.5"}]}),
            "",
            "the 'address' field is expected to be in CIDR notation, got: '10.86.0.5'",
        ),
        (
            json!({"addresses": [{"gateway": "10.86.0.1"}]}),
            "",
            "the 'address' field is expected to be in CIDR notation, got: ''",
        ),
        (
            json!({"addresses": [{"address": "10.86.0.5/24", "gateway": "nope"}]}),
            "",
            "invalid IP address: nope",
        ),
        (
            json!({}),
            "IP=10.86.0.5",
            "the 'ip' field is expected to be in CIDR notation, got: '10.86.0.5'",
        ),
        (
            json!({}),
            "IP=10.86.0.5/24;GATEWAY=x",
            "invalid gateway address: x",
        ),
        (json!({"routes": [{"dst": "x"}]}), "", "invalid routes"),
    ];
    for (ipam, args, msg) in cases {
        let (code, got) = error_of(&run(&bin, "ADD", args, &config("1.0.0", ipam.clone())));
        assert_eq!(code, 7, "{ipam} {args}");
        assert!(got.starts_with(msg), "{ipam} {args}: {got}");
    }
    let mut conf = config("1.0.0", json!({}));
    conf["args"] = json!({"cni": {"ips": ["10.86.0.5"]}});
    assert_eq!(
        error_of(&run(&bin, "ADD", "", &conf)).1,
        "an entry in the 'ips' field is NOT in CIDR notation, got: '10.86.0.5'"
    );
    let no_ipam = json!({"cniVersion": "1.0.0", "name": "stnet", "type": "static"});
    assert_eq!(
        error_of(&run(&bin, "ADD", "", &no_ipam)),
        (7, "IPAM config missing 'ipam' key".into())
    );
    let unknown = run(&bin, "ADD", "MAC=x", &config("1.0.0", json!({})));
    assert!(error_of(&unknown).1.starts_with("ARGS: unknown args"));
    // DEL reads nothing of it.
    run(&bin, "DEL", "", &no_ipam).assert_success();
}

#[test]
fn check_compares_with_the_previous_result() {
    let dir = AppletDir::new();
    let bin = applet(&dir);
    let mut conf = config("1.0.0", full_ipam());
    assert_eq!(
        error_of(&run(&bin, "CHECK", "", &conf)).1,
        "Required prevResult missing"
    );
    conf["prevResult"] = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0"}],
        "ips": [{"address": "10.80.0.5/24", "gateway": "10.80.0.1", "interface": 0}]
    });
    run(&bin, "CHECK", "", &conf).assert_success();
    conf["prevResult"]["ips"][0]["gateway"] = "10.80.0.254".into();
    assert_eq!(
        error_of(&run(&bin, "CHECK", "", &conf)).1,
        "static: Failed to match addr 10.80.0.5 on interface eth0"
    );
    assert_eq!(
        error_of(&run(&bin, "CHECK", "", &config("0.3.1", full_ipam()))).0,
        1
    );
    for cmd in ["GC", "STATUS"] {
        let out = Invocation::new(&bin)
            .command(cmd)
            .cni_path(dir.dir())
            .config(&config("1.1.0", full_ipam()))
            .run();
        out.assert_success();
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn same_answers_as_the_go_static() {
    let Some(go) = go_plugin("static") else {
        return;
    };
    let dir = AppletDir::new();
    let ours = applet(&dir);
    let mut with_args = config("1.0.0", full_ipam());
    with_args["args"] = json!({"cni": {"ips": ["10.87.0.5/24", "fd87::5/64"]}});
    let mut with_runtime = with_args.clone();
    with_runtime["runtimeConfig"] = json!({"ips": ["10.88.0.5/24"]});
    let cases = [
        (config("1.0.0", full_ipam()), ""),
        (
            config("1.0.0", full_ipam()),
            "IP=10.83.0.5/24,fd83::5/64;GATEWAY=10.83.0.1",
        ),
        (with_args, ""),
        (with_runtime, ""),
        (config("0.2.0", full_ipam()), ""),
        (config("0.3.1", full_ipam()), "IP=10.83.0.5/24"),
        (config("0.2.0", full_ipam()), "IP=10.83.0.5/24"),
        (
            config("1.0.0", json!({"addresses": [{"address": "10.86.0.5"}]})),
            "",
        ),
        (config("1.0.0", json!({})), "IP=10.86.0.5/24;GATEWAY=x"),
    ];
    for (conf, args) in cases {
        let (a, b) = (run(&ours, "ADD", args, &conf), run(&go, "ADD", args, &conf));
        assert_eq!(a.success(), b.success(), "{conf} {args}\nours {a}\ngo {b}");
        let (a, b) = (a.json(), b.json());
        if a.get("code").is_some() {
            assert_eq!(a["msg"], b["msg"], "{conf} {args}");
            continue;
        }
        // Debian's Go library prints an empty `dns` in 1.0.0 results; the current one does not.
        for key in ["cniVersion", "ips", "ip4", "ip6", "routes"] {
            assert_eq!(a.get(key), b.get(key), "{key}: {conf} {args}");
        }
        let dns = |v: &Value| v.get("dns").cloned().unwrap_or(json!({}));
        assert_eq!(dns(&a), dns(&b), "{conf} {args}");
    }
}
