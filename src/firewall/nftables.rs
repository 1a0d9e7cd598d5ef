//! The nftables backend, laid out as the reference v1.9.1 (`ipmasq_nftables_linux.go` over
//! knftables) does:
//!
//! ```text
//! table inet cni_plugins_masquerade {
//!     comment "Masquerading for plugins from github.com/containernetworking/plugins"
//!     chain masq_checks {
//!         comment "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet"
//!         ip saddr <address> ip daddr != <subnet> masquerade comment "<instance comment>"
//!     }
//!     chain postrouting {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip daddr 224.0.0.0/4 return
//!         ip6 daddr ff00::/8 return
//!         goto masq_checks
//!     }
//! }
//! ```
//!
//! The instance comment is `<16 hex sha512(net)>-<16 hex sha512(ifname:cid)>, net: <net>, if:
//! <ifname>, id: <cid>` cut to 128 bytes; teardown selects rules by the first 33 characters,
//! GC by the first 16. Setup rewrites `postrouting`, replaces the instance's stale rules and
//! adds the new ones in one atomic `nft -f -` batch, written in the text syntax knftables
//! writes.

use std::path::Path;

use ipnetwork::IpNetwork;
use serde_json::Value;

use super::{Errors, go_quote, hash_hex, nft_objects, run};
use crate::cni::CniResult;

const TABLE: &str = "cni_plugins_masquerade";
const MASQ_CHAIN: &str = "masq_checks";
const TABLE_COMMENT: &str = "Masquerading for plugins from github.com/containernetworking/plugins";
const CHAIN_COMMENT: &str =
    "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet";
/// knftables' `CommentLengthMax`.
const COMMENT_MAX: usize = 128;

fn hash_for_network(network: &str) -> String {
    hash_hex(network, 16)
}

fn hash_for_instance(network: &str, ifname: &str, container_id: &str) -> String {
    format!(
        "{}-{}",
        hash_for_network(network),
        hash_hex(&format!("{ifname}:{container_id}"), 16)
    )
}

pub(super) fn comment_for_instance(network: &str, ifname: &str, container_id: &str) -> String {
    let mut comment = format!(
        "{}, net: {}, if: {}, id: {}",
        hash_for_instance(network, ifname, container_id),
        network.replace('"', ""),
        ifname.replace('"', ""),
        container_id.replace('"', ""),
    );
    if comment.len() > COMMENT_MAX {
        // Go cuts at byte 128; for ASCII (all valid names) the same, otherwise at a char.
        let mut end = COMMENT_MAX;
        while !comment.is_char_boundary(end) {
            end -= 1;
        }
        comment.truncate(end);
    }
    comment
}

/// The reference's probe (knftables' sanity check): may we change the ruleset at all?
pub(super) fn usable(nft: &Path) -> bool {
    run(
        nft,
        &["--check", "-f", "-"],
        Some("add table ip supports_nftables_test\n"),
    )
    .is_ok()
}

pub(super) fn setup(
    nft: &Path,
    network: &str,
    ifname: &str,
    container_id: &str,
    ips: &[IpNetwork],
) -> CniResult<()> {
    let instance = hash_for_instance(network, ifname, container_id);
    let comment = comment_for_instance(network, ifname, container_id);
    let attempt = |object_comments: bool| -> CniResult<()> {
        let stale: Vec<u64> = list_rules(nft)?
            .into_iter()
            .filter(|r| r.comment.starts_with(&instance))
            .map(|r| r.handle)
            .collect();
        let batch = setup_batch(&stale, &comment, ips, object_comments);
        run(nft, &["-f", "-"], Some(&batch))?;
        Ok(())
    };
    let first = match attempt(true) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    // Once more, listing again: a stale rule may have been deleted meanwhile, and kernels
    // before 5.10 reject table and chain comments (knftables leaves them out there).
    tracing::debug!("nft batch failed, retrying without object comments: {first}");
    attempt(false).map_err(|_| first)
}

pub(super) fn setup_batch(
    stale: &[u64],
    comment: &str,
    ips: &[IpNetwork],
    object_comments: bool,
) -> String {
    let mut b = String::new();
    if object_comments {
        b += &format!(
            "add table inet {TABLE} {{ comment {} ; }}\n",
            go_quote(TABLE_COMMENT)
        );
        b += &format!(
            "add chain inet {TABLE} {MASQ_CHAIN} {{ comment {} ; }}\n",
            go_quote(CHAIN_COMMENT)
        );
    } else {
        b += &format!("add table inet {TABLE}\n");
        b += &format!("add chain inet {TABLE} {MASQ_CHAIN}\n");
    }
    // srcnat is priority 100; knftables writes the number for older nft versions.
    b += &format!(
        "add chain inet {TABLE} postrouting {{ type nat hook postrouting priority 100 ; }}\n"
    );
    b += &format!("flush chain inet {TABLE} postrouting\n");
    b += &format!("add rule inet {TABLE} postrouting ip daddr == 224.0.0.0/4  return\n");
    b += &format!("add rule inet {TABLE} postrouting ip6 daddr == ff00::/8  return\n");
    b += &format!("add rule inet {TABLE} postrouting goto {MASQ_CHAIN}\n");
    for handle in stale {
        b += &format!("delete rule inet {TABLE} {MASQ_CHAIN} handle {handle}\n");
    }
    for ip in ips {
        let family = if ip.is_ipv4() { "ip" } else { "ip6" };
        b += &format!(
            "add rule inet {TABLE} {MASQ_CHAIN} {family} saddr == {} {family} daddr != {}/{} masquerade comment {}\n",
            ip.ip(),
            ip.network(),
            ip.prefix(),
            go_quote(comment)
        );
    }
    b
}

pub(super) fn teardown(
    nft: &Path,
    network: &str,
    ifname: &str,
    container_id: &str,
    errors: &mut Errors,
) {
    let instance = hash_for_instance(network, ifname, container_id);
    if let Err(e) = delete_rules(nft, |comment| comment.starts_with(&instance)) {
        errors.push(e);
    }
}

pub(super) fn gc(nft: &Path, network: &str, keep: &[(String, String)], errors: &mut Errors) {
    let prefix = hash_for_network(network);
    let valid: Vec<String> = keep
        .iter()
        .map(|(container_id, ifname)| comment_for_instance(network, ifname, container_id))
        .collect();
    let stale = |comment: &str| comment.starts_with(&prefix) && !valid.iter().any(|v| v == comment);
    if let Err(e) = delete_rules(nft, stale) {
        errors.push(e);
    }
}

/// Deletes, in one batch, the `masq_checks` rules whose comment matches. Tried twice: the
/// handles may change between listing and deleting when another plugin runs concurrently.
fn delete_rules(nft: &Path, matches: impl Fn(&str) -> bool) -> CniResult<()> {
    let attempt = || -> CniResult<()> {
        let batch: String = list_rules(nft)?
            .iter()
            .filter(|r| matches(&r.comment))
            .map(|r| {
                format!(
                    "delete rule inet {TABLE} {MASQ_CHAIN} handle {}\n",
                    r.handle
                )
            })
            .collect();
        if !batch.is_empty() {
            run(nft, &["-f", "-"], Some(&batch))?;
        }
        Ok(())
    };
    attempt().or_else(|_| attempt())
}

#[derive(Debug, PartialEq, Eq)]
struct Rule {
    handle: u64,
    comment: String,
}

/// The commented rules of `masq_checks`; none if the table or chain does not exist.
fn list_rules(nft: &Path) -> CniResult<Vec<Rule>> {
    let args = ["-j", "list", "chain", "inet", TABLE, MASQ_CHAIN];
    match run(nft, &args, None) {
        Ok(out) => parse_rules(&out),
        Err(e) if e.message.contains("No such file or directory") => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

fn parse_rules(json: &str) -> CniResult<Vec<Rule>> {
    let items = nft_objects(json)?;
    let rules = items
        .iter()
        .filter_map(|item| item.get("rule"))
        .filter(|rule| {
            rule.get("table").and_then(Value::as_str) == Some(TABLE)
                && rule.get("chain").and_then(Value::as_str) == Some(MASQ_CHAIN)
        })
        .filter_map(|rule| {
            Some(Rule {
                handle: rule.get("handle")?.as_u64()?,
                comment: rule.get("comment")?.as_str()?.to_string(),
            })
        })
        .collect();
    Ok(rules)
}
