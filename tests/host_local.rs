//! host-local through its symlink name: every key, every spec version, DEL/CHECK/GC/STATUS,
//! 200 parallel ADDs and DELs, the safety cases, and turns with Debian's Go host-local on one
//! data directory (the oracle speaks spec versions up to 1.0.0).
//!
//! IPAM needs no namespace: ADD gets a `CNI_NETNS` path that does not exist.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::*;

const NO_NETNS: &str = "/run/netns/cnibox-host-local-test-does-not-exist";

/// A unique temp directory used as `dataDir`, removed on drop.
struct DataDir(PathBuf);

impl DataDir {
    fn new(tag: &str) -> DataDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("cnibox-hl-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        DataDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn net(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// File name -> content of a network directory.
    fn files(&self, name: &str) -> BTreeMap<String, Vec<u8>> {
        dir_files(&self.net(name))
    }

    fn names(&self, name: &str) -> Vec<String> {
        self.files(name).into_keys().collect()
    }

    /// The reservation files only (not `lock`, not `last_reserved_ip.*`).
    fn reservations(&self, name: &str) -> BTreeMap<String, String> {
        self.files(name)
            .into_iter()
            .filter(|(n, _)| n != "lock" && !n.starts_with("last_reserved_ip."))
            .map(|(n, c)| (n, String::from_utf8_lossy(&c).into_owned()))
            .collect()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// File name -> content (`<symlink>` for links); nothing if the directory does not exist.
fn dir_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        other => other.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())),
    };
    entries
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let content = if e.file_type().unwrap().is_symlink() {
                b"<symlink>".to_vec()
            } else {
                std::fs::read(e.path()).unwrap()
            };
            (name, content)
        })
        .collect()
}

/// A host-local configuration with `ipam` extended by `extra`.
fn config(version: &str, data_dir: &Path, extra: Value) -> Value {
    let mut ipam = json!({"type": "host-local", "dataDir": data_dir});
    for (k, v) in extra.as_object().unwrap() {
        ipam[k] = v.clone();
    }
    json!({"cniVersion": version, "name": "hlnet", "type": "bridge", "ipam": ipam})
}

fn v4_config(version: &str, data_dir: &Path, subnet: &str) -> Value {
    config(version, data_dir, json!({"ranges": [[{"subnet": subnet}]]}))
}

/// Runs `bin` (cnibox's link or the Go plugin) for one verb.
fn call(bin: &Path, cni_path: &Path, cmd: &str, id: &str, ifname: &str, conf: &Value) -> Output {
    Invocation::new(bin)
        .command(cmd)
        .container_id(id)
        .netns(NO_NETNS)
        .ifname(ifname)
        .cni_path(cni_path)
        .config(conf)
        .run()
}

struct HostLocal {
    applets: AppletDir,
}

impl HostLocal {
    fn new() -> HostLocal {
        HostLocal {
            applets: AppletDir::new(),
        }
    }

    fn bin(&self) -> PathBuf {
        self.applets.path("host-local")
    }

    fn run(&self, cmd: &str, id: &str, conf: &Value) -> Output {
        call(&self.bin(), self.applets.dir(), cmd, id, "eth0", conf)
    }

    /// ADD that must succeed; returns the result's addresses.
    fn add(&self, id: &str, conf: &Value) -> Vec<String> {
        let out = self.run("ADD", id, conf);
        out.assert_success();
        addresses(&out.json())
    }

    fn del(&self, id: &str, conf: &Value) {
        let out = self.run("DEL", id, conf);
        out.assert_success();
        assert!(out.stdout.is_empty(), "DEL prints nothing: {out}");
    }

    fn no_env(&self, cmd: &str, conf: &Value) -> Output {
        Invocation::new(self.bin())
            .command(cmd)
            .cni_path(self.applets.dir())
            .config(conf)
            .run()
    }
}

/// The addresses of a result of any version.
fn addresses(result: &Value) -> Vec<String> {
    if let Some(ips) = result["ips"].as_array() {
        return ips
            .iter()
            .map(|ip| ip["address"].as_str().unwrap().to_string())
            .collect();
    }
    ["ip4", "ip6"]
        .iter()
        .filter_map(|k| result[k]["ip"].as_str().map(String::from))
        .collect()
}

fn error_of(out: &Output) -> (u64, String) {
    out.assert_failure();
    let e = out.json();
    (
        e["code"].as_u64().unwrap(),
        e["msg"].as_str().unwrap().to_string(),
    )
}

// ------------------------------------------------------------------ versions and keys

#[test]
fn every_spec_version_has_its_result_shape() {
    let hl = HostLocal::new();
    let resolv_dir = DataDir::new("resolv");
    let resolv = resolv_dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 10.10.0.53\nsearch a.example\noptions ndots:3\ndomain example\n",
    )
    .unwrap();
    for version in VERSIONS {
        let data = DataDir::new("versions");
        let conf = config(
            version,
            data.path(),
            json!({
                "ranges": [[{"subnet": "10.10.0.0/24"}], [{"subnet": "fd10::/64"}]],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd99::/64", "gw": "fd10::99"}],
                "resolvConf": resolv,
            }),
        );
        let out = hl.run("ADD", &format!("ctr-{version}"), &conf);
        out.assert_success();
        let dns = json!({"nameservers": ["10.10.0.53"], "domain": "example", "search": ["a.example"], "options": ["ndots:3"]});
        let expected = match version {
            "0.1.0" | "0.2.0" => json!({
                "cniVersion": version,
                "ip4": {"ip": "10.10.0.2/24", "gateway": "10.10.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
                "ip6": {"ip": "fd10::2/64", "gateway": "fd10::1", "routes": [{"dst": "fd99::/64", "gw": "fd10::99"}]},
                "dns": dns,
            }),
            "0.3.0" | "0.3.1" | "0.4.0" => json!({
                "cniVersion": version,
                "ips": [
                    {"version": "4", "address": "10.10.0.2/24", "gateway": "10.10.0.1"},
                    {"version": "6", "address": "fd10::2/64", "gateway": "fd10::1"}
                ],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd99::/64", "gw": "fd10::99"}],
                "dns": dns,
            }),
            _ => json!({
                "cniVersion": version,
                "ips": [
                    {"address": "10.10.0.2/24", "gateway": "10.10.0.1"},
                    {"address": "fd10::2/64", "gateway": "fd10::1"}
                ],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd99::/64", "gw": "fd10::99"}],
                "dns": dns,
            }),
        };
        assert_eq!(out.json(), expected, "{version}");
        let check = hl.run("CHECK", &format!("ctr-{version}"), &conf);
        if version >= "0.4.0" {
            check.assert_success();
        } else {
            assert_eq!(error_of(&check).0, 1, "{version}: CHECK needs 0.4.0");
        }
        hl.del(&format!("ctr-{version}"), &conf);
        assert!(data.reservations("hlnet").is_empty(), "{version}");
    }
    // 1.x leaves an empty dns out.
    let out = hl.run(
        "ADD",
        "plain",
        &v4_config("1.0.0", resolv_dir.path(), "10.11.0.0/24"),
    );
    assert_eq!(
        out.json(),
        json!({"cniVersion": "1.0.0", "ips": [{"address": "10.11.0.2/24", "gateway": "10.11.0.1"}]})
    );
}

#[test]
fn legacy_results_take_one_address_per_family() {
    let hl = HostLocal::new();
    let data = DataDir::new("legacy-limit");
    for version in ["0.1.0", "0.2.0"] {
        let conf = config(
            version,
            data.path(),
            json!({"ranges": [[{"subnet": "10.12.0.0/24"}], [{"subnet": "10.13.0.0/24"}]]}),
        );
        for cmd in ["ADD", "DEL"] {
            let (code, msg) = error_of(&hl.run(cmd, "c", &conf));
            assert_eq!(code, 7);
            assert_eq!(
                msg,
                format!("CNI version {version} does not support more than 1 address per family")
            );
        }
    }
    // No cniVersion at all is 0.1.0.
    let mut conf = config(
        "",
        data.path(),
        json!({"ranges": [[{"subnet": "10.12.0.0/24"}], [{"subnet": "10.13.0.0/24"}]]}),
    );
    conf.as_object_mut().unwrap().remove("cniVersion");
    assert_eq!(
        error_of(&hl.run("ADD", "c", &conf)).1,
        "CNI version  does not support more than 1 address per family"
    );
    assert!(data.reservations("hlnet").is_empty());
}

#[test]
fn ranges_bounds_gateways_and_the_legacy_keys() {
    let hl = HostLocal::new();
    let data = DataDir::new("keys");
    // Several ranges in one set, explicit bounds and gateways, plus a legacy top-level range
    // that goes first (so it is last_reserved_ip.0).
    let conf = config(
        "1.1.0",
        data.path(),
        json!({
            "subnet": "10.20.0.0/16", "rangeStart": "10.20.5.1", "rangeEnd": "10.20.5.4", "gateway": "10.20.5.1",
            "ranges": [
                [
                    {"subnet": "10.21.0.0/24", "rangeStart": "10.21.0.100", "rangeEnd": "10.21.0.101", "gateway": "10.21.0.254"},
                    {"subnet": "10.22.0.0/24", "rangeStart": "10.22.0.1", "rangeEnd": "10.22.0.2"}
                ],
                [{"subnet": "fd20::/64", "rangeStart": "fd20::ffff", "gateway": "fd20::ffff"}]
            ]
        }),
    );
    let out = hl.run("ADD", "a", &conf);
    out.assert_success();
    assert_eq!(
        out.json()["ips"],
        json!([
            {"address": "10.20.5.2/16", "gateway": "10.20.5.1"},
            {"address": "10.21.0.100/24", "gateway": "10.21.0.254"},
            {"address": "fd20::1:0/64", "gateway": "fd20::ffff"}
        ])
    );
    assert_eq!(
        hl.add("b", &conf),
        ["10.20.5.3/16", "10.21.0.101/24", "fd20::1:1/64"]
    );
    // The second range of the set; its gateway (.1) is skipped.
    assert_eq!(
        hl.add("c", &conf),
        ["10.20.5.4/16", "10.22.0.2/24", "fd20::1:2/64"]
    );
    let files = data.files("hlnet");
    assert_eq!(files["last_reserved_ip.0"], b"10.20.5.4");
    assert_eq!(files["last_reserved_ip.1"], b"10.22.0.2");
    assert_eq!(files["last_reserved_ip.2"], b"fd20::1:2");
    // The legacy range (three usable addresses) is exhausted now.
    let (code, msg) = error_of(&hl.run("ADD", "d", &conf));
    assert_eq!(code, 999);
    assert_eq!(
        msg,
        "failed to allocate for range 0: no IP addresses available in range set: 10.20.5.1-10.20.5.4"
    );
}

#[test]
fn requested_addresses_from_cni_args_args_and_runtime_config() {
    let hl = HostLocal::new();
    let data = DataDir::new("requested");
    let base = config(
        "1.1.0",
        data.path(),
        json!({"ranges": [[{"subnet": "10.30.0.0/24"}], [{"subnet": "fd30::/64"}]]}),
    );
    // podman --ip: CNI_ARGS IP=
    let out = Invocation::new(hl.bin())
        .command("ADD")
        .container_id("podman")
        .netns(NO_NETNS)
        .ifname("eth0")
        .cni_path(hl.applets.dir())
        .args("IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.30.0.77")
        .config(&base)
        .run();
    out.assert_success();
    assert_eq!(addresses(&out.json()), ["10.30.0.77/24", "fd30::2/64"]);

    let mut conf = base.clone();
    conf["args"] = json!({"cni": {"ips": ["10.30.0.88", "fd30::88/64"]}});
    assert_eq!(hl.add("args", &conf), ["10.30.0.88/24", "fd30::88/64"]);

    let mut conf = base.clone();
    conf["runtimeConfig"] = json!({"ips": ["fd30::99"]});
    assert_eq!(hl.add("runtime", &conf), ["10.30.0.89/24", "fd30::99/64"]);

    // Taken, the gateway, and an address in no range.
    for (ips, msg) in [
        (
            json!(["10.30.0.88"]),
            "failed to allocate for range 0: requested IP address 10.30.0.88 is not available in range set 10.30.0.1-10.30.0.254",
        ),
        (
            json!(["10.30.0.1"]),
            "failed to allocate for range 0: requested ip 10.30.0.1 is subnet's gateway",
        ),
        (
            json!(["192.0.2.1"]),
            "failed to allocate all requested IPs: 192.0.2.1",
        ),
    ] {
        let mut conf = base.clone();
        conf["runtimeConfig"] = json!({"ips": ips});
        assert_eq!(error_of(&hl.run("ADD", "bad", &conf)).1, msg);
    }
    let mut conf = base.clone();
    conf["runtimeConfig"] = json!({"ips": ["not-an-ip"]});
    assert_eq!(
        error_of(&hl.run("ADD", "bad", &conf)),
        (7, "invalid IP address not-an-ip".into())
    );
    // The failures left nothing behind.
    let held: BTreeSet<String> = data.reservations("hlnet").into_keys().collect();
    let want: BTreeSet<String> = [
        "10.30.0.77",
        "fd30::2",
        "10.30.0.88",
        "fd30::88",
        "10.30.0.89",
        "fd30::99",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(held, want);
}

#[test]
fn runtime_ip_ranges_are_prepended() {
    let hl = HostLocal::new();
    let data = DataDir::new("ipranges");
    let mut conf = v4_config("1.0.0", data.path(), "10.31.0.0/24");
    conf["runtimeConfig"] =
        json!({"ipRanges": [[{"subnet": "10.32.0.0/24", "rangeStart": "10.32.0.50"}]]});
    assert_eq!(hl.add("a", &conf), ["10.32.0.50/24", "10.31.0.2/24"]);
    assert_eq!(data.files("hlnet")["last_reserved_ip.0"], b"10.32.0.50");
    conf["runtimeConfig"] = json!({"ipRanges": [[{"subnet": "10.31.0.0/25"}]]});
    assert_eq!(
        error_of(&hl.run("ADD", "b", &conf)),
        (7, "range set 0 overlaps with 1".into())
    );
}

#[test]
fn config_errors_are_code_7() {
    let hl = HostLocal::new();
    let data = DataDir::new("errors");
    let cases = [
        (json!({}), "no IP ranges specified"),
        (
            json!({"ranges": [[{"subnet": "10.40.0.0/31"}]]}),
            "invalid range set 0: Network 10.40.0.0/31 too small to allocate from",
        ),
        (
            json!({"ranges": [[{"subnet": "10.40.0.1/24"}]]}),
            "invalid range set 0: Network has host bits set. For a subnet mask of length 24 the network address is 10.40.0.0",
        ),
        (
            json!({"ranges": [[{"subnet": "10.40.0.0/24", "rangeStart": "10.41.0.1"}]]}),
            "invalid range set 0: RangeStart 10.41.0.1 not in network 10.40.0.0/24",
        ),
        (
            json!({"ranges": [[{"subnet": "10.40.0.0/24"}, {"subnet": "fd40::/64"}]]}),
            "invalid range set 0: mixed address families",
        ),
        (
            json!({"ranges": [[{"subnet": "10.40.0.0/24"}, {"subnet": "10.40.0.0/25"}]]}),
            "invalid range set 0: subnets 10.40.0.1-10.40.0.254 and 10.40.0.1-10.40.0.126 overlap",
        ),
        (
            json!({"ranges": [[{"subnet": "10.40.0.0/24"}]], "routes": [{"dst": "nope"}]}),
            "invalid routes",
        ),
        (json!({"ranges": "nope"}), "failed to load netconf"),
    ];
    for (extra, msg) in cases {
        let out = hl.run("ADD", "c", &config("1.0.0", data.path(), extra.clone()));
        let (code, got) = error_of(&out);
        assert_eq!(code, 7, "{extra}");
        assert!(got.starts_with(msg), "{extra}: {got}");
    }
    let no_ipam = json!({"cniVersion": "1.0.0", "name": "hlnet", "type": "host-local"});
    assert_eq!(
        error_of(&hl.run("ADD", "c", &no_ipam)),
        (7, "IPAM config missing 'ipam' key".into())
    );
    // A missing resolv.conf is an I/O failure, not a config error.
    let conf = config(
        "1.0.0",
        data.path(),
        json!({"ranges": [[{"subnet": "10.40.0.0/24"}]], "resolvConf": "/nonexistent/resolv.conf"}),
    );
    assert_eq!(error_of(&hl.run("ADD", "c", &conf)).0, 999);
    assert!(data.reservations("hlnet").is_empty());
}

#[test]
fn default_data_dir_is_var_lib_cni_networks() {
    let hl = HostLocal::new();
    let name = format!("cnibox-hl-default-{}", std::process::id());
    let conf = json!({"cniVersion": "1.0.0", "name": name, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.41.0.0/24"}]]}});
    let dir = Path::new("/var/lib/cni/networks").join(&name);
    let index = Path::new("/var/lib/cni/networks/.cnibox").join(&name);
    let out = hl.run("ADD", "c", &conf);
    let exists = dir.join("10.41.0.2").is_file();
    hl.run("DEL", "c", &conf);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&index);
    // Only removed when empty: other networks may have their index there.
    let _ = std::fs::remove_dir("/var/lib/cni/networks/.cnibox");
    out.assert_success();
    assert!(exists, "no reservation in {}", dir.display());
}

// ------------------------------------------------------------------ DEL, CHECK, GC, STATUS

#[test]
fn del_is_by_container_and_interface_idempotent_and_needs_no_netns() {
    let hl = HostLocal::new();
    let data = DataDir::new("del");
    let conf = v4_config("1.0.0", data.path(), "10.50.0.0/24");
    hl.add("a", &conf);
    let eth1 = call(&hl.bin(), hl.applets.dir(), "ADD", "a", "eth1", &conf);
    eth1.assert_success();
    hl.add("b", &conf);
    // A DEL without CNI_NETNS (the runtime lost the namespace).
    let out = Invocation::new(hl.bin())
        .command("DEL")
        .container_id("a")
        .ifname("eth0")
        .cni_path(hl.applets.dir())
        .config(&conf)
        .run();
    out.assert_success();
    assert_eq!(
        data.reservations("hlnet"),
        BTreeMap::from([
            ("10.50.0.3".into(), "a\r\neth1".into()),
            ("10.50.0.4".into(), "b\r\neth0".into())
        ])
    );
    hl.del("a", &conf);
    hl.del("nobody", &conf);
    let again = call(&hl.bin(), hl.applets.dir(), "DEL", "a", "eth1", &conf);
    again.assert_success();
    assert_eq!(data.reservations("hlnet").len(), 1);
    assert_eq!(
        error_of(&call(
            &hl.bin(),
            hl.applets.dir(),
            "CHECK",
            "a",
            "eth1",
            &conf
        ))
        .1,
        "host-local: Failed to find address added by container a"
    );
    hl.run("CHECK", "b", &conf).assert_success();
    // A legacy file holding only the container ID is released by DEL of any interface.
    std::fs::write(data.net("hlnet").join("10.50.0.9"), "old-ctr").unwrap();
    call(
        &hl.bin(),
        hl.applets.dir(),
        "CHECK",
        "old-ctr",
        "eth3",
        &conf,
    )
    .assert_success();
    let dup = hl.run("ADD", "old-ctr", &conf);
    assert_eq!(
        error_of(&dup).1,
        "failed to allocate for range 0: 10.50.0.9 has been allocated to old-ctr, duplicate allocation is not allowed"
    );
    hl.del("old-ctr", &conf);
    assert!(!data.net("hlnet").join("10.50.0.9").exists());
}

#[test]
fn exhaustion_leaves_nothing_half_written() {
    let hl = HostLocal::new();
    let data = DataDir::new("exhaust");
    let conf = config(
        "1.1.0",
        data.path(),
        json!({"ranges": [[{"subnet": "10.51.0.0/24"}], [{"subnet": "10.52.0.0/29"}]]}),
    );
    for i in 0..5 {
        hl.add(&format!("c{i}"), &conf);
    }
    let before = data.files("hlnet");
    let (code, msg) = error_of(&hl.run("ADD", "c5", &conf));
    assert_eq!(code, 999);
    assert_eq!(
        msg,
        "failed to allocate for range 1: no IP addresses available in range set: 10.52.0.1-10.52.0.6"
    );
    let after = data.files("hlnet");
    // Set 0's address was taken and given back: only last_reserved_ip.0 moved on, as upstream.
    let mut expected = before.clone();
    expected.insert("last_reserved_ip.0".into(), b"10.51.0.7".to_vec());
    assert_eq!(after, expected);
    let status = hl.no_env("STATUS", &conf);
    assert_eq!(
        error_of(&status),
        (
            50,
            "no IP addresses available in range set: 10.52.0.1-10.52.0.6".into()
        )
    );
    hl.del("c2", &conf);
    hl.no_env("STATUS", &conf).assert_success();
    assert_eq!(hl.add("c5", &conf), ["10.51.0.8/24", "10.52.0.4/29"]);
}

#[test]
fn gc_drops_what_is_not_valid_and_keeps_the_bookkeeping() {
    let hl = HostLocal::new();
    let data = DataDir::new("gc");
    let conf = config(
        "1.1.0",
        data.path(),
        json!({"ranges": [[{"subnet": "10.53.0.0/24"}], [{"subnet": "fd53::/64"}]]}),
    );
    for id in ["keep", "drop"] {
        hl.add(id, &conf);
    }
    let eth1 = call(&hl.bin(), hl.applets.dir(), "ADD", "keep", "eth1", &conf);
    eth1.assert_success();
    let dir = data.net("hlnet");
    std::fs::write(dir.join("10.53.0.100"), "keep").unwrap(); // legacy, container still valid
    std::fs::write(dir.join("10.53.0.101"), "gone").unwrap(); // legacy, container gone
    std::fs::write(dir.join("10.53.0.102"), "").unwrap(); // a crash of an old writer
    std::fs::write(dir.join("notes.txt"), "drop\r\neth0").unwrap(); // not a reservation name

    // No list at all (cnitool): nothing is known to be stale.
    let before = data.files("hlnet");
    hl.no_env("GC", &conf).assert_success();
    assert_eq!(data.files("hlnet"), before);

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}, {"containerID": "other", "ifname": "eth0"}]);
    let out = hl.no_env("GC", &gc);
    out.assert_success();
    assert!(out.stdout.is_empty());
    assert_eq!(
        data.names("hlnet"),
        [
            "10.53.0.100",
            "10.53.0.2",
            "fd53::2",
            "last_reserved_ip.0",
            "last_reserved_ip.1",
            "lock",
            "notes.txt"
        ]
    );
    // The older key works too; an empty list drops every reservation.
    let mut gc = conf.clone();
    gc["cni.dev/attachments"] = json!([]);
    hl.no_env("GC", &gc).assert_success();
    assert_eq!(
        data.names("hlnet"),
        [
            "last_reserved_ip.0",
            "last_reserved_ip.1",
            "lock",
            "notes.txt"
        ]
    );
    // The index followed: the dropped container may ADD again.
    hl.add("keep", &conf);
    // GC before 1.1.0 is refused by the protocol layer; GC of a network never used is fine.
    assert_eq!(
        error_of(&hl.no_env("GC", &v4_config("1.0.0", data.path(), "10.53.0.0/24"))).0,
        1
    );
    let mut fresh = v4_config("1.1.0", data.path(), "10.54.0.0/24");
    fresh["name"] = "unused".into();
    fresh["cni.dev/valid-attachments"] = json!([]);
    hl.no_env("GC", &fresh).assert_success();
    assert!(!data.net("unused").exists());
}

#[test]
fn status_reports_an_unusable_data_dir_as_code_50() {
    let hl = HostLocal::new();
    let data = DataDir::new("status");
    hl.no_env("STATUS", &v4_config("1.1.0", data.path(), "10.55.0.0/24"))
        .assert_success();
    let file = data.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = hl.no_env("STATUS", &v4_config("1.1.0", &file, "10.55.0.0/24"));
    let (code, msg) = error_of(&out);
    assert_eq!(code, 50);
    assert!(
        msg.starts_with("data directory ") && msg.contains("is not usable"),
        "{msg}"
    );
    // ADD there fails as an internal error, leaving nothing.
    assert_eq!(
        error_of(&hl.run("ADD", "c", &v4_config("1.1.0", &file, "10.55.0.0/24"))).0,
        999
    );
    assert_eq!(
        error_of(&hl.no_env("STATUS", &v4_config("1.0.0", data.path(), "10.55.0.0/24"))).0,
        1
    );
}

// ------------------------------------------------------------------ load

#[test]
fn two_hundred_parallel_adds_then_dels() {
    let hl = HostLocal::new();
    let data = DataDir::new("parallel");
    let conf = config(
        "1.1.0",
        data.path(),
        json!({"ranges": [[{"subnet": "10.60.0.0/24"}], [{"subnet": "fd60::/64"}]]}),
    );
    let run_all = |cmd: &'static str| -> Vec<Output> {
        let handles: Vec<_> = (0..200)
            .map(|i| {
                let (bin, path, conf) = (hl.bin(), hl.applets.dir().to_path_buf(), conf.clone());
                std::thread::spawn(move || {
                    call(&bin, &path, cmd, &format!("par-{i}"), "eth0", &conf)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    };
    let outs = run_all("ADD");
    let held = data.reservations("hlnet");
    let mut seen = BTreeSet::new();
    for (i, out) in outs.iter().enumerate() {
        out.assert_success();
        let ips = addresses(&out.json());
        assert_eq!(ips.len(), 2);
        for ip in ips {
            assert!(seen.insert(ip.clone()), "{ip} handed out twice");
            let name = ip.split('/').next().unwrap().to_string();
            assert_eq!(held[&name], format!("par-{i}\r\neth0"));
        }
    }
    assert_eq!(seen.len(), 400);
    assert_eq!(data.reservations("hlnet").len(), 400);
    for out in run_all("DEL") {
        out.assert_success();
    }
    assert_eq!(
        data.names("hlnet"),
        ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]
    );
    // The round robin carries on from the last address handed out.
    assert_eq!(hl.add("after", &conf), ["10.60.0.202/24", "fd60::ca/64"]);
}

// ------------------------------------------------------------------ safety

#[test]
fn network_names_cannot_leave_the_data_dir() {
    let hl = HostLocal::new();
    let data = DataDir::new("names");
    let inner = data.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    for name in ["../escape", "a/b", "a..b", ".."] {
        let mut conf = v4_config("1.0.0", &inner, "10.61.0.0/24");
        conf["name"] = name.into();
        for cmd in ["ADD", "DEL"] {
            let (code, _) = error_of(&hl.run(cmd, "c", &conf));
            assert_eq!(code, 7, "{name} {cmd}");
        }
    }
    assert_eq!(
        std::fs::read_dir(data.path()).unwrap().count(),
        1,
        "only inner/"
    );
    assert_eq!(std::fs::read_dir(&inner).unwrap().count(), 0);
}

#[test]
fn planted_symlinks_are_never_followed() {
    let hl = HostLocal::new();
    let data = DataDir::new("symlink");
    let conf = v4_config("1.0.0", data.path(), "10.62.0.0/24");
    let dir = data.net("hlnet");
    std::fs::create_dir_all(&dir).unwrap();
    let victim = data.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let absent = data.path().join("absent");
    std::os::unix::fs::symlink(&victim, dir.join("10.62.0.2")).unwrap();
    std::os::unix::fs::symlink(&absent, dir.join("10.62.0.3")).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("last_reserved_ip.0")).unwrap();
    // Both planted names count as taken; nothing is written through them.
    assert_eq!(hl.add("a", &conf), ["10.62.0.4/24"]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!absent.exists());
    assert!(
        !std::fs::symlink_metadata(dir.join("last_reserved_ip.0"))
            .unwrap()
            .is_symlink()
    );
    // DEL never touches them; GC unlinks the links themselves.
    hl.del("a", &conf);
    assert!(
        std::fs::symlink_metadata(dir.join("10.62.0.2"))
            .unwrap()
            .is_symlink()
    );
    let mut gc = v4_config("1.1.0", data.path(), "10.62.0.0/24");
    gc["cni.dev/valid-attachments"] = json!([]);
    hl.no_env("GC", &gc).assert_success();
    assert_eq!(data.names("hlnet"), ["last_reserved_ip.0", "lock"]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    // A symlink as the lock is refused rather than followed.
    std::fs::remove_file(dir.join("lock")).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("lock")).unwrap();
    assert_eq!(error_of(&hl.run("ADD", "b", &conf)).0, 999);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

#[test]
fn a_stale_staging_file_is_cleaned_up_and_never_counted() {
    let hl = HostLocal::new();
    let data = DataDir::new("staging");
    let conf = v4_config("1.1.0", data.path(), "10.63.0.0/24");
    hl.add("a", &conf);
    // What a crash between writing and linking leaves: never an empty reservation.
    std::fs::write(data.net("hlnet").join(".cnibox-tmp"), "b\r\neth0").unwrap();
    hl.add("b", &conf);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "eth0"}]);
    hl.no_env("GC", &gc).assert_success();
    assert_eq!(
        data.names("hlnet"),
        ["10.63.0.2", "10.63.0.3", "last_reserved_ip.0", "lock"]
    );
}

#[test]
fn changes_behind_the_index_are_seen() {
    let hl = HostLocal::new();
    let data = DataDir::new("index");
    let conf = v4_config("1.1.0", data.path(), "10.64.0.0/24");
    hl.add("a", &conf);
    // An admin (or another tool) writes and removes reservations directly. Before Linux 6.13 a
    // directory's mtime moves in clock ticks: a change within the tick of cnibox's last write
    // that leaves every last_reserved_ip.* alone would go unseen, so step past it.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let dir = data.net("hlnet");
    std::fs::write(dir.join("10.64.0.50"), "z\r\neth0").unwrap();
    std::fs::remove_file(dir.join("10.64.0.2")).unwrap();
    hl.run("CHECK", "z", &conf).assert_success();
    assert_eq!(error_of(&hl.run("CHECK", "a", &conf)).0, 999);
    hl.del("z", &conf);
    assert!(!dir.join("10.64.0.50").exists());
    // A damaged or missing index is rebuilt.
    hl.add("y", &conf);
    let index = data.path().join(".cnibox/hlnet");
    for e in std::fs::read_dir(&index).unwrap() {
        std::fs::write(e.unwrap().path(), "\u{0}garbage").unwrap();
    }
    hl.run("CHECK", "y", &conf).assert_success();
    std::fs::remove_dir_all(data.path().join(".cnibox")).unwrap();
    hl.del("y", &conf);
    assert_eq!(data.names("hlnet"), ["last_reserved_ip.0", "lock"]);
}

// ------------------------------------------------------------------ the Go reference

/// The Go host-local, or `None` (with a SKIP line) when it is not installed.
fn go() -> Option<PathBuf> {
    go_plugin("host-local")
}

fn go_call(go: &Path, cmd: &str, id: &str, conf: &Value) -> Output {
    call(go, Path::new(GO_PLUGIN_DIR), cmd, id, "eth0", conf)
}

#[test]
fn same_calls_give_the_same_addresses_and_files_as_go() {
    let Some(go) = go() else { return };
    let hl = HostLocal::new();
    let (ours, theirs) = (DataDir::new("diff-ours"), DataDir::new("diff-go"));
    let extra = json!({
        "subnet": "10.70.0.0/24", "rangeStart": "10.70.0.250",
        "ranges": [
            [{"subnet": "10.71.0.0/29"}, {"subnet": "10.72.0.0/24", "rangeEnd": "10.72.0.3", "gateway": "10.72.0.2"}],
            [{"subnet": "fd70::/64", "rangeStart": "fd70::fffe"}]
        ]
    });
    let steps: Vec<(&str, &str, Option<&str>)> = vec![
        ("ADD", "c1", None),
        ("ADD", "c2", None),
        ("ADD", "c3", None),
        ("DEL", "c2", None),
        ("ADD", "c4", Some("10.71.0.3")),
        ("ADD", "c5", None),
        ("ADD", "c6", None),
        ("ADD", "c7", None),
        ("DEL", "c1", None),
        ("ADD", "c8", None),
        ("ADD", "c8", None),
        ("DEL", "c9", None),
        ("ADD", "c9", Some("10.70.0.250")),
    ];
    for (i, (cmd, id, ip)) in steps.iter().enumerate() {
        let run = |bin: &Path, cni_path: &Path, data: &DataDir| {
            let mut conf = config("1.0.0", data.path(), extra.clone());
            if let Some(ip) = ip {
                conf["runtimeConfig"] = json!({"ips": [ip]});
            }
            call(bin, cni_path, cmd, id, "eth0", &conf)
        };
        let a = run(&hl.bin(), hl.applets.dir(), &ours);
        let b = run(&go, Path::new(GO_PLUGIN_DIR), &theirs);
        assert_eq!(
            a.success(),
            b.success(),
            "step {i} {cmd} {id}:\nours {a}\ngo {b}"
        );
        if a.success() && *cmd == "ADD" {
            assert_eq!(addresses(&a.json()), addresses(&b.json()), "step {i}");
        } else if !a.success() {
            assert_eq!(a.json()["msg"], b.json()["msg"], "step {i}");
        }
        // Byte-identical files (Debian's v1.1.1 creates them 0644, current upstream and we 0600).
        assert_eq!(
            ours.files("hlnet"),
            theirs.files("hlnet"),
            "step {i} {cmd} {id}"
        );
    }
}

#[test]
fn go_and_cnibox_take_turns_on_one_directory() {
    let Some(go) = go() else { return };
    let hl = HostLocal::new();
    let data = DataDir::new("turns");
    let conf = config(
        "1.0.0",
        data.path(),
        json!({"ranges": [[{"subnet": "10.73.0.0/24"}], [{"subnet": "fd73::/64"}]]}),
    );
    let go_add = |id: &str| {
        let out = go_call(&go, "ADD", id, &conf);
        out.assert_success();
        addresses(&out.json())
    };
    // Go, then cnibox, then Go: each gets the next addresses, never a duplicate.
    assert_eq!(go_add("g1"), ["10.73.0.2/24", "fd73::2/64"]);
    assert_eq!(hl.add("c1", &conf), ["10.73.0.3/24", "fd73::3/64"]);
    assert_eq!(go_add("g2"), ["10.73.0.4/24", "fd73::4/64"]);
    assert_eq!(hl.add("c2", &conf), ["10.73.0.5/24", "fd73::5/64"]);
    // Each refuses the other's container as a duplicate.
    assert!(
        error_of(&hl.run("ADD", "g1", &conf))
            .1
            .contains("duplicate allocation is not allowed")
    );
    let dup = go_call(&go, "ADD", "c1", &conf);
    assert!(
        dup.json()["msg"]
            .as_str()
            .unwrap()
            .contains("duplicate allocation is not allowed"),
        "{dup}"
    );
    // CHECK and DEL across: cnibox releases Go's reservations and Go releases cnibox's.
    hl.run("CHECK", "g1", &conf).assert_success();
    go_call(&go, "CHECK", "c1", &conf).assert_success();
    hl.del("g1", &conf);
    go_call(&go, "DEL", "c1", &conf).assert_success();
    let left: BTreeSet<String> = data.reservations("hlnet").into_keys().collect();
    let want: BTreeSet<String> = ["10.73.0.4", "fd73::4", "10.73.0.5", "fd73::5"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(left, want);
    // Go's DEL removed cnibox's file: cnibox must not think c1 still holds it.
    assert_eq!(error_of(&hl.run("CHECK", "c1", &conf)).0, 999);
    assert_eq!(hl.add("c1", &conf), ["10.73.0.6/24", "fd73::6/64"]);
    assert_eq!(go_add("g1"), ["10.73.0.7/24", "fd73::7/64"]);
    // Legacy ID-only files are honoured by both.
    std::fs::write(data.net("hlnet").join("10.73.0.99"), "legacy").unwrap();
    assert!(
        error_of(&hl.run("ADD", "legacy", &conf))
            .1
            .contains("10.73.0.99 has been allocated to legacy")
    );
    hl.del("legacy", &conf);
    assert!(!data.net("hlnet").join("10.73.0.99").exists());
    for id in ["g1", "g2"] {
        hl.del(id, &conf);
    }
    for id in ["c1", "c2"] {
        go_call(&go, "DEL", id, &conf).assert_success();
    }
    assert_eq!(
        data.names("hlnet"),
        ["last_reserved_ip.0", "last_reserved_ip.1", "lock"]
    );
}

#[test]
fn parallel_go_and_cnibox_never_hand_out_one_address_twice() {
    let Some(go) = go() else { return };
    let hl = HostLocal::new();
    let data = DataDir::new("mixed");
    let conf = v4_config("1.0.0", data.path(), "10.74.0.0/24");
    let handles: Vec<_> = (0..60)
        .map(|i| {
            let bin = if i % 2 == 0 { hl.bin() } else { go.clone() };
            let (path, conf) = (hl.applets.dir().to_path_buf(), conf.clone());
            std::thread::spawn(move || call(&bin, &path, "ADD", &format!("m{i}"), "eth0", &conf))
        })
        .collect();
    let mut seen = BTreeSet::new();
    for h in handles {
        let out = h.join().unwrap();
        out.assert_success();
        for ip in addresses(&out.json()) {
            assert!(seen.insert(ip.clone()), "{ip} handed out twice");
        }
    }
    assert_eq!(data.reservations("hlnet").len(), 60);
    // cnibox finds every one of them, whoever wrote it.
    for i in 0..60 {
        hl.del(&format!("m{i}"), &conf);
    }
    assert_eq!(data.names("hlnet"), ["last_reserved_ip.0", "lock"]);
}
