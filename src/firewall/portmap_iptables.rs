//! portmap's iptables backend, the reference's layout (all in table `nat`):
//!
//! ```text
//! -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
//! -A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
//! -I POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
//! -A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
//! -A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
//! -A CNI-HOSTPORT-DNAT -m comment --comment 'dnat name: "<net>" id: "<cid>"' -m multiport -p tcp --destination-ports 8080,8081 [conditions] -j CNI-DN-<hash>
//! -A CNI-DN-<hash> -p tcp --dport 8080 [-d hostIP] -s <container CIDR> -j CNI-HOSTPORT-SETMARK
//! -A CNI-DN-<hash> -p tcp --dport 8080 [-d hostIP] -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK   (IPv4)
//! -A CNI-DN-<hash> -p tcp --dport 8080 [-d hostIP] -j DNAT --to-destination <ip>:80
//! ```
//!
//! Rules are added as go-iptables' "insert unique" does (`-C`, then `-A`/`-I`), except in a
//! chain this call created. Teardown needs no mappings: one `-S` listing of the table shows
//! whether the container's chain exists and every rule that jumps to it.

use ipnetwork::IpNetwork;

use super::iptables::{
    Family, Ipt, chain_name_with_prefix, ipv6_available, is_not_exist, split_rule,
};
use super::portmap::PortmapSpec;
use super::{Errors, RunError, Tools, missing_binary};
use crate::cni::{CniError, CniResult};

pub(super) const TOP_DNAT: &str = "CNI-HOSTPORT-DNAT";
const SETMARK: &str = "CNI-HOSTPORT-SETMARK";
const MASQ: &str = "CNI-HOSTPORT-MASQ";

/// A chain with its rules and the rules in other chains that jump to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Chain {
    pub(super) name: String,
    pub(super) entry_chains: Vec<&'static str>,
    /// Without the final `-j <name>`.
    pub(super) entry_rules: Vec<Vec<String>>,
    pub(super) rules: Vec<Vec<String>>,
    pub(super) prepend_entry: bool,
}

fn words(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Go's `%#x/%#x` of the mark bit.
fn mark(bit: u32) -> String {
    let value = 1u64 << bit;
    format!("{value:#x}/{value:#x}")
}

/// `CNI-DN-` + 21 hex of sha512(network + containerID).
pub(super) fn dnat_chain_name(network: &str, container_id: &str) -> String {
    chain_name_with_prefix(network, container_id, "DN-")
}

fn old_snat_chain_name(network: &str, container_id: &str) -> String {
    chain_name_with_prefix(network, container_id, "SN-")
}

/// `dnat name: "<net>" id: "<cid>"` (Go's `%s` inside quotes, not `%q`), cut to iptables'
/// 255 characters.
pub(super) fn dnat_comment(network: &str, container_id: &str) -> String {
    let text = format!("dnat name: \"{network}\" id: \"{container_id}\"");
    if text.len() <= 255 {
        return text;
    }
    let mut end = 253;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

fn top_dnat_chain() -> Chain {
    Chain {
        name: TOP_DNAT.into(),
        entry_chains: vec!["PREROUTING", "OUTPUT"],
        entry_rules: vec![words(&["-m", "addrtype", "--dst-type", "LOCAL"])],
        rules: Vec::new(),
        prepend_entry: false,
    }
}

fn setmark_chain(bit: u32) -> Chain {
    Chain {
        name: SETMARK.into(),
        entry_chains: Vec::new(),
        entry_rules: Vec::new(),
        rules: vec![words(&[
            "-m",
            "comment",
            "--comment",
            "CNI portfwd masquerade mark",
            "-j",
            "MARK",
            "--set-xmark",
            &mark(bit),
        ])],
        prepend_entry: false,
    }
}

fn masq_chain(bit: u32) -> Chain {
    Chain {
        name: MASQ.into(),
        entry_chains: vec!["POSTROUTING"],
        // Prepended: the masquerade rules of bridge and ptp would otherwise come first.
        entry_rules: vec![words(&[
            "-m",
            "comment",
            "--comment",
            "CNI portfwd requiring masquerade",
        ])],
        rules: vec![words(&[
            "-m",
            "mark",
            "--mark",
            &mark(bit),
            "-j",
            "MASQUERADE",
        ])],
        prepend_entry: true,
    }
}

/// `ip:port`, IPv6 in brackets.
fn ip_port(container: IpNetwork, port: i64) -> String {
    match container {
        IpNetwork::V4(n) => format!("{}:{port}", n.ip()),
        IpNetwork::V6(n) => format!("[{}]:{port}", n.ip()),
    }
}

/// Go's `net.IPNet.String()` of a result address: the masked network with its prefix.
fn masked(container: IpNetwork) -> String {
    format!("{}/{}", container.network(), container.prefix())
}

/// The container's chain with its entry rules (multiport, at most 15 ports each, grouped by
/// protocol in sorted order) and, per mapping, the hairpin and localhost mark rules and DNAT.
pub(super) fn dnat_chain(spec: &PortmapSpec, container: IpNetwork) -> Chain {
    let v6 = container.is_ipv6();
    let comment = dnat_comment(spec.network, spec.container_id);
    let setmark = spec.external_set_mark_chain.unwrap_or(SETMARK);
    let mut protocols: Vec<(&str, Vec<i64>)> = Vec::new();
    for m in spec.mappings {
        match protocols.iter_mut().find(|(p, _)| *p == m.protocol) {
            Some((_, ports)) => ports.push(m.host_port),
            None => protocols.push((&m.protocol, vec![m.host_port])),
        }
    }
    protocols.sort_by(|a, b| a.0.cmp(b.0));
    let mut entry_rules = Vec::new();
    for (proto, ports) in &protocols {
        for chunk in ports.chunks(15) {
            let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
            let mut rule = words(&[
                "-m",
                "comment",
                "--comment",
                &comment,
                "-m",
                "multiport",
                "-p",
                proto,
                "--destination-ports",
                &list.join(","),
            ]);
            rule.extend(spec.conditions(v6).iter().cloned());
            entry_rules.push(rule);
        }
    }
    let mut rules = Vec::new();
    for m in spec.mappings {
        let Some(host_ip) = m.applies(v6) else {
            continue;
        };
        let mut base = words(&["-p", &m.protocol, "--dport", &m.host_port.to_string()]);
        if let Some(ip) = host_ip {
            base.extend(words(&["-d", ip]));
        }
        if spec.snat {
            let source = match (spec.masq_all, v6) {
                (true, false) => "0.0.0.0/0".to_string(),
                (true, true) => "::/0".to_string(),
                (false, _) => masked(container),
            };
            let mut hairpin = base.clone();
            hairpin.extend(words(&["-s", &source, "-j", setmark]));
            rules.push(hairpin);
            if !v6 && !spec.masq_all {
                let mut local = base.clone();
                local.extend(words(&["-s", "127.0.0.1", "-j", setmark]));
                rules.push(local);
            }
        }
        let mut dnat = base;
        dnat.extend(words(&[
            "-j",
            "DNAT",
            "--to-destination",
            &ip_port(container, m.container_port),
        ]));
        rules.push(dnat);
    }
    Chain {
        name: dnat_chain_name(spec.network, spec.container_id),
        entry_chains: vec![TOP_DNAT],
        entry_rules,
        rules,
        prepend_entry: false,
    }
}

/// `-N`; false if the chain was there already.
fn ensure_chain(ipt: &Ipt, name: &str) -> Result<bool, RunError> {
    match ipt.run(&["-N", name]) {
        Ok(_) => Ok(true),
        Err(e) if e.status == Some(1) && e.message.contains("already exists") => Ok(false),
        Err(e) => Err(e),
    }
}

/// go-iptables' `InsertUnique`: `-C`, then `-I 1` or `-A`; `fresh` skips the check.
fn insert_unique(
    ipt: &Ipt,
    chain: &str,
    prepend: bool,
    rule: &[String],
    fresh: bool,
) -> Result<(), RunError> {
    let spec: Vec<&str> = rule.iter().map(String::as_str).collect();
    if !fresh && ipt.exists(chain, &spec)? {
        return Ok(());
    }
    let mut args = if prepend {
        vec!["-I", chain, "1"]
    } else {
        vec!["-A", chain]
    };
    args.extend_from_slice(&spec);
    ipt.run(&args).map(|_| ())
}

impl Chain {
    fn setup(&self, ipt: &Ipt) -> Result<(), RunError> {
        let fresh = ensure_chain(ipt, &self.name)?;
        let mut added: Vec<&Vec<String>> = Vec::new();
        for rule in &self.rules {
            if added.contains(&rule) {
                continue;
            }
            insert_unique(ipt, &self.name, false, rule, fresh)?;
            added.push(rule);
        }
        for entry in &self.entry_chains {
            for rule in &self.entry_rules {
                let mut full = rule.clone();
                full.extend(words(&["-j", &self.name]));
                insert_unique(ipt, entry, self.prepend_entry, &full, false)?;
            }
        }
        Ok(())
    }

    fn check(&self, ipt: &Ipt) -> Result<(), String> {
        let exists = match ipt.run(&["-S", &self.name]) {
            Ok(_) => true,
            Err(e) if is_not_exist(&e) || e.status == Some(1) => false,
            Err(e) => return Err(e.to_string()),
        };
        if !exists {
            return Err(format!(
                "chain {} not found in iptables table {}",
                self.name, ipt.table
            ));
        }
        for rule in self.rules.iter().rev() {
            let spec: Vec<&str> = rule.iter().map(String::as_str).collect();
            if !ipt.exists(&self.name, &spec).unwrap_or(false) {
                return Err(format!(
                    "rule {} in chain {} not found in table {}",
                    go_rules(&self.rules),
                    self.name,
                    ipt.table
                ));
            }
        }
        for entry in &self.entry_chains {
            for rule in self.entry_rules.iter().rev() {
                let mut spec: Vec<&str> = rule.iter().map(String::as_str).collect();
                spec.extend(["-j", &self.name]);
                if !ipt.exists(entry, &spec).unwrap_or(false) {
                    return Err(format!(
                        "rule {} in chain {entry} not found in table {}",
                        go_rules(&self.entry_rules),
                        ipt.table
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Go's `%s` of a `[][]string`.
fn go_rules(rules: &[Vec<String>]) -> String {
    let inner: Vec<String> = rules.iter().map(|r| format!("[{}]", r.join(" "))).collect();
    format!("[{}]", inner.join(" "))
}

fn family_of(container: IpNetwork) -> Family {
    Family::of(&container)
}

pub(super) fn forward(tools: &Tools, spec: &PortmapSpec, container: IpNetwork) -> CniResult<()> {
    let family = family_of(container);
    let bin = family
        .binary(tools)
        .ok_or_else(|| missing_binary(family.command()))
        .map_err(|e| e.context("failed to open iptables"))?;
    let ipt = Ipt { bin, table: "nat" };
    if spec.snat && spec.external_set_mark_chain.is_none() {
        for chain in [setmark_chain(spec.mark_bit), masq_chain(spec.mark_bit)] {
            chain.setup(&ipt).map_err(|e| {
                CniError::internal(format!("unable to create chain {}: {e}", chain.name))
            })?;
        }
    }
    top_dnat_chain()
        .setup(&ipt)
        .map_err(|e| CniError::internal(format!("failed to create top-level DNAT chain: {e}")))?;
    dnat_chain(spec, container)
        .setup(&ipt)
        .map_err(|e| CniError::internal(format!("unable to setup DNAT: {e}")))
}

pub(super) fn check(tools: &Tools, spec: &PortmapSpec, container: IpNetwork) -> CniResult<()> {
    let family = family_of(container);
    let (label, err_label) = match family {
        Family::V4 => ("ipv4", "iptables"),
        Family::V6 => ("ipv6", "ip6tables"),
    };
    let Some(bin) = family.binary(tools).filter(|b| nat_usable(b)) else {
        return Err(CniError::internal(format!(
            "{err_label} is not usable for the {label} port mappings"
        )));
    };
    let ipt = Ipt { bin, table: "nat" };
    dnat_chain(spec, container)
        .check(&ipt)
        .map_err(|e| CniError::internal(format!("could not check {label} dnat: {e}")))
}

/// The reference's `maybeGetIptables`: can the nat table be listed?
fn nat_usable(bin: &std::path::Path) -> bool {
    Ipt { bin, table: "nat" }.run(&["-S", "OUTPUT"]).is_ok()
}

/// The families to tear down: IPv4 and, where the kernel has it, IPv6; each only if its
/// command works, and an error only if neither does.
fn usable_families(tools: &Tools) -> CniResult<Vec<(Family, &std::path::Path)>> {
    let mut out = Vec::new();
    let mut why = Vec::new();
    for family in [Family::V4, Family::V6] {
        if family == Family::V6 && !ipv6_available() {
            continue;
        }
        match family.binary(tools) {
            Some(bin) if nat_usable(bin) => out.push((family, bin)),
            Some(bin) => why.push(format!("({}) cannot list table nat", bin.display())),
            None => why.push(format!("({}) not found", family.command())),
        }
    }
    if out.is_empty() {
        return Err(CniError::internal(format!(
            "neither iptables nor ip6tables is usable, {}",
            why.join(", ")
        )));
    }
    Ok(out)
}

pub(super) fn unforward(tools: &Tools, network: &str, container_id: &str) -> CniResult<()> {
    for (family, bin) in usable_families(tools)? {
        let ipt = Ipt { bin, table: "nat" };
        let mut errors = Errors::default();
        teardown_container(&ipt, network, container_id, &mut errors);
        let label = if family == Family::V4 { "ipv4" } else { "ipv6" };
        errors
            .into_result(&format!("could not teardown {label} dnat"))
            .map_err(|e| CniError::internal(e.msg))?;
    }
    Ok(())
}

/// Removes the container's `CNI-DN-` chain (and an old `CNI-SN-` one) with every rule that
/// jumps to it, from one listing of the table.
fn teardown_container(ipt: &Ipt, network: &str, container_id: &str, errors: &mut Errors) {
    let listing = match ipt.run(&["-S"]) {
        Ok(listing) => listing,
        Err(e) => {
            errors.push(e);
            return;
        }
    };
    for chain in [
        dnat_chain_name(network, container_id),
        old_snat_chain_name(network, container_id),
    ] {
        remove_chain(ipt, &listing, &chain, errors);
    }
}

fn remove_chain(ipt: &Ipt, listing: &str, chain: &str, errors: &mut Errors) {
    let declared = format!("-N {chain}");
    if !listing.lines().any(|l| l == declared) {
        return;
    }
    for line in listing.lines() {
        let rule = split_rule(line);
        if rule.len() < 2 || rule[0] != "-A" {
            continue;
        }
        if !rule.windows(2).any(|w| w[0] == "-j" && w[1] == chain) {
            continue;
        }
        let mut args = vec!["-D"];
        args.extend(rule[1..].iter().map(String::as_str));
        if let Err(e) = ipt.run(&args)
            && !is_not_exist(&e)
            && e.status != Some(2)
        {
            errors.push(e);
        }
    }
    for op in ["-F", "-X"] {
        if let Err(e) = ipt.run(&[op, chain]) {
            if !is_not_exist(&e) {
                errors.push(e);
            }
            return;
        }
    }
}

/// The container ID in a `dnat name: "<net>" id: "<cid>"` comment of `network`.
pub(super) fn container_id_of(comment: &str, network: &str) -> Option<String> {
    let rest = comment.strip_prefix(&format!("dnat name: \"{network}\" id: \""))?;
    let id = rest.strip_suffix('"')?;
    (dnat_comment(network, id) == comment).then(|| id.to_string())
}

pub(super) fn gc(tools: &Tools, network: &str, keep: &[String], errors: &mut Errors) {
    let Ok(families) = usable_families(tools) else {
        return;
    };
    for (_, bin) in families {
        let ipt = Ipt { bin, table: "nat" };
        let listing = match ipt.run(&["-S", TOP_DNAT]) {
            Ok(listing) => listing,
            Err(e) if is_not_exist(&e) || e.status == Some(1) => continue,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let mut stale: Vec<String> = Vec::new();
        for line in listing.lines() {
            let rule = split_rule(line);
            let Some(comment) = rule
                .windows(2)
                .find(|w| w[0] == "--comment")
                .map(|w| w[1].as_str())
            else {
                continue;
            };
            let Some(id) = container_id_of(comment, network) else {
                continue;
            };
            if !keep.contains(&id) && !stale.contains(&id) {
                stale.push(id);
            }
        }
        for id in stale {
            teardown_container(&ipt, network, &id, errors);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::portmap::PortMapping;

    #[test]
    fn portmap_iptables_chain_is_the_references() {
        let mut mappings: Vec<PortMapping> = (1..=16)
            .map(|i| PortMapping {
                host_port: 8000 + i,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            })
            .collect();
        mappings.push(PortMapping {
            host_port: 53,
            container_port: 53,
            protocol: "udp".into(),
            host_ip: "fd00::1".into(),
        });
        let spec = PortmapSpec {
            network: "net",
            container_id: "cid",
            mappings: &mappings,
            snat: true,
            masq_all: true,
            mark_bit: 0,
            external_set_mark_chain: Some("KUBE-MARK-MASQ"),
            conditions_v4: &[],
            conditions_v6: &[],
        };
        let chain = dnat_chain(&spec, "10.1.2.3/16".parse().unwrap());
        assert_eq!(chain.name.len(), 28);
        assert!(chain.name.starts_with("CNI-DN-"));
        // 16 tcp ports: 15 + 1 multiport entries; then udp.
        assert_eq!(chain.entry_rules.len(), 3);
        assert!(chain.entry_rules[0].join(" ").ends_with("-p tcp --destination-ports 8001,8002,8003,8004,8005,8006,8007,8008,8009,8010,8011,8012,8013,8014,8015"));
        assert_eq!(
            chain.entry_rules[2].join(" "),
            "-m comment --comment dnat name: \"net\" id: \"cid\" -m multiport -p udp --destination-ports 53"
        );
        // masqAll: one mark rule from anywhere, no localhost rule; the IPv6 hostIP is skipped.
        assert_eq!(chain.rules.len(), 32);
        assert_eq!(
            chain.rules[0].join(" "),
            "-p tcp --dport 8001 -s 0.0.0.0/0 -j KUBE-MARK-MASQ"
        );
        assert_eq!(
            chain.rules[1].join(" "),
            "-p tcp --dport 8001 -j DNAT --to-destination 10.1.2.3:80"
        );
        assert_eq!(setmark_chain(0).rules[0].last().unwrap(), "0x1/0x1");
        assert_eq!(masq_chain(31).rules[0][3], "0x80000000/0x80000000");
        let long = "x".repeat(300);
        assert_eq!(dnat_comment("n", &long).len(), 256);
        assert!(dnat_comment("n", &long).ends_with("..."));
        assert_eq!(
            container_id_of(&dnat_comment("net", "abc"), "net").as_deref(),
            Some("abc")
        );
        assert_eq!(container_id_of(&dnat_comment("other", "abc"), "net"), None);
    }
}
