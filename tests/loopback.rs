//! loopback through its symlink name, in real namespaces, for every spec version; the
//! bad-input matrix against cnibox and against Debian's Go loopback (the oracle).

mod common;

use common::*;

fn config(version: &str) -> Value {
    json!({"cniVersion": version, "name": "lo-test", "type": "loopback"})
}

fn lo_is_up(ns: &Netns) -> bool {
    let links = ns.ip_json(&["link", "show", "lo"]);
    links[0]["flags"]
        .as_array()
        .is_some_and(|flags| flags.iter().any(|f| f == "UP"))
}

fn invocation(dir: &AppletDir, command: &str, ns: &str) -> Invocation {
    Invocation::new(dir.path("loopback"))
        .command(command)
        .container_id("ctr-lo")
        .netns(ns)
        .ifname("eth0")
        .cni_path(dir.dir())
}

fn expected_result(version: &str, sandbox: &str) -> Value {
    match version {
        "0.1.0" | "0.2.0" => json!({
            "cniVersion": version,
            "ip4": {"ip": "127.0.0.1/8"},
            "ip6": {"ip": "::1/128"},
            "dns": {}
        }),
        "0.3.0" | "0.3.1" | "0.4.0" => json!({
            "cniVersion": version,
            "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": sandbox}],
            "ips": [
                {"version": "4", "interface": 0, "address": "127.0.0.1/8"},
                {"version": "6", "interface": 0, "address": "::1/128"}
            ],
            "dns": {}
        }),
        _ => json!({
            "cniVersion": version,
            "interfaces": [{"name": "lo", "mac": "00:00:00:00:00:00", "sandbox": sandbox}],
            "ips": [
                {"interface": 0, "address": "127.0.0.1/8"},
                {"interface": 0, "address": "::1/128"}
            ]
        }),
    }
}

#[test]
fn add_check_del_for_every_spec_version() {
    let dir = AppletDir::new();
    for version in VERSIONS {
        let ns = Netns::new("lo");
        assert!(!lo_is_up(&ns), "a new namespace starts with lo down");
        let run = |cmd: &str| {
            invocation(&dir, cmd, ns.path_str())
                .config(&config(version))
                .run()
        };

        let add = run("ADD");
        add.assert_success();
        assert_eq!(
            add.json(),
            expected_result(version, ns.path_str()),
            "{version}"
        );
        assert!(lo_is_up(&ns), "{version}: ADD brings lo up");

        let check = run("CHECK");
        if version >= "0.4.0" {
            check.assert_success();
        } else {
            assert_eq!(check.json()["code"], 1, "{version}: CHECK needs 0.4.0");
        }

        run("DEL").assert_success();
        assert!(!lo_is_up(&ns), "{version}: DEL takes lo down");
        assert!(run("DEL").stdout.is_empty(), "DEL prints nothing");
        run("DEL").assert_success();
        if version >= "0.4.0" {
            let down = run("CHECK");
            assert_eq!(down.json()["msg"], "loopback interface is down", "{down}");
        }
    }
}

#[test]
fn del_succeeds_without_a_namespace() {
    let dir = AppletDir::new();
    let ns = Netns::new("lo-gone");
    let path = ns.path_str().to_string();
    drop(ns);
    for netns in [path.as_str(), ""] {
        invocation(&dir, "DEL", netns)
            .config(&config("1.1.0"))
            .run()
            .assert_success();
    }
    // ADD on a vanished namespace is an error, not a crash.
    let add = invocation(&dir, "ADD", &path)
        .config(&config("1.1.0"))
        .run();
    assert_eq!(add.json()["code"], 999, "{add}");
}

#[test]
fn chained_loopback_passes_the_previous_result_through() {
    let dir = AppletDir::new();
    let ns = Netns::new("lo-chain");
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": ns.path_str()}],
        "ips": [{"address": "10.1.2.3/24", "gateway": "10.1.2.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0"}]
    });
    let mut conf = config("1.1.0");
    conf["prevResult"] = prev.clone();
    let out = invocation(&dir, "ADD", ns.path_str()).config(&conf).run();
    let mut expected = prev;
    expected["cniVersion"] = "1.1.0".into();
    assert_eq!(out.json(), expected, "{out}");
}

#[test]
fn stdin_status_and_gc_are_accepted_at_1_1_0() {
    let dir = AppletDir::new();
    for cmd in ["STATUS", "GC"] {
        let out = Invocation::new(dir.path("loopback"))
            .command(cmd)
            .cni_path(dir.dir())
            .config(&config("1.1.0"))
            .run();
        out.assert_success();
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn version_and_about_text() {
    let dir = AppletDir::new();
    let version = Invocation::new(dir.path("loopback"))
        .command("VERSION")
        .stdin("garbage")
        .run();
    version.assert_success();
    assert_eq!(
        version.stdout,
        "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.1.0\",\"0.2.0\",\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]}\n"
    );
    let about = Invocation::new(dir.path("loopback")).run();
    about.assert_success();
    assert!(about.stdout.is_empty());
    assert!(
        about.stderr.starts_with("CNI loopback plugin ")
            && about.stderr.contains(
                "CNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"
            ),
        "{about}"
    );
}

/// The own-namespace check runs in a throwaway "host" namespace, so a broken check could only
/// take that namespace's lo down, never the machine's.
#[test]
fn own_namespace_is_refused_before_anything_changes() {
    let dir = AppletDir::new();
    let host = Netns::new("lo-host");
    host.ip(&["link", "set", "lo", "up"]);
    let wrapper = dir.dir().join("in-host-ns");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec ip netns exec {} {}\n",
            host.name,
            dir.path("loopback").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for cmd in ["DEL", "ADD"] {
        let out = Invocation::new(&wrapper)
            .command(cmd)
            .container_id("ctr-own")
            .netns("/proc/self/ns/net")
            .ifname("eth0")
            .cni_path(dir.dir())
            .config(&config("1.0.0"))
            .run();
        assert_eq!(out.status, 1, "{out}");
        assert_eq!(out.json()["code"], 8, "{out}");
        assert!(lo_is_up(&host), "{cmd} must not touch the plugin's own lo");
    }
    let overridden = Invocation::new(&wrapper)
        .command("DEL")
        .container_id("ctr-own")
        .netns("/proc/self/ns/net")
        .ifname("eth0")
        .cni_path(dir.dir())
        .env("CNI_NETNS_OVERRIDE", "1")
        .config(&config("1.0.0"))
        .run();
    overridden.assert_success();
    assert!(!lo_is_up(&host), "with CNI_NETNS_OVERRIDE the DEL does act");
}

struct BadInput {
    what: &'static str,
    env: Vec<(&'static str, &'static str)>,
    stdin: &'static str,
    code: u64,
}

fn bad_inputs(netns: &'static str) -> Vec<BadInput> {
    let full = |cmd: &'static str| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "ctr-bad"),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/nonexistent"),
        ]
    };
    let without = |cmd: &'static str, var: &str| {
        let mut env = full(cmd);
        env.retain(|(k, _)| *k != var);
        env
    };
    let with = |cmd: &'static str, var: &'static str, value: &'static str| {
        let mut env = full(cmd);
        env.retain(|(k, _)| *k != var);
        env.push((var, value));
        env
    };
    let good = r#"{"cniVersion":"1.0.0","name":"bad-input","type":"loopback"}"#;
    vec![
        BadInput {
            what: "ADD without CNI_PATH",
            env: without("ADD", "CNI_PATH"),
            stdin: good,
            code: 4,
        },
        BadInput {
            what: "ADD without netns",
            env: without("ADD", "CNI_NETNS"),
            stdin: good,
            code: 4,
        },
        BadInput {
            what: "DEL without container id",
            env: without("DEL", "CNI_CONTAINERID"),
            stdin: good,
            code: 4,
        },
        BadInput {
            what: "CHECK without ifname",
            env: without("CHECK", "CNI_IFNAME"),
            stdin: good,
            code: 4,
        },
        BadInput {
            what: "only CNI_COMMAND",
            env: vec![("CNI_COMMAND", "ADD")],
            stdin: good,
            code: 4,
        },
        BadInput {
            what: "bad container id",
            env: with("ADD", "CNI_CONTAINERID", "-bad"),
            stdin: good,
            code: 4,
        },
        BadInput {
            what: "ifname too long",
            env: with("ADD", "CNI_IFNAME", "0123456789abcdef"),
            stdin: good,
            code: 4,
        },
        BadInput {
            what: "ifname with slash",
            env: with("DEL", "CNI_IFNAME", "a/b"),
            stdin: good,
            code: 4,
        },
        BadInput {
            what: "bad JSON",
            env: full("ADD"),
            stdin: "{not json",
            code: 6,
        },
        BadInput {
            what: "empty stdin",
            env: full("DEL"),
            stdin: "",
            code: 6,
        },
        BadInput {
            what: "name missing",
            env: full("ADD"),
            stdin: r#"{"cniVersion":"1.0.0"}"#,
            code: 7,
        },
        BadInput {
            what: "bad name",
            env: full("ADD"),
            stdin: r#"{"cniVersion":"1.0.0","name":"-x"}"#,
            code: 7,
        },
        BadInput {
            what: "unknown version",
            env: full("ADD"),
            stdin: r#"{"cniVersion":"9.9.9","name":"n"}"#,
            code: 1,
        },
        BadInput {
            what: "CHECK on 0.3.1",
            env: full("CHECK"),
            stdin: r#"{"cniVersion":"0.3.1","name":"n"}"#,
            code: 1,
        },
        BadInput {
            what: "unknown command",
            env: full("FOO"),
            stdin: good,
            code: 4,
        },
    ]
}

fn assert_matrix(bin: &std::path::Path, ns: &Netns, label: &str) {
    let netns: &'static str = Box::leak(ns.path_str().to_string().into_boxed_str());
    for case in bad_inputs(netns) {
        let out = Invocation::new(bin).envs(&case.env).stdin(case.stdin).run();
        assert_eq!(out.status, 1, "{label}: {}: {out}", case.what);
        assert_eq!(
            out.json()["code"],
            case.code,
            "{label}: {}: {out}",
            case.what
        );
        assert!(lo_is_up(ns), "{label}: {} changed the namespace", case.what);
    }
}

#[test]
fn bad_input_matrix_matches_the_go_loopback() {
    let dir = AppletDir::new();
    let ns = Netns::new("lo-bad");
    ns.ip(&["link", "set", "lo", "up"]);
    assert_matrix(&dir.path("loopback"), &ns, "cnibox");
    // Known differences with Debian's v1.1.1, not part of the matrix: it knows spec versions
    // up to 1.0.0 only (VERSION says 1.0.0; STATUS and GC are unknown verbs to it).
    if let Some(go) = go_plugin("loopback") {
        assert_matrix(&go, &ns, "go loopback");
    }
}

#[test]
fn unknown_applet_name_is_a_cni_error() {
    let dir = AppletDir::new();
    let renamed = dir.dir().join("ipvlanx");
    std::os::unix::fs::symlink("cnibox", &renamed).unwrap();
    let out = Invocation::new(&renamed).command("ADD").run();
    assert_eq!(out.status, 1, "{out}");
    assert_eq!(out.json()["code"], 999);
    let via_cnibox = std::process::Command::new(dir.path("cnibox"))
        .arg("nosuchplugin")
        .output()
        .unwrap();
    assert_eq!(via_cnibox.status.code(), Some(1));
    assert_eq!(
        parse_json(&String::from_utf8_lossy(&via_cnibox.stdout))["code"],
        999
    );
    let list = std::process::Command::new(dir.path("cnibox"))
        .arg("--list")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&list.stdout)
            .lines()
            .any(|l| l == "loopback")
    );
}
