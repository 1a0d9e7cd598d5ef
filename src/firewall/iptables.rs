//! The iptables backend, rule for rule the reference's (`SetupIPMasq`/`TeardownIPMasq` over
//! coreos/go-iptables). For an attachment with chain `CNI-<hash>` and comment
//! `name: "<net>" id: "<cid>"`, per address, in table `nat`:
//!
//! ```text
//! -A CNI-<hash> -d <subnet> -m comment --comment <c> -j ACCEPT
//! -A CNI-<hash> ! -d 224.0.0.0/4 (ff00::/8) -m comment --comment <c> -j MASQUERADE
//! -A POSTROUTING -s <address> -m comment --comment <c> -j CNI-<hash>
//! ```
//!
//! Every command gets `--wait`, as go-iptables adds it for iptables >= 1.4.20. Unlike
//! go-iptables, no `--version` probe runs first, and rules in a chain this call created are
//! appended without `-C` checks (nothing can refer to a chain that did not exist).
//!
//! Teardown lists POSTROUTING and deletes every rule jumping to the chain, whatever its
//! source (the address form and the legacy subnet form alike), then flushes and deletes the
//! chain; so it needs no addresses.

use std::path::Path;

use ipnetwork::IpNetwork;

use super::{Errors, RunError, Tools, go_quote, hash_hex, missing_binary, run};
use crate::cni::CniResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    V4,
    V6,
}

impl Family {
    pub(super) fn of(ip: &IpNetwork) -> Family {
        match ip {
            IpNetwork::V4(_) => Family::V4,
            IpNetwork::V6(_) => Family::V6,
        }
    }

    pub(super) fn command(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn multicast(self) -> &'static str {
        match self {
            Family::V4 => "224.0.0.0/4",
            Family::V6 => "ff00::/8",
        }
    }

    pub(super) fn binary(self, tools: &Tools) -> Option<&Path> {
        match self {
            Family::V4 => tools.iptables.as_deref(),
            Family::V6 => tools.ip6tables.as_deref(),
        }
    }
}

/// `CNI-` and 24 hex digits of sha512(network + containerID) (`utils.FormatChainName`).
pub(super) fn chain_name(network: &str, container_id: &str) -> String {
    chain_name_with_prefix(network, container_id, "")
}

/// `CNI-<prefix>` filled up to 28 characters with the hex sha512 of network + containerID
/// (`utils.MustFormatChainNameWithPrefix`, e.g. portmap's `CNI-DN-`).
pub(super) fn chain_name_with_prefix(network: &str, container_id: &str, prefix: &str) -> String {
    let head = format!("CNI-{prefix}");
    let hex = hash_hex(&format!("{network}{container_id}"), 28 - head.len());
    head + &hex
}

/// `name: "<net>" id: "<cid>"` (`utils.FormatComment`).
pub(super) fn comment(network: &str, container_id: &str) -> String {
    format!("name: {} id: {}", go_quote(network), go_quote(container_id))
}

/// The reference's probe: can we list a filter chain?
pub(super) fn usable(bin: &Path) -> bool {
    run(bin, &["-t", "filter", "-S", "INPUT", "1", "--wait"], None).is_ok()
}

/// One of `iptables`/`ip6tables` on one table (`nat` for masquerading).
pub(super) struct Ipt<'a> {
    pub(super) bin: &'a Path,
    pub(super) table: &'a str,
}

impl Ipt<'_> {
    pub(super) fn run(&self, args: &[&str]) -> Result<String, RunError> {
        let mut full = Vec::with_capacity(args.len() + 3);
        full.extend(["-t", self.table]);
        full.extend_from_slice(args);
        full.push("--wait");
        run(self.bin, &full, None)
    }

    /// `-C`: exit status 1 means "no such rule" (or no such chain).
    pub(super) fn exists(&self, chain: &str, spec: &[&str]) -> Result<bool, RunError> {
        let mut args = vec!["-C", chain];
        args.extend_from_slice(spec);
        match self.run(&args) {
            Ok(_) => Ok(true),
            Err(e) if e.status == Some(1) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The messages go-iptables classifies as "does not exist".
pub(super) fn is_not_exist(e: &RunError) -> bool {
    [
        "Bad rule (does a matching rule exist in that chain?)",
        "No chain/target/match by that name",
        "No such file or directory",
        "does not exist",
    ]
    .iter()
    .any(|pattern| e.message.contains(pattern))
}

pub(super) fn ipv6_available() -> bool {
    // Per network namespace, unlike /proc/net (the thread-group leader's namespace).
    Path::new("/proc/thread-self/net/if_inet6").exists()
}

pub(super) fn setup(
    tools: &Tools,
    network: &str,
    container_id: &str,
    ips: &[IpNetwork],
) -> CniResult<()> {
    let chain = chain_name(network, container_id);
    let comment = comment(network, container_id);
    for family in [Family::V4, Family::V6] {
        let addrs: Vec<&IpNetwork> = ips.iter().filter(|ip| Family::of(ip) == family).collect();
        if addrs.is_empty() {
            continue;
        }
        let bin = family
            .binary(tools)
            .ok_or_else(|| missing_binary(family.command()))?;
        let ipt = Ipt { bin, table: "nat" };
        // A chain made just now is empty and nothing jumps to it yet, so what this call
        // appended is all there is: no `-C` needed.
        let fresh = match ipt.run(&["-N", &chain]) {
            Ok(_) => true,
            Err(e) if e.status == Some(1) && e.message.contains("already exists") => false,
            Err(e) => return Err(e.into()),
        };
        let mut appended: Vec<Vec<String>> = Vec::new();
        for ip in addrs {
            let subnet = format!("{}/{}", ip.network(), ip.prefix());
            let source = ip.ip().to_string();
            let comment_args = ["-m", "comment", "--comment", comment.as_str()];
            let rules: [(&str, Vec<&str>); 3] = [
                (&chain, vec!["-d", &subnet, "-j", "ACCEPT"]),
                (
                    &chain,
                    vec!["!", "-d", family.multicast(), "-j", "MASQUERADE"],
                ),
                ("POSTROUTING", vec!["-s", &source, "-j", &chain]),
            ];
            for (target, mut spec) in rules {
                spec.extend(comment_args);
                let mut args = vec!["-A", target];
                args.extend_from_slice(&spec);
                let key: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                if appended.contains(&key) || (!fresh && ipt.exists(target, &spec)?) {
                    continue;
                }
                ipt.run(&args)?;
                appended.push(key);
            }
        }
    }
    Ok(())
}

pub(super) fn teardown(
    tools: &Tools,
    network: &str,
    container_id: &str,
    ips: &[IpNetwork],
    errors: &mut Errors,
) {
    let chain = chain_name(network, container_id);
    let families: Vec<Family> = if ips.is_empty() {
        // Unknown addresses: look in both families, IPv6 only where the kernel has it.
        let mut both = vec![Family::V4];
        if ipv6_available() {
            both.push(Family::V6);
        }
        both
    } else {
        [Family::V4, Family::V6]
            .into_iter()
            .filter(|f| ips.iter().any(|ip| Family::of(ip) == *f))
            .collect()
    };
    for family in families {
        // Without the binary nothing of this family can have been made through it.
        let Some(bin) = family.binary(tools) else {
            continue;
        };
        let ipt = Ipt { bin, table: "nat" };
        match ipt.run(&["-S", "POSTROUTING"]) {
            Ok(listing) => delete_jumps(&ipt, &listing, &chain, errors),
            Err(e) => errors.push(e),
        }
        remove_chain(&ipt, &chain, errors);
    }
}

pub(super) fn gc(tools: &Tools, network: &str, keep: &[(String, String)], errors: &mut Errors) {
    let mut families = vec![Family::V4];
    if ipv6_available() {
        families.push(Family::V6);
    }
    for family in families {
        let Some(bin) = family.binary(tools) else {
            continue;
        };
        let ipt = Ipt { bin, table: "nat" };
        let listing = match ipt.run(&["-S"]) {
            Ok(listing) => listing,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let mut stale: Vec<String> = Vec::new();
        for line in listing.lines() {
            let Some(id) = container_id_of(&split_rule(line), network) else {
                continue;
            };
            if !keep.iter().any(|(kept, _)| *kept == id) && !stale.contains(&id) {
                stale.push(id);
            }
        }
        for id in stale {
            // portmap's chains carry the same comment: touch only our chain for this id.
            let chain = chain_name(network, &id);
            let declared = format!("-N {chain}");
            if listing.lines().any(|line| line == declared) {
                delete_jumps(&ipt, &listing, &chain, errors);
                remove_chain(&ipt, &chain, errors);
            }
        }
    }
}

/// Deletes, by their full spec, the POSTROUTING rules of an `-S` listing that jump to `chain`.
fn delete_jumps(ipt: &Ipt, listing: &str, chain: &str, errors: &mut Errors) {
    for line in listing.lines() {
        let rule = split_rule(line);
        let jumps = rule.windows(2).any(|w| w[0] == "-j" && w[1] == chain);
        if !jumps || rule.len() < 2 || rule[0] != "-A" || rule[1] != "POSTROUTING" {
            continue;
        }
        let mut args = vec!["-D"];
        args.extend(rule[1..].iter().map(String::as_str));
        if let Err(e) = ipt.run(&args)
            && !is_not_exist(&e)
        {
            errors.push(e);
        }
    }
}

fn remove_chain(ipt: &Ipt, chain: &str, errors: &mut Errors) {
    match ipt.run(&["-F", chain]) {
        Ok(_) => {
            if let Err(e) = ipt.run(&["-X", chain])
                && !is_not_exist(&e)
            {
                errors.push(e);
            }
        }
        Err(e) if is_not_exist(&e) => {}
        Err(e) => errors.push(e),
    }
}

/// Splits an `iptables -S` line into arguments: whitespace-separated, with `"..."` quoting in
/// which a backslash escapes the next character (how iptables prints comments).
pub(super) fn split_rule(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => word.extend(chars.next()),
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The container ID of a rule whose comment is exactly `comment(network, id)`.
pub(super) fn container_id_of(rule: &[String], network: &str) -> Option<String> {
    let text = rule
        .windows(2)
        .find(|w| w[0] == "--comment")
        .map(|w| w[1].as_str())?;
    let quoted = text.strip_prefix(&format!("name: {} id: ", go_quote(network)))?;
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let mut id = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            id.extend(chars.next());
        } else {
            id.push(c);
        }
    }
    // Rejects anything whose quoting this simple unescaping got wrong.
    (comment(network, &id) == text).then_some(id)
}
