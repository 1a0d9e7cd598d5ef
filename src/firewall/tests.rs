//! Tests of the masquerade layer. Those touching netfilter run as root inside throwaway
//! namespaces (`cnbt-fw-*`), never in the machine's own.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use super::*;
use crate::netns::NetNs;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique(kind: &str) -> String {
    format!(
        "cnbt-fw-{kind}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A namespace made with `ip netns add`, deleted on drop even when the test fails.
struct TestNs {
    name: String,
}

impl TestNs {
    fn new() -> TestNs {
        let name = unique("");
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(status.success(), "ip netns add {name}");
        TestNs { name }
    }

    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `f` inside this namespace.
    fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        NetNs::open(self.path()).unwrap().run(f).unwrap()
    }

    fn exec(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?} in {}: {out:?}", self.name);
        String::from_utf8(out.stdout).unwrap()
    }

    /// `iptables-save -t nat` or `ip6tables-save -t nat`, without comments and counters.
    fn nat(&self, v6: bool) -> String {
        let save = if v6 {
            "ip6tables-save"
        } else {
            "iptables-save"
        };
        self.exec(&[save, "-t", "nat"])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// Every rule of our nftables table as (chain, comment, expr), and its chains.
    fn nft(&self) -> (Vec<(String, String, Value)>, Vec<Value>) {
        let ruleset: Value = serde_json::from_str(&self.exec(&["nft", "-j", "list", "ruleset"]))
            .expect("nft -j output is JSON");
        let ours = |o: &Value| o["family"] == "inet" && o["table"] == "cni_plugins_masquerade";
        let mut rules = Vec::new();
        let mut chains = Vec::new();
        for item in ruleset["nftables"].as_array().unwrap() {
            if let Some(rule) = item.get("rule").filter(|r| ours(r)) {
                rules.push((
                    rule["chain"].as_str().unwrap().to_string(),
                    rule["comment"].as_str().unwrap_or_default().to_string(),
                    rule["expr"].clone(),
                ));
            }
            if let Some(chain) = item.get("chain").filter(|c| ours(c)) {
                chains.push(chain.clone());
            }
        }
        (rules, chains)
    }

    fn masq_rules(&self) -> Vec<(String, Value)> {
        self.nft()
            .0
            .into_iter()
            .filter(|(chain, _, _)| chain == "masq_checks")
            .map(|(_, comment, expr)| (comment, expr))
            .collect()
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(unique("dir"));
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn net(text: &str) -> IpNetwork {
    text.parse().unwrap()
}

/// SHA-512 hex from coreutils, independent of ours.
fn coreutils_sha512(text: &str) -> String {
    let out = run_with_stdin(&mut Command::new("sha512sum"), text);
    String::from_utf8(out.stdout).unwrap()[..128].to_string()
}

/// Runs `command` with `input` on its stdin and collects its output.
fn run_with_stdin(command: &mut Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn expected_chain(network: &str, cid: &str) -> String {
    format!(
        "CNI-{}",
        &coreutils_sha512(&format!("{network}{cid}"))[..24]
    )
}

fn expected_nft_comment(network: &str, ifname: &str, cid: &str) -> String {
    format!(
        "{}-{}, net: {network}, if: {ifname}, id: {cid}",
        &coreutils_sha512(network)[..16],
        &coreutils_sha512(&format!("{ifname}:{cid}"))[..16]
    )
}

/// The lines iptables-save shows for one attachment and address.
fn expected_iptables(network: &str, cid: &str, ip: &str, subnet: &str, v6: bool) -> [String; 4] {
    let chain = expected_chain(network, cid);
    let comment = format!(r#"-m comment --comment "name: \"{network}\" id: \"{cid}\"""#);
    let (host, multicast) = if v6 {
        ("128", "ff00::/8")
    } else {
        ("32", "224.0.0.0/4")
    };
    [
        format!(":{chain} - [0:0]"),
        format!("-A POSTROUTING -s {ip}/{host} {comment} -j {chain}"),
        format!("-A {chain} -d {subnet} {comment} -j ACCEPT"),
        format!("-A {chain} ! -d {multicast} {comment} -j MASQUERADE"),
    ]
}

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

fn assert_lines(text: &str, lines: &[String]) {
    for line in lines {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line:?} in:\n{text}"
        );
    }
}

/// No CNI chain, no jump: the nat table as a fresh namespace has it.
fn assert_nat_clean(ns: &TestNs) {
    for v6 in [false, true] {
        let nat = ns.nat(v6);
        assert_eq!(count(&nat, "CNI-"), 0, "leftover iptables state:\n{nat}");
    }
}

fn masq_expr(ip: &str, subnet_addr: &str, len: u8) -> Value {
    let family = if ip.contains(':') { "ip6" } else { "ip" };
    json!([
        {"match": {"op": "==", "left": {"payload": {"protocol": family, "field": "saddr"}}, "right": ip}},
        {"match": {"op": "!=", "left": {"payload": {"protocol": family, "field": "daddr"}},
                   "right": {"prefix": {"addr": subnet_addr, "len": len}}}},
        {"masquerade": null}
    ])
}

// ---------------------------------------------------------------------------------------------
// Names, quoting, parsing: no privileges needed.

#[test]
fn fw_names_match_the_reference() {
    // pkg/utils/utils_test.go and pkg/ip/ipmasq_nftables_linux_test.go of the reference.
    assert_eq!(
        iptables::chain_name("test", "1234"),
        "CNI-2bbe0c48b91a7d1b8a6753a8"
    );
    assert_eq!(
        iptables::chain_name("testalongnamethatdoesnotmakesense", "1234"),
        "CNI-374f33fe84ab0ed84dcdebe3"
    );
    assert_eq!(
        iptables::comment("net1", "abc"),
        r#"name: "net1" id: "abc""#
    );
    assert_eq!(
        nftables::comment_for_instance("unit-test", "eth0", "one"),
        "6fd94d501e58f0aa-287fc69eff0574a2, net: unit-test, if: eth0, id: one"
    );
    assert_eq!(
        nftables::comment_for_instance("alternate", "net1", "three"),
        "82783ef24bdc7036-acb19d111858e348, net: alternate, if: net1, id: three"
    );
    // Quotes are dropped and the comment is cut at knftables' 128 bytes.
    let long_id = "c".repeat(200);
    let comment = nftables::comment_for_instance("n\"et", "eth0", &long_id);
    assert_eq!(comment.len(), 128);
    assert!(
        comment.contains(", net: net, if: eth0, id: ccc"),
        "{comment}"
    );
}

#[test]
fn fw_go_quote_matches_go_percent_q() {
    assert_eq!(go_quote("plain-1.2_x"), r#""plain-1.2_x""#);
    assert_eq!(go_quote(r#"a"b\c"#), r#""a\"b\\c""#);
    assert_eq!(go_quote("t\ta\n\x01\x7f"), r#""t\ta\n\x01\x7f""#);
    assert_eq!(go_quote("é"), "\"é\"");
}

#[test]
fn fw_nft_batch_is_knftables_text() {
    // The lines of the reference's unit test for its container "two", in transaction order.
    let batch = nftables::setup_batch(
        &[7],
        "6fd94d501e58f0aa-d750b2c8f0f25d5f, net: unit-test, if: eth0, id: two",
        &[net("192.168.1.2/24"), net("2001:db8::2/64")],
        true,
    );
    let expected = r#"add table inet cni_plugins_masquerade { comment "Masquerading for plugins from github.com/containernetworking/plugins" ; }
add chain inet cni_plugins_masquerade masq_checks { comment "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet" ; }
add chain inet cni_plugins_masquerade postrouting { type nat hook postrouting priority 100 ; }
flush chain inet cni_plugins_masquerade postrouting
add rule inet cni_plugins_masquerade postrouting ip daddr == 224.0.0.0/4  return
add rule inet cni_plugins_masquerade postrouting ip6 daddr == ff00::/8  return
add rule inet cni_plugins_masquerade postrouting goto masq_checks
delete rule inet cni_plugins_masquerade masq_checks handle 7
add rule inet cni_plugins_masquerade masq_checks ip saddr == 192.168.1.2 ip daddr != 192.168.1.0/24 masquerade comment "6fd94d501e58f0aa-d750b2c8f0f25d5f, net: unit-test, if: eth0, id: two"
add rule inet cni_plugins_masquerade masq_checks ip6 saddr == 2001:db8::2 ip6 daddr != 2001:db8::/64 masquerade comment "6fd94d501e58f0aa-d750b2c8f0f25d5f, net: unit-test, if: eth0, id: two"
"#;
    assert_eq!(batch, expected);
    let plain = nftables::setup_batch(&[], "c", &[], false);
    assert!(plain.starts_with(
        "add table inet cni_plugins_masquerade\nadd chain inet cni_plugins_masquerade masq_checks\n"
    ));
}

#[test]
fn fw_iptables_listing_parse() {
    let line = r#"-A POSTROUTING -s 10.0.0.2/32 -m comment --comment "name: \"net1\" id: \"c\\\\d\"" -j CNI-abc"#;
    let words = iptables::split_rule(line);
    assert_eq!(
        words,
        [
            "-A",
            "POSTROUTING",
            "-s",
            "10.0.0.2/32",
            "-m",
            "comment",
            "--comment",
            r#"name: "net1" id: "c\\d""#,
            "-j",
            "CNI-abc"
        ]
    );
    assert_eq!(
        iptables::container_id_of(&words, "net1").as_deref(),
        Some(r"c\d")
    );
    assert_eq!(iptables::container_id_of(&words, "net"), None);
    assert_eq!(
        iptables::split_rule(r#"-A X --comment """#),
        ["-A", "X", "--comment", ""]
    );
}

// ---------------------------------------------------------------------------------------------
// Backend choice with stub binaries in fake PATH directories.

/// A directory of stub binaries; each logs its arguments and exits with the given status.
struct StubDir {
    dir: TempDir,
}

impl StubDir {
    fn new(stubs: &[(&str, i32)]) -> StubDir {
        let dir = TempDir::new();
        for (name, status) in stubs {
            let path = dir.0.join(name);
            let log = dir.0.join("calls.log");
            fs::write(
                &path,
                format!(
                    "#!/bin/sh\necho \"{name} $*\" >> {}\nexit {status}\n",
                    log.display()
                ),
            )
            .unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        StubDir { dir }
    }

    fn tools(&self) -> Tools {
        Tools::find_in(std::slice::from_ref(&self.dir.0))
    }

    fn calls(&self) -> String {
        fs::read_to_string(self.dir.0.join("calls.log")).unwrap_or_default()
    }
}

fn auto(stubs: &[(&str, i32)]) -> (MasqBackend, String) {
    let dir = StubDir::new(stubs);
    let backend = choose_backend_with(None, &dir.tools()).unwrap();
    (backend, dir.calls())
}

#[test]
fn fw_backend_explicit_and_invalid() {
    let none = Tools::default();
    assert_eq!(
        choose_backend_with(Some("iptables"), &none).unwrap(),
        MasqBackend::Iptables
    );
    assert_eq!(
        choose_backend_with(Some("nftables"), &none).unwrap(),
        MasqBackend::Nftables
    );
    let err = choose_backend_with(Some("ebtables"), &none).unwrap_err();
    assert_eq!(err.code, crate::cni::code::INVALID_CONFIG);
    assert_eq!(err.msg, r#"unknown ipmasq backend "ebtables""#);
}

#[test]
fn fw_backend_auto_detection() {
    use MasqBackend::*;
    // Usable iptables wins; the probe is the reference's, with --wait.
    let (backend, calls) = auto(&[("iptables", 0), ("nft", 0)]);
    assert_eq!(backend, Iptables);
    assert_eq!(calls, "iptables -t filter -S INPUT 1 --wait\n");
    // Unusable iptables, usable nft.
    let (backend, calls) = auto(&[("iptables", 1), ("nft", 0)]);
    assert_eq!(backend, Nftables);
    assert_eq!(
        calls,
        "iptables -t filter -S INPUT 1 --wait\nnft --check -f -\n"
    );
    // Neither usable: iptables, as the reference.
    assert_eq!(auto(&[("iptables", 1), ("nft", 1)]).0, Iptables);
    assert_eq!(auto(&[("iptables", 1)]).0, Iptables);
    // No iptables binary but nft (upstream issue 1280): nftables, without probing.
    let (backend, calls) = auto(&[("nft", 1)]);
    assert_eq!(backend, Nftables);
    assert_eq!(calls, "");
    // Nothing at all: iptables, whose setup then names the missing binary.
    assert_eq!(auto(&[]).0, Iptables);
}

#[test]
fn fw_binary_lookup() {
    let stubs = StubDir::new(&[("iptables", 0), ("nft", 0)]);
    // Not executable: not found, like exec.LookPath.
    fs::set_permissions(stubs.dir.0.join("nft"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::create_dir(stubs.dir.0.join("ip6tables")).unwrap();
    let tools = stubs.tools();
    assert_eq!(tools.iptables, Some(stubs.dir.0.join("iptables")));
    assert_eq!(tools.nft, None);
    assert_eq!(tools.ip6tables, None, "a directory is not a binary");

    // Empty or missing PATH still searches the usual directories; relative entries are ignored.
    let fallback: Vec<PathBuf> = FALLBACK_DIRS.iter().map(PathBuf::from).collect();
    assert_eq!(search_dirs(None), fallback);
    assert_eq!(search_dirs(Some("".into())), fallback);
    assert_eq!(
        search_dirs(Some("/opt/x:rel:/sbin".into())),
        ["/opt/x", "/sbin", "/usr/sbin", "/usr/bin", "/bin"]
            .map(PathBuf::from)
            .to_vec()
    );
    // The first directory wins.
    let other = StubDir::new(&[("iptables", 0)]);
    let found = Tools::find_in(&[other.dir.0.clone(), stubs.dir.0.clone()]);
    assert_eq!(found.iptables, Some(other.dir.0.join("iptables")));
}

#[test]
fn fw_missing_binaries() {
    let none = Tools::default();
    // Teardown and GC skip a backend whose binary is absent.
    teardown_with(&none, "n", "eth0", "c", &[]).unwrap();
    teardown_with(&none, "n", "eth0", "c", &[net("10.0.0.2/24")]).unwrap();
    gc_with(&none, "n", &[]).unwrap();
    // Setup names what is missing.
    let err = iptables::setup(&none, "n", "c", &[net("fd00::2/64")]).unwrap_err();
    assert!(err.msg.starts_with("ip6tables not found in PATH"), "{err}");
}

/// Writes an executable shell script.
fn script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn fw_teardown_reports_every_failure_of_usable_backends() {
    let dir = TempDir::new();
    let (ipt, nft) = (dir.0.join("iptables"), dir.0.join("nft"));
    // Probes pass, everything else fails loudly.
    script(
        &ipt,
        r#"[ "$2 $3 $4" = "filter -S INPUT" ] && exit 0; echo "ipt broke: $*" >&2; exit 4"#,
    );
    script(
        &nft,
        r#"[ "$1" = "--check" ] && exit 0; echo "nft broke: $*" >&2; exit 1"#,
    );
    let tools = Tools {
        iptables: Some(ipt.clone()),
        ip6tables: None,
        nft: Some(nft.clone()),
    };
    let err = teardown_with(&tools, "n", "eth0", "c", &[net("10.0.0.2/24")]).unwrap_err();
    assert_eq!(err.code, crate::cni::code::INTERNAL);
    // Listing POSTROUTING and flushing the chain both failed, and nft's listing too: all
    // reported, none stopped the others.
    assert!(
        err.msg
            .starts_with("failed to tear down IP masquerading: 3 errors:"),
        "{err}"
    );
    assert!(
        err.msg.contains("ipt broke: -t nat -S POSTROUTING --wait"),
        "{err}"
    );
    assert!(err.msg.contains("ipt broke: -t nat -F CNI-"), "{err}");
    assert!(
        err.msg
            .contains("nft broke: -j list chain inet cni_plugins_masquerade masq_checks"),
        "{err}"
    );
    let err = gc_with(&tools, "n", &[]).unwrap_err();
    assert!(err.msg.contains("ipt broke: -t nat -S --wait"), "{err}");

    // Backends that fail their probe too are not usable here: their failures are dropped.
    script(
        &ipt,
        r#"echo "can't initialize iptables table" >&2; exit 3"#,
    );
    script(&nft, r#"echo "Operation not permitted" >&2; exit 1"#);
    teardown_with(&tools, "n", "eth0", "c", &[]).unwrap();
    gc_with(&tools, "n", &[]).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Against the real iptables and nft, in throwaway namespaces.

fn iptables_bin() -> PathBuf {
    Tools::find().iptables.expect("iptables installed")
}

const NETWORK: &str = "fwnet";
const DUAL: [&str; 2] = ["10.88.0.5/24", "fd88::5/64"];

fn dual() -> Vec<IpNetwork> {
    DUAL.iter().map(|s| net(s)).collect()
}

fn iptables_expected_dual(cid: &str) -> Vec<String> {
    let mut lines = expected_iptables(NETWORK, cid, "10.88.0.5", "10.88.0.0/24", false).to_vec();
    lines.extend(expected_iptables(
        NETWORK,
        cid,
        "fd88::5",
        "fd88::/64",
        true,
    ));
    lines
}

fn assert_iptables_dual(ns: &TestNs, cid: &str) {
    let expected = iptables_expected_dual(cid);
    let chain = expected_chain(NETWORK, cid);
    for (v6, lines) in [(false, &expected[..4]), (true, &expected[4..])] {
        let nat = ns.nat(v6);
        assert_lines(&nat, lines);
        assert_eq!(count(&nat, &chain), 4, "duplicates or extras:\n{nat}");
    }
}

/// ADD of `ctr-a` on `ips` twice, then of `ctr-b` on `other`.
fn setup_a_twice_then_b(ns: &TestNs, backend: MasqBackend, ips: &[IpNetwork], other: &[IpNetwork]) {
    ns.run(|| {
        setup_ip_masq(backend, NETWORK, "eth0", "ctr-a", ips).unwrap();
        setup_ip_masq(backend, NETWORK, "eth0", "ctr-a", ips).unwrap();
        setup_ip_masq(backend, NETWORK, "eth0", "ctr-b", other).unwrap();
    });
}

#[test]
fn fw_iptables_setup_teardown_dual_stack() {
    let ns = TestNs::new();
    let ips = dual();
    let other = [net("10.88.0.6/24")];
    // Idempotent: a second ADD adds nothing.
    setup_a_twice_then_b(&ns, MasqBackend::Iptables, &ips, &other);
    assert_iptables_dual(&ns, "ctr-a");
    ns.run(|| teardown_ip_masq(NETWORK, "eth0", "ctr-a", &ips))
        .unwrap();
    let chain_a = expected_chain(NETWORK, "ctr-a");
    for v6 in [false, true] {
        assert_eq!(count(&ns.nat(v6), &chain_a), 0, "{}", ns.nat(v6));
    }
    // The other container is untouched.
    let b = expected_iptables(NETWORK, "ctr-b", "10.88.0.6", "10.88.0.0/24", false);
    assert_lines(&ns.nat(false), &b);
    // Repeated DEL succeeds, and so does one with the other family only.
    ns.run(|| teardown_ip_masq(NETWORK, "eth0", "ctr-a", &ips))
        .unwrap();
    ns.run(|| teardown_ip_masq(NETWORK, "eth0", "ctr-a", &[]))
        .unwrap();
    ns.run(|| teardown_ip_masq(NETWORK, "eth0", "ctr-b", &other))
        .unwrap();
    assert_nat_clean(&ns);
}

#[test]
fn fw_iptables_teardown_without_addresses() {
    let ns = TestNs::new();
    let ips = dual();
    ns.run(|| {
        setup_ip_masq(MasqBackend::Iptables, NETWORK, "eth0", "ctr-e", &ips).unwrap();
        // A legacy jump by subnet (old plugin versions) goes too.
        let chain = iptables::chain_name(NETWORK, "ctr-e");
        let comment = iptables::comment(NETWORK, "ctr-e");
        run(
            &iptables_bin(),
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                "10.88.0.0/24",
                "-j",
                &chain,
                "-m",
                "comment",
                "--comment",
                &comment,
                "--wait",
            ],
            None,
        )
        .unwrap();
    });
    let nat = ns.nat(false);
    assert_eq!(
        count(&nat, "-A POSTROUTING"),
        2,
        "legacy jump missing:\n{nat}"
    );
    ns.run(|| teardown_ip_masq(NETWORK, "eth0", "ctr-e", &[]))
        .unwrap();
    assert_nat_clean(&ns);
    ns.run(|| teardown_ip_masq(NETWORK, "eth0", "ctr-e", &[]))
        .unwrap();
}

#[test]
fn fw_nftables_setup_teardown_dual_stack() {
    let ns = TestNs::new();
    let ips = dual();
    let other = [net("10.88.0.6/24")];
    // A second ADD replaces the instance's rules instead of adding more.
    setup_a_twice_then_b(&ns, MasqBackend::Nftables, &ips, &other);
    let (rules, chains) = ns.nft();
    let comment_a = expected_nft_comment(NETWORK, "eth0", "ctr-a");
    let comment_b = expected_nft_comment(NETWORK, "eth0", "ctr-b");
    let masq: Vec<(String, Value)> = rules
        .iter()
        .filter(|(chain, _, _)| chain == "masq_checks")
        .map(|(_, c, e)| (c.clone(), e.clone()))
        .collect();
    assert_eq!(
        masq,
        [
            (comment_a.clone(), masq_expr("10.88.0.5", "10.88.0.0", 24)),
            (comment_a.clone(), masq_expr("fd88::5", "fd88::", 64)),
            (comment_b.clone(), masq_expr("10.88.0.6", "10.88.0.0", 24)),
        ]
    );
    let postrouting: Vec<&Value> = rules
        .iter()
        .filter(|(chain, _, _)| chain == "postrouting")
        .map(|(_, _, e)| e)
        .collect();
    assert_eq!(
        postrouting,
        [
            &json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                               "right": {"prefix": {"addr": "224.0.0.0", "len": 4}}}}, {"return": null}]),
            &json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                               "right": {"prefix": {"addr": "ff00::", "len": 8}}}}, {"return": null}]),
            &json!([{"goto": {"target": "masq_checks"}}]),
        ]
    );
    let base = chains.iter().find(|c| c["name"] == "postrouting").unwrap();
    assert_eq!(
        (&base["type"], &base["hook"], &base["prio"]),
        (&json!("nat"), &json!("postrouting"), &json!(100))
    );
    let table = ns.exec(&["nft", "list", "table", "inet", "cni_plugins_masquerade"]);
    assert!(
        table.contains(
            r#"comment "Masquerading for plugins from github.com/containernetworking/plugins""#
        ),
        "{table}"
    );

    ns.run(|| teardown_ip_masq(NETWORK, "eth0", "ctr-a", &ips))
        .unwrap();
    assert_eq!(
        ns.masq_rules(),
        [(comment_b, masq_expr("10.88.0.6", "10.88.0.0", 24))]
    );
    // Repeated DEL; DEL without addresses; a different ifname is another attachment.
    ns.run(|| teardown_ip_masq(NETWORK, "eth0", "ctr-a", &ips))
        .unwrap();
    ns.run(|| teardown_ip_masq(NETWORK, "eth1", "ctr-b", &[]))
        .unwrap();
    assert_eq!(ns.masq_rules().len(), 1);
    ns.run(|| teardown_ip_masq(NETWORK, "eth0", "ctr-b", &[]))
        .unwrap();
    assert_eq!(ns.masq_rules(), []);
    // nftables teardown never touched iptables, and vice versa.
    assert_nat_clean(&ns);
}

#[test]
fn fw_teardown_in_a_fresh_namespace() {
    // Nothing was ever set up: no table, no chain. Both backends must shrug.
    let ns = TestNs::new();
    ns.run(|| {
        teardown_ip_masq(NETWORK, "eth0", "nothing", &[]).unwrap();
        teardown_ip_masq(NETWORK, "eth0", "nothing", &dual()).unwrap();
        gc_ip_masq(NETWORK, &[]).unwrap();
    });
    assert_eq!(ns.nft().0, []);
}

#[test]
fn fw_gc_keeps_valid_attachments() {
    let ns = TestNs::new();
    let keep_ips = dual();
    let drop_ips = [net("10.88.0.7/24"), net("fd88::7/64")];
    let foreign_ips = [net("10.99.0.2/24")];
    ns.run(|| {
        for backend in [MasqBackend::Iptables, MasqBackend::Nftables] {
            setup_ip_masq(backend, NETWORK, "eth0", "keep", &keep_ips).unwrap();
            setup_ip_masq(backend, NETWORK, "eth0", "gone", &drop_ips).unwrap();
            // Same container on another network: not this GC's business.
            setup_ip_masq(backend, "othernet", "eth0", "gone", &foreign_ips).unwrap();
        }
        // A portmap-like chain with the same comment as "gone" must survive.
        let comment = iptables::comment(NETWORK, "gone");
        for args in [
            vec!["-N", "CNI-DN-fake"],
            vec![
                "-A",
                "CNI-DN-fake",
                "-p",
                "tcp",
                "-j",
                "RETURN",
                "-m",
                "comment",
                "--comment",
                &comment,
            ],
        ] {
            let mut full = vec!["-t", "nat"];
            full.extend(args);
            full.push("--wait");
            run(&iptables_bin(), &full, None).unwrap();
        }
    });
    let before_v4 = ns.nat(false);
    assert_eq!(count(&before_v4, &expected_chain(NETWORK, "gone")), 4);
    assert_eq!(ns.masq_rules().len(), 5);

    let keep = [("keep".to_string(), "eth0".to_string())];
    ns.run(|| gc_ip_masq(NETWORK, &keep)).unwrap();

    assert_iptables_dual(&ns, "keep");
    for v6 in [false, true] {
        let nat = ns.nat(v6);
        assert_eq!(count(&nat, &expected_chain(NETWORK, "gone")), 0, "{nat}");
    }
    let nat = ns.nat(false);
    assert_eq!(count(&nat, &expected_chain("othernet", "gone")), 4, "{nat}");
    assert_eq!(count(&nat, "CNI-DN-fake"), 2, "{nat}");

    let comments: Vec<String> = ns.masq_rules().into_iter().map(|(c, _)| c).collect();
    let keep_comment = expected_nft_comment(NETWORK, "eth0", "keep");
    let foreign = expected_nft_comment("othernet", "eth0", "gone");
    assert_eq!(comments, [keep_comment.clone(), keep_comment, foreign]);

    // GC with the kept container under another ifname drops its nft rules (they name the
    // ifname) but keeps its iptables chain (which does not).
    let other_if = [("keep".to_string(), "net1".to_string())];
    ns.run(|| gc_ip_masq(NETWORK, &other_if)).unwrap();
    assert_eq!(ns.masq_rules().len(), 1);
    assert_iptables_dual(&ns, "keep");
    // An empty list drops everything of the network.
    ns.run(|| gc_ip_masq(NETWORK, &[])).unwrap();
    assert_eq!(count(&ns.nat(false), &expected_chain(NETWORK, "keep")), 0);
    assert_eq!(count(&ns.nat(true), &expected_chain(NETWORK, "keep")), 0);
}

// ---------------------------------------------------------------------------------------------
// Interoperation with Debian's Go bridge (v1.1.1, iptables only).

const GO_BRIDGE: &str = "/usr/lib/cni/bridge";

fn go_conf(network: &str, data_dir: &Path, v4: &str, v6: &str) -> String {
    json!({
        "cniVersion": "1.0.0",
        "name": network,
        "type": "bridge",
        "bridge": "cnbtfw0",
        "isGateway": true,
        "ipMasq": true,
        "ipam": {
            "type": "host-local",
            "dataDir": data_dir,
            "ranges": [[{"subnet": v4}], [{"subnet": v6}]]
        }
    })
    .to_string()
}

/// Runs the Go bridge in `host` with `CNI_NETNS` = `container`.
fn go_bridge(command: &str, host: &TestNs, container: &TestNs, cid: &str, conf: &str) -> Output {
    assert!(
        Path::new(GO_BRIDGE).exists(),
        "{GO_BRIDGE} is not installed"
    );
    run_with_stdin(
        Command::new("ip")
            .args(["netns", "exec", &host.name, GO_BRIDGE])
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_NETNS", container.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/usr/lib/cni"),
        conf,
    )
}

#[test]
fn fw_our_teardown_removes_go_bridge_rules() {
    let host = TestNs::new();
    let container = TestNs::new();
    let data = TempDir::new();
    let conf = go_conf("fwgo", &data.0, "10.77.0.0/24", "fd77::/64");
    let out = go_bridge("ADD", &host, &container, "go-ctr", &conf);
    assert!(out.status.success(), "Go bridge ADD: {out:?}");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ips: Vec<String> = result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| ip["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ips.len(), 2, "{result}");
    // The Go plugin's chain has the name and rules we compute.
    let v4 = ips[0].split('/').next().unwrap();
    let v6 = ips[1].split('/').next().unwrap();
    assert_lines(
        &host.nat(false),
        &expected_iptables("fwgo", "go-ctr", v4, "10.77.0.0/24", false),
    );
    assert_lines(
        &host.nat(true),
        &expected_iptables("fwgo", "go-ctr", v6, "fd77::/64", true),
    );
    // DEL after the container namespace is gone: no addresses known.
    host.run(|| teardown_ip_masq("fwgo", "eth0", "go-ctr", &[]))
        .unwrap();
    assert_nat_clean(&host);
}

#[test]
fn fw_go_bridge_del_removes_our_rules() {
    let host = TestNs::new();
    let container = TestNs::new();
    let data = TempDir::new();
    // (No dummy driver on every kernel: a veth.) The Go DEL learns the addresses from the container's interface before deleting it.
    container.exec(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    container.exec(&["ip", "addr", "add", "10.78.0.5/24", "dev", "eth0"]);
    container.exec(&["ip", "addr", "add", "fd78::5/64", "dev", "eth0", "nodad"]);
    let ips = [net("10.78.0.5/24"), net("fd78::5/64")];
    host.run(|| setup_ip_masq(MasqBackend::Iptables, "fwgo2", "eth0", "our-ctr", &ips))
        .unwrap();
    assert_lines(
        &host.nat(false),
        &expected_iptables("fwgo2", "our-ctr", "10.78.0.5", "10.78.0.0/24", false),
    );
    let conf = go_conf("fwgo2", &data.0, "10.78.0.0/24", "fd78::/64");
    let out = go_bridge("DEL", &host, &container, "our-ctr", &conf);
    assert!(out.status.success(), "Go bridge DEL: {out:?}");
    assert_nat_clean(&host);
}
