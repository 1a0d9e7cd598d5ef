//! portmap's nftables backend, the reference's layout (`portmap_nftables.go` over knftables),
//! one table per family:
//!
//! ```text
//! table ip cni_hostport {
//!     comment "CNI portmap plugin"
//!     chain hostports { tcp dport 8080 dnat to 10.0.0.2:80 comment "<cid>" ... }
//!     chain hostip_hostports { }                      # legacy, kept for upgrades
//!     chain hostports_all { jump hostip_hostports ; jump hostports }
//!     chain prerouting { type nat hook prerouting priority dstnat; <conditions> fib daddr type local jump hostports_all }
//!     chain output { type nat hook output priority dstnat; <conditions> fib daddr type local jump hostports_all }
//!     chain masquerading { type nat hook postrouting priority srcnat;
//!         ip saddr <ip | 0.0.0.0/0 with masqAll> ip daddr <ip> masquerade comment "<cid>"
//!         ip saddr 127.0.0.1 ip daddr <ip> masquerade comment "<cid>" }   # IPv4, not masqAll
//! }
//! ```
//!
//! Each ADD rewrites `hostports_all`, `prerouting` and `output` (so the conditions of the last
//! ADD apply to all, as in the reference) and appends the container's rules, in one atomic
//! `nft -f -` batch. Teardown deletes, per family, every rule whose comment is the container
//! ID in `hostports`, `hostip_hostports` and `masquerading`.

use std::path::Path;

use ipnetwork::IpNetwork;
use serde_json::Value;

use super::portmap::PortmapSpec;
use super::{go_quote, run};
use crate::cni::{CniError, CniResult};

pub(super) const TABLE: &str = "cni_hostport";
const HOSTPORTS: &str = "hostports";
const HOSTIP_HOSTPORTS: &str = "hostip_hostports";
const HOSTPORTS_ALL: &str = "hostports_all";
const MASQUERADING: &str = "masquerading";
/// Chains holding per-container rules.
const CONTAINER_CHAINS: [&str; 3] = [HOSTPORTS, HOSTIP_HOSTPORTS, MASQUERADING];

fn family(v6: bool) -> &'static str {
    if v6 { "ip6" } else { "ip" }
}

/// The batch of one ADD for `container`'s family.
pub(super) fn forward_batch(spec: &PortmapSpec, container: IpNetwork, comments: bool) -> String {
    let v6 = container.is_ipv6();
    let fam = family(v6);
    let t = format!("{fam} {TABLE}");
    let mut b = String::new();
    if comments {
        b += &format!(
            "add table {t} {{ comment {} ; }}\n",
            go_quote("CNI portmap plugin")
        );
    } else {
        b += &format!("add table {t}\n");
    }
    b += &format!("add chain {t} {HOSTPORTS}\n");
    b += &format!("add chain {t} {HOSTIP_HOSTPORTS}\n");
    b += &format!("add chain {t} {HOSTPORTS_ALL}\n");
    b += &format!("flush chain {t} {HOSTPORTS_ALL}\n");
    b += &format!("add rule {t} {HOSTPORTS_ALL} jump {HOSTIP_HOSTPORTS}\n");
    b += &format!("add rule {t} {HOSTPORTS_ALL} jump {HOSTPORTS}\n");
    let conditions = spec.conditions(v6).join(" ");
    let lead = if conditions.is_empty() {
        String::new()
    } else {
        format!("{conditions} ")
    };
    // dstnat is priority -100 and srcnat 100; knftables writes numbers for older nft.
    for (chain, hook) in [("prerouting", "prerouting"), ("output", "output")] {
        b += &format!("add chain {t} {chain} {{ type nat hook {hook} priority -100 ; }}\n");
        b += &format!("flush chain {t} {chain}\n");
        b += &format!("add rule {t} {chain} {lead}fib daddr type local jump {HOSTPORTS_ALL}\n");
    }
    if spec.snat {
        b += &format!(
            "add chain {t} {MASQUERADING} {{ type nat hook postrouting priority 100 ; }}\n"
        );
    }
    let comment = go_quote(spec.container_id);
    let ip = container.ip();
    let target = if v6 {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    for m in spec.mappings {
        let Some(host_ip) = m.applies(v6) else {
            continue;
        };
        let dst = host_ip
            .map(|h| format!("{fam} daddr {h} "))
            .unwrap_or_default();
        b += &format!(
            "add rule {t} {HOSTPORTS} {dst}{} dport {} dnat to {target}:{} comment {comment}\n",
            m.protocol, m.host_port, m.container_port
        );
    }
    if spec.snat {
        let source = match (spec.masq_all, v6) {
            (true, false) => "0.0.0.0/0".to_string(),
            (true, true) => "::/0".to_string(),
            (false, _) => ip.to_string(),
        };
        b += &format!(
            "add rule {t} {MASQUERADING} {fam} saddr {source} {fam} daddr {ip} masquerade comment {comment}\n"
        );
        if !v6 && !spec.masq_all {
            b += &format!(
                "add rule {t} {MASQUERADING} {fam} saddr 127.0.0.1 {fam} daddr {ip} masquerade comment {comment}\n"
            );
        }
    }
    b
}

pub(super) fn forward(nft: &Path, spec: &PortmapSpec, container: IpNetwork) -> CniResult<()> {
    let first = match run(
        nft,
        &["-f", "-"],
        Some(&forward_batch(spec, container, true)),
    ) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    // Kernels before 5.10 reject table comments (knftables leaves them out there).
    tracing::debug!("nft batch failed, retrying without the table comment: {first}");
    run(
        nft,
        &["-f", "-"],
        Some(&forward_batch(spec, container, false)),
    )
    .map(|_| ())
    .map_err(|_| {
        CniError::internal(format!(
            "unable to set up nftables rules for port mappings: {first}"
        ))
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rule {
    pub(super) chain: String,
    pub(super) handle: u64,
    pub(super) comment: Option<String>,
}

/// The rules of table `cni_hostport` of one family; `None` when the table does not exist.
fn list(nft: &Path, v6: bool) -> CniResult<Option<Vec<Rule>>> {
    match run(nft, &["-j", "list", "table", family(v6), TABLE], None) {
        Ok(out) => parse_rules(&out).map(Some),
        Err(e) if e.message.contains("No such file or directory") => Ok(None),
        Err(e) => Err(CniError::internal(format!(
            "could not list rules in table {TABLE}: {e}"
        ))),
    }
}

pub(super) fn parse_rules(json: &str) -> CniResult<Vec<Rule>> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| CniError::internal(format!("could not parse nft output: {e}")))?;
    let items = value
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| CniError::internal("could not find result in nft output"))?;
    Ok(items
        .iter()
        .filter_map(|item| item.get("rule"))
        .filter(|rule| rule.get("table").and_then(Value::as_str) == Some(TABLE))
        .filter_map(|rule| {
            Some(Rule {
                chain: rule.get("chain")?.as_str()?.to_string(),
                handle: rule.get("handle")?.as_u64()?,
                comment: rule
                    .get("comment")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
        })
        .collect())
}

pub(super) fn check(nft: &Path, spec: &PortmapSpec, container: IpNetwork) -> CniResult<()> {
    let v6 = container.is_ipv6();
    let host_ports = spec
        .mappings
        .iter()
        .filter(|m| m.applies(v6).is_some())
        .count();
    let masquerades = match (spec.snat, v6 || spec.masq_all) {
        (false, _) => 0,
        (true, true) => 1,
        (true, false) => 2,
    };
    let rules = list(nft, v6)?.unwrap_or_default();
    for (chain, wanted) in [(HOSTPORTS, host_ports), (MASQUERADING, masquerades)] {
        if wanted == 0 {
            continue;
        }
        let found = rules
            .iter()
            .filter(|r| r.chain == chain && r.comment.as_deref() == Some(spec.container_id))
            .count();
        if found < wanted {
            return Err(CniError::internal(format!(
                "missing hostport rules in {chain:?} chain"
            )));
        }
    }
    Ok(())
}

/// Deletes the container's rules in both families. Listing and deleting are retried once:
/// handles may change when another plugin runs concurrently.
pub(super) fn unforward(nft: &Path, container_id: &str) -> CniResult<()> {
    for v6 in [false, true] {
        let attempt = || -> CniResult<()> {
            let Some(rules) = list(nft, v6)? else {
                return Ok(());
            };
            let batch: String = rules
                .iter()
                .filter(|r| {
                    CONTAINER_CHAINS.contains(&r.chain.as_str())
                        && r.comment.as_deref() == Some(container_id)
                })
                .map(|r| {
                    format!(
                        "delete rule {} {TABLE} {} handle {}\n",
                        family(v6),
                        r.chain,
                        r.handle
                    )
                })
                .collect();
            if !batch.is_empty() {
                run(nft, &["-f", "-"], Some(&batch)).map_err(|e| {
                    CniError::internal(format!("error deleting nftables rules: {e}"))
                })?;
            }
            Ok(())
        };
        attempt().or_else(|_| attempt())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::portmap::PortMapping;

    fn mapping(host_port: i64, proto: &str, host_ip: &str) -> PortMapping {
        PortMapping {
            host_port,
            container_port: 80,
            protocol: proto.into(),
            host_ip: host_ip.into(),
        }
    }

    #[test]
    fn portmap_nft_batch_is_the_references() {
        let mappings = [
            mapping(8080, "tcp", ""),
            mapping(8443, "tcp", "192.0.2.1"),
            mapping(9000, "udp", "2001:db8::1"),
            mapping(9001, "sctp", "0.0.0.0"),
        ];
        let conditions = vec!["ip".to_string(), "saddr".into(), "10.0.0.0/8".into()];
        let spec = PortmapSpec {
            network: "n",
            container_id: "cid",
            mappings: &mappings,
            snat: true,
            masq_all: false,
            mark_bit: 13,
            external_set_mark_chain: None,
            conditions_v4: &conditions,
            conditions_v6: &[],
        };
        let v4 = forward_batch(&spec, "10.0.0.2/24".parse().unwrap(), true);
        let rules: Vec<&str> = v4.lines().filter(|l| l.starts_with("add rule")).collect();
        assert_eq!(
            rules,
            [
                "add rule ip cni_hostport hostports_all jump hostip_hostports",
                "add rule ip cni_hostport hostports_all jump hostports",
                "add rule ip cni_hostport prerouting ip saddr 10.0.0.0/8 fib daddr type local jump hostports_all",
                "add rule ip cni_hostport output ip saddr 10.0.0.0/8 fib daddr type local jump hostports_all",
                "add rule ip cni_hostport hostports tcp dport 8080 dnat to 10.0.0.2:80 comment \"cid\"",
                "add rule ip cni_hostport hostports ip daddr 192.0.2.1 tcp dport 8443 dnat to 10.0.0.2:80 comment \"cid\"",
                "add rule ip cni_hostport hostports sctp dport 9001 dnat to 10.0.0.2:80 comment \"cid\"",
                "add rule ip cni_hostport masquerading ip saddr 10.0.0.2 ip daddr 10.0.0.2 masquerade comment \"cid\"",
                "add rule ip cni_hostport masquerading ip saddr 127.0.0.1 ip daddr 10.0.0.2 masquerade comment \"cid\"",
            ]
        );
        let all = PortmapSpec {
            masq_all: true,
            snat: true,
            ..spec.clone()
        };
        let v6 = forward_batch(&all, "fd00::2/64".parse().unwrap(), false);
        assert!(v6.starts_with("add table ip6 cni_hostport\n"), "{v6}");
        assert!(v6.contains(
            "add rule ip6 cni_hostport hostports ip6 daddr 2001:db8::1 udp dport 9000 dnat to [fd00::2]:80 comment \"cid\"\n"
        ));
        assert!(v6.contains("ip6 saddr ::/0 ip6 daddr fd00::2 masquerade"));
        assert_eq!(v6.matches("masquerade comment").count(), 1);
        let no_snat = PortmapSpec {
            snat: false,
            ..spec
        };
        assert!(
            !forward_batch(&no_snat, "10.0.0.2/24".parse().unwrap(), true).contains("masquerad")
        );
    }
}
