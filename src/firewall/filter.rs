//! The firewall plugin's iptables rules (table `filter`), as the reference
//! (containernetworking/plugins v1.9.1 `plugins/meta/firewall`) lays them out:
//!
//! ```text
//! -I FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD
//! -I CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN
//! -A CNI-FORWARD -d <ip>/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
//! -A CNI-FORWARD -s <ip>/32 -j ACCEPT
//! ```
//!
//! and, for `ingressPolicy` `same-bridge` / `isolated`, the per-bridge isolation chains
//! `CNI-ISOLATION-STAGE-1` and `-2` (never torn down: other containers share them).

use std::net::IpAddr;

use super::iptables::{Family, Ipt};
use super::{RunError, Tools, missing_binary};
use crate::cni::{CniError, CniResult};

pub const FORWARD_CHAIN: &str = "CNI-FORWARD";
pub const DEFAULT_ADMIN_CHAIN: &str = "CNI-ADMIN";
const STAGE1: &str = "CNI-ISOLATION-STAGE-1";
const STAGE2: &str = "CNI-ISOLATION-STAGE-2";
const DEFAULT_POLICY_COMMENT: &str =
    "CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)";

fn words(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// `ip/32` or `ip/128`, whatever the prefix of the result address.
pub fn host_cidr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    }
}

fn per_ip_rules(ip: IpAddr) -> [Vec<String>; 2] {
    let cidr = host_cidr(ip);
    [
        words(&[
            "-d",
            &cidr,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ]),
        words(&["-s", &cidr, "-j", "ACCEPT"]),
    ]
}

fn forward_rule() -> Vec<String> {
    words(&[
        "-m",
        "comment",
        "--comment",
        "CNI firewall plugin rules",
        "-j",
        FORWARD_CHAIN,
    ])
}

fn admin_rule(admin: &str) -> Vec<String> {
    words(&[
        "-m",
        "comment",
        "--comment",
        "CNI firewall plugin admin overrides",
        "-j",
        admin,
    ])
}

/// Go's `%v` of a `[]string`.
fn go_list(rule: &[String]) -> String {
    format!("[{}]", rule.join(" "))
}

fn family_of(ip: IpAddr) -> Family {
    if ip.is_ipv4() { Family::V4 } else { Family::V6 }
}

/// The addresses of each family that has any, IPv4 first.
fn by_family(ips: &[IpAddr]) -> Vec<(Family, Vec<IpAddr>)> {
    [Family::V4, Family::V6]
        .into_iter()
        .map(|family| {
            let mine: Vec<IpAddr> = ips
                .iter()
                .copied()
                .filter(|ip| family_of(*ip) == family)
                .collect();
            (family, mine)
        })
        .filter(|(_, mine)| !mine.is_empty())
        .collect()
}

fn refs(rule: &[String]) -> Vec<&str> {
    rule.iter().map(String::as_str).collect()
}

struct Filter<'a> {
    ipt: Ipt<'a>,
}

impl Filter<'_> {
    fn ensure_chain(&self, chain: &str) -> Result<(), RunError> {
        match self.ipt.run(&["-N", chain]) {
            Err(e) if !(e.status == Some(1) && e.message.contains("already exists")) => Err(e),
            _ => Ok(()),
        }
    }

    fn chain_exists(&self, chain: &str) -> Result<bool, RunError> {
        match self.ipt.run(&["-S", chain]) {
            Ok(_) => Ok(true),
            Err(e) if e.status == Some(1) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn exists(&self, chain: &str, rule: &[String]) -> Result<bool, RunError> {
        self.ipt.exists(chain, &refs(rule))
    }

    /// go-iptables' `InsertUnique` (prepend = insert at position 1).
    fn insert_unique(&self, chain: &str, prepend: bool, rule: &[String]) -> Result<(), RunError> {
        if self.exists(chain, rule)? {
            return Ok(());
        }
        let mut args = if prepend {
            vec!["-I", chain, "1"]
        } else {
            vec!["-A", chain]
        };
        args.extend(refs(rule));
        self.ipt.run(&args).map(|_| ())
    }

    fn delete(&self, chain: &str, rule: &[String]) {
        let mut args = vec!["-D", chain];
        args.extend(refs(rule));
        if let Err(e) = self.ipt.run(&args) {
            tracing::debug!("ignoring: {e}");
        }
    }
}

fn filter_for(tools: &Tools, family: Family) -> CniResult<Filter<'_>> {
    let bin = family.binary(tools).ok_or_else(|| {
        missing_binary(family.command())
            .context(format!("could not initialize {}", family.command()))
    })?;
    Ok(Filter {
        ipt: Ipt {
            bin,
            table: "filter",
        },
    })
}

/// Admits traffic from each address and replies to it, in `CNI-FORWARD`.
pub fn add_rules(admin: &str, ips: &[IpAddr]) -> CniResult<()> {
    let tools = Tools::find();
    for (family, mine) in by_family(ips) {
        let f = filter_for(&tools, family)?;
        let rules: Vec<Vec<String>> = mine.iter().flat_map(|ip| per_ip_rules(*ip)).collect();
        let setup = || -> Result<(), RunError> {
            f.ensure_chain(FORWARD_CHAIN)?;
            f.ensure_chain(admin)?;
            f.insert_unique("FORWARD", true, &forward_rule())?;
            f.insert_unique(FORWARD_CHAIN, true, &admin_rule(admin))?;
            for rule in &rules {
                f.insert_unique(FORWARD_CHAIN, false, rule)?;
            }
            Ok(())
        };
        if let Err(e) = setup() {
            for rule in &rules {
                f.delete(FORWARD_CHAIN, rule);
            }
            return Err(e.into());
        }
    }
    Ok(())
}

/// Removes the per-address rules; failures (rule or chain already gone) are ignored, as in
/// the reference.
pub fn del_rules(ips: &[IpAddr]) {
    let tools = Tools::find();
    for (family, mine) in by_family(ips) {
        let Ok(f) = filter_for(&tools, family) else {
            continue;
        };
        for ip in mine {
            for rule in per_ip_rules(ip) {
                f.delete(FORWARD_CHAIN, &rule);
            }
        }
    }
}

/// Verifies the chains, the jumps into them and the per-address rules. Unlike the
/// reference, creates nothing.
pub fn check_rules(admin: &str, ips: &[IpAddr]) -> CniResult<()> {
    let tools = Tools::find();
    for (family, mine) in by_family(ips) {
        let f = filter_for(&tools, family)?;
        for chain in [FORWARD_CHAIN, admin] {
            if !f.chain_exists(chain)? {
                return Err(CniError::internal(format!(
                    "chain {chain} not found in {} table filter",
                    family.command()
                )));
            }
        }
        for (chain, rule) in [
            ("FORWARD", forward_rule()),
            (FORWARD_CHAIN, admin_rule(admin)),
        ] {
            if !f.exists(chain, &rule)? {
                return Err(CniError::internal(format!(
                    "expected {chain} rule {} not found",
                    go_list(&rule)
                )));
            }
        }
        for ip in mine {
            for rule in per_ip_rules(ip) {
                if !f.exists(FORWARD_CHAIN, &rule)? {
                    return Err(CniError::internal(format!(
                        "expected rule {} not found",
                        go_list(&rule)
                    )));
                }
            }
        }
    }
    Ok(())
}

fn with_comment(mut rule: Vec<String>, comment: &str) -> Vec<String> {
    rule.extend(words(&["-m", "comment", "--comment", comment]));
    rule
}

/// `ingressPolicy` `same-bridge` (or `isolated`, which also drops traffic between the
/// bridge's own ports): traffic from other interfaces to `bridge` is dropped, for the
/// families of `ips`.
pub fn setup_isolation(bridge: &str, isolated: bool, ips: &[IpAddr]) -> CniResult<()> {
    let tools = Tools::find();
    let policy = if isolated { "isolated" } else { "same-bridge" };
    let policy_comment = format!("CNI firewall plugin rules (ingressPolicy: {policy})");
    for (family, _) in by_family(ips) {
        let f = filter_for(&tools, family)?;
        let steps = || -> Result<(), RunError> {
            f.ensure_chain(STAGE1)?;
            f.ensure_chain(STAGE2)?;
            f.insert_unique(
                "FORWARD",
                true,
                &with_comment(words(&["-j", STAGE1]), DEFAULT_POLICY_COMMENT),
            )?;
            f.insert_unique(
                STAGE1,
                true,
                &with_comment(
                    words(&["-i", bridge, "!", "-o", bridge, "-j", STAGE2]),
                    &policy_comment,
                ),
            )?;
            if isolated {
                f.insert_unique(
                    STAGE1,
                    true,
                    &with_comment(
                        words(&["-i", bridge, "-o", bridge, "-j", "DROP"]),
                        &policy_comment,
                    ),
                )?;
            }
            f.insert_unique(
                STAGE1,
                false,
                &with_comment(words(&["-j", "RETURN"]), DEFAULT_POLICY_COMMENT),
            )?;
            f.insert_unique(
                STAGE2,
                true,
                &with_comment(words(&["-o", bridge, "-j", "DROP"]), DEFAULT_POLICY_COMMENT),
            )?;
            f.insert_unique(
                STAGE2,
                false,
                &with_comment(words(&["-j", "RETURN"]), DEFAULT_POLICY_COMMENT),
            )
        };
        steps()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_rules_are_the_references() {
        let ip: IpAddr = "10.88.0.5".parse().unwrap();
        assert_eq!(
            per_ip_rules(ip)[0].join(" "),
            "-d 10.88.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        );
        assert_eq!(host_cidr("fd00::5".parse().unwrap()), "fd00::5/128");
        assert_eq!(
            go_list(&admin_rule("CNI-ADMIN")),
            "[-m comment --comment CNI firewall plugin admin overrides -j CNI-ADMIN]"
        );
    }
}
