//! A throwaway "host" for the veth plugins (bridge, ptp, ...): a named netns in which the
//! plugin itself runs (`ip netns exec HOST <applet>` through a wrapper script), so bridges,
//! veth host ends, sysctls and firewall rules never land in the machine's own namespace; plus
//! a scratch dir for host-local's `dataDir`, and inspection helpers (`ip -j`, `bridge -j`,
//! `iptables-save`, `nft -j`, sysctls) that look inside that namespace.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::common::*;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The plugin's namespace and a scratch dir; both removed on drop.
pub struct Host {
    pub ns: Netns,
    dir: PathBuf,
}

impl Host {
    pub fn new(tag: &str) -> Host {
        let ns = Netns::new(tag);
        ns.ip(&["link", "set", "lo", "up"]);
        let dir = std::env::temp_dir().join(format!(
            "cnibox-host-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create host scratch dir");
        Host { ns, dir }
    }

    pub fn name(&self) -> &str {
        &self.ns.name
    }

    /// host-local's `dataDir` for this host.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }

    /// The reservation files host-local keeps for `network` (not `lock`/`last_reserved_ip.*`).
    pub fn reservations(&self, network: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.data_dir().join(network)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
            .collect();
        names.sort();
        names
    }

    /// A script that runs `bin` inside this host's namespace, keeping argv[0]'s basename.
    pub fn wrapper(&self, bin: &Path) -> PathBuf {
        let name = bin.file_name().expect("binary name").to_string_lossy();
        let dir = self
            .dir
            .join(format!("w{}", COUNTER.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir).expect("wrapper dir");
        let script = dir.join(name.as_ref());
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nexec ip netns exec {} {}\n",
                self.ns.name,
                bin.display()
            ),
        )
        .expect("write wrapper");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("chmod wrapper");
        script
    }

    pub fn ip_json(&self, args: &[&str]) -> Value {
        self.ns.ip_json(args)
    }

    /// A command run inside this host's namespace.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        exec_in(&self.ns.name, args)
    }

    /// `/proc/sys/<name>` as seen in this namespace.
    pub fn sysctl(&self, name: &str) -> String {
        sysctl_in(&self.ns.name, name)
    }

    /// `iptables-save -t nat` and `ip6tables-save -t nat`, without comments and counters.
    pub fn nat_rules(&self) -> String {
        nat_rules_in(&self.ns.name)
    }

    /// Every `CNI-` chain or rule in the nat tables.
    pub fn cni_nat_lines(&self) -> Vec<String> {
        self.nat_rules()
            .lines()
            .filter(|l| l.contains("CNI-"))
            .map(str::to_string)
            .collect()
    }

    /// `nft -j list ruleset` parsed; `[]` when nft is missing.
    pub fn nft_ruleset(&self) -> Value {
        let out = self.exec(&["nft", "-j", "list", "ruleset"]);
        if !out.status.success() {
            return json!([]);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        parse_json(&text)["nftables"].clone()
    }

    /// `nft list table ...` as text (`None` if the table does not exist).
    pub fn nft_table(&self, family: &str, table: &str) -> Option<String> {
        let out = self.exec(&["nft", "list", "table", family, table]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The nft rules (as `expr` JSON) of table `inet cni_plugins_masquerade` whose comment
    /// mentions `needle`.
    pub fn nft_masq_rules(&self, needle: &str) -> Vec<Value> {
        self.nft_ruleset()
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.get("rule"))
                    .filter(|r| r["table"] == "cni_plugins_masquerade")
                    .filter(|r| r["comment"].as_str().is_some_and(|c| c.contains(needle)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `bridge -j link show` entries for `dev`.
    pub fn bridge_link(&self, dev: &str) -> Value {
        let out = self.exec(&["bridge", "-j", "-d", "link", "show", "dev", dev]);
        assert!(out.status.success(), "bridge link show {dev}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let parsed = parse_json(if text.trim().is_empty() { "[]" } else { &text });
        parsed.get(0).cloned().unwrap_or(Value::Null)
    }

    /// The names of links in this host whose name starts with `prefix`.
    pub fn links_named(&self, prefix: &str) -> Vec<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .map(|links| {
                links
                    .iter()
                    .filter_map(|l| l["ifname"].as_str())
                    .filter(|n| n.starts_with(prefix))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn exec_in(ns: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("ip netns exec")
}

pub fn sysctl_in(ns: &str, name: &str) -> String {
    let out = exec_in(ns, &["cat", &format!("/proc/sys/{name}")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn nat_rules_in(ns: &str) -> String {
    let mut text = String::new();
    for tool in ["iptables-save", "ip6tables-save"] {
        let out = exec_in(ns, &[tool, "-t", "nat"]);
        text += &String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                // Chain counters `[0:0]` vary with traffic.
                match l.find(" [") {
                    Some(at) if l.starts_with(':') => &l[..at],
                    _ => l,
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        text.push('\n');
    }
    text
}

/// One plugin, run inside a [`Host`]: ours (through its applet link) or Go's.
pub struct Plugin {
    pub wrapper: PathBuf,
    pub cni_path: String,
    pub is_go: bool,
}

/// Whether our build has a host-local applet; until it does the Go one stands in (it speaks
/// spec versions up to 1.0.0 only).
pub fn have_host_local() -> bool {
    applets().iter().any(|a| a == "host-local")
}

impl Plugin {
    pub fn ours(dir: &AppletDir, host: &Host, name: &str) -> Plugin {
        let mut cni_path = dir.dir().display().to_string();
        if !have_host_local() {
            note("note: cnibox has no host-local applet yet; the Go host-local stands in");
            cni_path += &format!(":{GO_PLUGIN_DIR}");
        }
        Plugin {
            wrapper: host.wrapper(&dir.path(name)),
            cni_path,
            is_go: false,
        }
    }

    pub fn go(host: &Host, name: &str) -> Option<Plugin> {
        let bin = go_plugin(name)?;
        Some(Plugin {
            wrapper: host.wrapper(&bin),
            cni_path: GO_PLUGIN_DIR.to_string(),
            is_go: true,
        })
    }

    pub fn invocation(&self, command: &str, cid: &str, netns: &str, ifname: &str) -> Invocation {
        Invocation::new(&self.wrapper)
            .command(command)
            .container_id(cid)
            .netns(netns)
            .ifname(ifname)
            .cni_path(&self.cni_path)
            .timeout(Duration::from_secs(60))
    }

    pub fn run(&self, command: &str, cid: &str, netns: &str, ifname: &str, conf: &Value) -> Output {
        self.invocation(command, cid, netns, ifname)
            .config(conf)
            .run()
    }

    /// `command` (CHECK, DEL) of attachment `cid` with its ADD result `result` as
    /// prevResult, asserting success.
    pub fn run_with_prev(
        &self,
        command: &str,
        (cid, netns, ifname): (&str, &str, &str),
        conf: &Value,
        result: &Value,
    ) {
        self.run(command, cid, netns, ifname, &with_prev(conf, result))
            .assert_success();
    }

    /// CHECK, then DEL, of attachment `cid` with its ADD result `result` as prevResult, both
    /// asserted to succeed.
    pub fn check_and_del(&self, at: (&str, &str, &str), conf: &Value, result: &Value) {
        self.run_with_prev("CHECK", at, conf, result);
        self.run_with_prev("DEL", at, conf, result);
    }

    /// Go's plugin when `go` (None if it is not installed), else ours.
    pub fn pick(go: bool, dir: &AppletDir, host: &Host, name: &str) -> Option<Plugin> {
        if go {
            Plugin::go(host, name)
        } else {
            Some(Plugin::ours(dir, host, name))
        }
    }

    /// A verb about no container (GC, STATUS).
    pub fn run_verb(&self, command: &str, conf: &Value) -> Output {
        Invocation::new(&self.wrapper)
            .command(command)
            .cni_path(&self.cni_path)
            .timeout(Duration::from_secs(60))
            .config(conf)
            .run()
    }
}

/// Whether masquerade state for `network`/`cid` exists in `host`: (iptables, nftables).
pub fn masq_present(host: &Host, network: &str, cid: &str) -> (bool, bool) {
    // iptables-save escapes the quotes inside the comment.
    let needle = format!(r#"name: \"{network}\" id: \"{cid}\""#);
    let ipt = host.nat_rules().lines().any(|l| l.contains(&needle));
    let nft = !host.nft_masq_rules(&format!("id: {cid}")).is_empty();
    (ipt, nft)
}

/// What a DEL finds already gone: the teardown matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    Nothing,
    /// The namespace was deleted.
    Netns,
    /// `CNI_NETNS` is empty (containerd sends it so once the sandbox is gone).
    EmptyNetnsVar,
    /// The container interface was deleted.
    Link,
}

impl Gone {
    pub const ALL: [Gone; 4] = [Gone::Nothing, Gone::Netns, Gone::EmptyNetnsVar, Gone::Link];

    /// Makes it so for container `ctr` and its interface `ifname`; returns the `CNI_NETNS` a
    /// DEL then gets, and the namespace unless it was deleted.
    pub fn apply(self, ctr: Netns, ifname: &str) -> (String, Option<Netns>) {
        let path = ctr.path_str().to_string();
        match self {
            Gone::Nothing => (path, Some(ctr)),
            Gone::Netns => (path, None),
            Gone::EmptyNetnsVar => (String::new(), Some(ctr)),
            Gone::Link => {
                ctr.ip(&["link", "del", ifname]);
                (path, Some(ctr))
            }
        }
    }
}

/// Takes away what `gone` says from container `ctr` (interface `eth0`), then DELs attachment
/// `cid` `times` times with the ADD's `result` as `prevResult`; every DEL must succeed.
pub fn del_when_gone(
    plugin: &Plugin,
    conf: &Value,
    cid: &str,
    ctr: Netns,
    result: &Value,
    gone: Gone,
    times: usize,
) {
    let (netns, _ctr) = gone.apply(ctr, "eth0");
    let del_conf = with_prev(conf, result);
    for attempt in 0..times {
        let del = plugin.run("DEL", cid, &netns, "eth0", &del_conf);
        assert!(del.success(), "{gone:?} DEL #{attempt}: {del}");
    }
}

/// `conf` with `prevResult` set, for CHECK and DEL.
pub fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

/// Replaces what differs between runs (random veth names, MACs, sandbox paths) so that two
/// results of the same config compare equal.
pub fn normalise(result: &Value) -> Value {
    match result {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("mac", Value::String(_)) => json!("MAC"),
                        ("sandbox", Value::String(_)) => json!("SANDBOX"),
                        ("name", Value::String(s)) if is_random_veth(s) => json!("vethXXXXXXXX"),
                        _ => normalise(v),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalise).collect()),
        other => other.clone(),
    }
}

pub fn is_random_veth(name: &str) -> bool {
    name.len() == 12 && name.starts_with("veth") && name[4..].chars().all(|c| c.is_ascii_hexdigit())
}

/// Pings `target` from namespace `ns` (busybox ping; ping6 for IPv6), retrying for a while so
/// that IPv6 duplicate address detection and neighbour discovery can finish.
pub fn ping(ns: &str, target: &str) -> bool {
    let tool = if target.contains(':') {
        "ping6"
    } else {
        "ping"
    };
    for _ in 0..20 {
        let out = exec_in(ns, &["busybox", tool, "-c", "1", "-W", "1", target]);
        if out.status.success() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

/// Addresses of `dev` in `ns` as `addr/prefix` strings, without link-local ones.
pub fn addresses(ns: &str, dev: &str) -> Vec<String> {
    let v = ip_json(ns, &["addr", "show", "dev", dev]);
    let mut out = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if a["scope"] == "link" {
                continue;
            }
            out.push(format!(
                "{}/{}",
                a["local"].as_str().unwrap_or(""),
                a["prefixlen"]
            ));
        }
    }
    out.sort();
    out
}

/// [`routes`] once they are `want`, or as they are after two seconds: the kernel adds the
/// IPv6 link-local route only when it has seen the link come up, which may be a moment after
/// a plugin that does not wait for it has returned.
pub fn routes_settled(ns: &str, want: &[&str]) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let got = routes(ns);
        if got == want || std::time::Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Routes of `ns` (both families, main table) as `ip route` would print them, sorted,
/// with link names replaced by `DEV` when they are random veth names.
pub fn routes(ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    for family in ["-4", "-6"] {
        let v = ip_json(ns, &[family, "route", "show", "table", "main"]);
        for r in v.as_array().into_iter().flatten() {
            let dev = r["dev"].as_str().unwrap_or("");
            let dev = if is_random_veth(dev) { "vethX" } else { dev };
            let mut line = format!("{} dev {dev}", r["dst"].as_str().unwrap_or(""));
            if let Some(gw) = r["gateway"].as_str() {
                line += &format!(" via {gw}");
            }
            if let Some(scope) = r["scope"].as_str() {
                line += &format!(" scope {scope}");
            }
            if let Some(src) = r["prefsrc"].as_str() {
                line += &format!(" src {src}");
            }
            if let Some(proto) = r["protocol"].as_str() {
                line += &format!(" proto {proto}");
            }
            if let Some(metric) = r["metric"].as_u64() {
                line += &format!(" metric {metric}");
            }
            out.push(line);
        }
    }
    out.sort();
    out
}

/// The addresses of a result's `ips`, without the prefix length.
pub fn result_addresses(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .map(|ips| {
            ips.iter()
                .filter_map(|i| i["address"].as_str())
                .map(|a| a.split('/').next().unwrap_or(a).to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Two containers on one dual-stack network, `ctr-a` (`eth0`) and `ctr-b` (`net1`): ADDs
/// both and expects `addrs` (a's, then b's), IPv6 enabled with `keep_addr_on_down` in the
/// container, IPv6 forwarding on the host, each container reaching the other's addresses and
/// every one of `gateways`. `more` checks what is particular to the plugin (it gets a's
/// result and namespace); then CHECK and DEL both, leaving no veth in `host`.
pub fn dual_stack_pair(
    plugin: &Plugin,
    host: &Host,
    conf: &Value,
    addrs: [[&str; 2]; 2],
    gateways: &[&str],
    more: impl FnOnce(&Value, &Netns),
) {
    let a = Netns::new("pair-a");
    let b = Netns::new("pair-b");
    let attachments = [(&a, "ctr-a", "eth0"), (&b, "ctr-b", "net1")];
    let results: Vec<Value> = attachments
        .iter()
        .map(|(ns, cid, ifname)| {
            let add = plugin.run("ADD", cid, ns.path_str(), ifname, conf);
            add.assert_success();
            add.json()
        })
        .collect();
    assert_eq!(result_addresses(&results[0]), addrs[0]);
    assert_eq!(result_addresses(&results[1]), addrs[1]);
    assert_eq!(host.sysctl("net/ipv6/conf/all/forwarding"), "1");
    assert_eq!(
        sysctl_in(&a.name, "net/ipv6/conf/eth0/keep_addr_on_down"),
        "1"
    );
    assert_eq!(sysctl_in(&a.name, "net/ipv6/conf/eth0/disable_ipv6"), "0");
    for (from, to) in [(&a, addrs[1]), (&b, addrs[0])] {
        for target in to.iter().chain(gateways) {
            assert!(
                ping(&from.name, target),
                "{} cannot reach {target}",
                from.name
            );
        }
    }
    more(&results[0], &a);
    for ((ns, cid, ifname), result) in attachments.iter().zip(&results) {
        plugin
            .run(
                "CHECK",
                cid,
                ns.path_str(),
                ifname,
                &with_prev(conf, result),
            )
            .assert_success();
        plugin
            .run("DEL", cid, ns.path_str(), ifname, conf)
            .assert_success();
    }
    assert!(host.links_named("veth").is_empty());
}

/// The `name` of a network config.
fn network_of(conf: &Value) -> &str {
    conf["name"].as_str().expect("network name")
}

/// ADD of `ctr-mq` with `conf` (`ipMasq` on the `ipMasqBackend` iptables or nftables) adds
/// the masquerade rules, the iptables ones containing each of `rules`; DEL removes them all.
pub fn masq_follows_add_and_del(
    plugin: &Plugin,
    host: &Host,
    ctr: &Netns,
    conf: &Value,
    rules: &[&str],
) {
    let backend = conf["ipMasqBackend"].as_str().expect("ipMasqBackend");
    let network = network_of(conf);
    plugin
        .run("ADD", "ctr-mq", ctr.path_str(), "eth0", conf)
        .assert_success();
    let want = (backend == "iptables", backend == "nftables");
    assert_eq!(masq_present(host, network, "ctr-mq"), want, "{backend}");
    if backend == "iptables" {
        let nat = host.nat_rules();
        for rule in rules {
            assert!(nat.contains(rule), "{rule:?} not in {nat}");
        }
    } else {
        assert_eq!(host.nft_masq_rules("id: ctr-mq").len(), 2);
    }
    plugin
        .run("DEL", "ctr-mq", ctr.path_str(), "eth0", conf)
        .assert_success();
    assert_eq!(masq_present(host, network, "ctr-mq"), (false, false));
    assert!(
        host.cni_nat_lines().is_empty(),
        "{:?}",
        host.cni_nat_lines()
    );
}

/// With `conf` (`ipMasq` on the `ipMasqBackend`) at spec 1.1.0: ADD of `ctr-keep` and
/// `ctr-stale` (in namespaces `<tag>a`, `<tag>b`), then GC listing only `ctr-keep` leaves its
/// masquerade rules and its reservations `kept`, and drops the other's; STATUS succeeds.
pub fn gc_drops_masquerade_of_unlisted(
    plugin: &Plugin,
    host: &Host,
    tag: &str,
    conf: &Value,
    kept: &[&str],
) {
    let backend = conf["ipMasqBackend"].as_str().expect("ipMasqBackend");
    let network = network_of(conf);
    let (a, b) = (
        Netns::new(&format!("{tag}a")),
        Netns::new(&format!("{tag}b")),
    );
    let mut conf = conf.clone();
    conf["cniVersion"] = json!("1.1.0");
    plugin
        .run("ADD", "ctr-keep", a.path_str(), "eth0", &conf)
        .assert_success();
    plugin
        .run("ADD", "ctr-stale", b.path_str(), "eth0", &conf)
        .assert_success();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-keep", "ifname": "eth0"}]);
    plugin.run_verb("GC", &gc).assert_success();
    let on = (backend == "iptables", backend == "nftables");
    assert_eq!(masq_present(host, network, "ctr-keep"), on, "{backend}");
    assert_eq!(
        masq_present(host, network, "ctr-stale"),
        (false, false),
        "{backend}"
    );
    assert_eq!(host.reservations(network), kept, "{backend}");
    plugin.run_verb("STATUS", &conf).assert_success();
}

/// DEL of `ctr-v` (a veth plugin's `eth0` in `ctr`) succeeds with no output and leaves no veth
/// in `host`, only `lo` in `ctr` and no reservation of the network.
pub fn del_leaves_no_veth(plugin: &Plugin, host: &Host, ctr: &Netns, conf: &Value) {
    let del = plugin.run("DEL", "ctr-v", ctr.path_str(), "eth0", conf);
    del.assert_success();
    assert!(del.stdout.is_empty(), "{del}");
    assert!(host.links_named("veth").is_empty());
    assert_eq!(
        ip_json(&ctr.name, &["link", "show"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(host.reservations(network_of(conf)), Vec::<String>::new());
}
