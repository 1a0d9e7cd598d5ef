//! The bridge plugin's MAC spoof check (`macspoofchk`), laid out as the reference v1.9.1
//! (`pkg/link/spoofcheck.go` over go-nft) does, so that either implementation removes what the
//! other made:
//!
//! ```text
//! table bridge nat {
//!     chain PREROUTING {
//!         type filter hook prerouting priority -300; policy accept;
//!         iifname "<host veth>" jump cni-br-iface-<id> comment "macspoofchk-<id>"
//!     }
//!     chain cni-br-iface-<id> {
//!         jump cni-br-iface-<id>-mac comment "macspoofchk-<id>"
//!     }
//!     chain cni-br-iface-<id>-mac {
//!         ether saddr <container MAC> return comment "macspoofchk-<id>"
//!         drop comment "macspoofchk-<id>"
//!     }
//! }
//! ```
//!
//! `<id>` is `<containerID>-<ifname>`. Both directions are one atomic `nft -j -f -` batch in
//! the JSON syntax the reference writes (chain names hold the ifname, which the text syntax
//! cannot quote). Unlike the reference, setup first drops a stale jump of the same attachment
//! (a repeated ADD would otherwise leave two), and teardown deletes only what exists, so it is
//! idempotent.

use std::path::Path;

use serde_json::{Value, json};

use super::{Tools, missing_binary, nft_objects, run};
use crate::cni::{CniError, CniResult};

const FAMILY: &str = "bridge";
const TABLE: &str = "nat";
const BASE_CHAIN: &str = "PREROUTING";

/// The names one attachment's rules use.
struct Names {
    iface_chain: String,
    mac_chain: String,
    comment: String,
}

impl Names {
    fn new(ref_id: &str) -> Names {
        let iface_chain = format!("cni-br-iface-{ref_id}");
        Names {
            mac_chain: format!("{iface_chain}-mac"),
            iface_chain,
            comment: format!("macspoofchk-{ref_id}"),
        }
    }
}

/// Lets only frames from `mac` in through bridge port `host_iface`. `ref_id` names the
/// attachment (`<containerID>-<ifname>`).
pub fn setup_mac_spoof_check(host_iface: &str, mac: &str, ref_id: &str) -> CniResult<()> {
    let tools = Tools::find();
    let nft = tools.nft.as_deref().ok_or_else(|| missing_binary("nft"))?;
    let names = Names::new(ref_id);
    let apply = || -> CniResult<()> {
        let stale = find(nft, &names)?.jumps;
        run(
            nft,
            &["-j", "-f", "-"],
            Some(&setup_batch(&names, host_iface, mac, &stale)),
        )?;
        Ok(())
    };
    // Once more on failure: a stale rule may have gone between listing and deleting.
    apply()
        .or_else(|_| apply())
        .map_err(|e| CniError::internal(format!("failed to setup spoof-check: {}", e.msg)))
}

/// Removes the spoof check of attachment `ref_id`: its jump rules in `PREROUTING` (found by
/// comment, so no interface name is needed) and its two chains. Whatever is already gone is
/// skipped; without an `nft` binary nothing can have been set up.
pub fn teardown_mac_spoof_check(ref_id: &str) -> CniResult<()> {
    let Some(nft) = Tools::find().nft else {
        return Ok(());
    };
    let names = Names::new(ref_id);
    let apply = || -> CniResult<()> {
        let found = find(&nft, &names)?;
        if let Some(batch) = teardown_batch(&names, &found) {
            run(&nft, &["-j", "-f", "-"], Some(&batch))?;
        }
        Ok(())
    };
    apply()
        .or_else(|_| apply())
        .map_err(|e| CniError::internal(format!("failed to teardown spoof-check: {}", e.msg)))
}

/// What of one attachment's spoof check exists now.
#[derive(Debug, Default, PartialEq, Eq)]
struct Found {
    /// Handles of the `PREROUTING` rules carrying the attachment's comment.
    jumps: Vec<u64>,
    iface_chain: bool,
    mac_chain: bool,
}

fn find(nft: &Path, names: &Names) -> CniResult<Found> {
    match run(nft, &["-j", "list", "table", FAMILY, TABLE], None) {
        Ok(out) => parse_found(&out, names),
        Err(e) if e.message.contains("No such file or directory") => Ok(Found::default()),
        Err(e) => Err(e.into()),
    }
}

fn parse_found(json: &str, names: &Names) -> CniResult<Found> {
    let mut found = Found::default();
    for item in nft_objects(json)? {
        if let Some(chain) = item.get("chain") {
            let name = chain.get("name").and_then(Value::as_str);
            found.iface_chain |= name == Some(names.iface_chain.as_str());
            found.mac_chain |= name == Some(names.mac_chain.as_str());
        }
        if let Some(rule) = item.get("rule")
            && rule.get("chain").and_then(Value::as_str) == Some(BASE_CHAIN)
            && rule.get("comment").and_then(Value::as_str) == Some(names.comment.as_str())
            && let Some(handle) = rule.get("handle").and_then(Value::as_u64)
        {
            found.jumps.push(handle);
        }
    }
    Ok(found)
}

fn chain(name: &str) -> Value {
    json!({"family": FAMILY, "table": TABLE, "name": name})
}

fn rule(names: &Names, chain: &str, expr: Value) -> Value {
    json!({"add": {"rule": {
        "family": FAMILY,
        "table": TABLE,
        "chain": chain,
        "expr": expr,
        "comment": names.comment,
    }}})
}

fn delete_jump(handle: u64) -> Value {
    json!({"delete": {"rule": {
        "family": FAMILY, "table": TABLE, "chain": BASE_CHAIN, "handle": handle,
    }}})
}

fn setup_batch(names: &Names, host_iface: &str, mac: &str, stale: &[u64]) -> String {
    let mut cmds = vec![
        json!({"add": {"table": {"family": FAMILY, "name": TABLE}}}),
        json!({"add": {"chain": {
            "family": FAMILY, "table": TABLE, "name": BASE_CHAIN,
            "type": "filter", "hook": "prerouting", "prio": -300, "policy": "accept",
        }}}),
        json!({"add": {"chain": chain(&names.iface_chain)}}),
        json!({"add": {"chain": chain(&names.mac_chain)}}),
        json!({"flush": {"chain": chain(&names.iface_chain)}}),
        json!({"flush": {"chain": chain(&names.mac_chain)}}),
    ];
    cmds.extend(stale.iter().map(|h| delete_jump(*h)));
    cmds.push(rule(
        names,
        BASE_CHAIN,
        json!([
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": host_iface}},
            {"jump": {"target": names.iface_chain}},
        ]),
    ));
    cmds.push(rule(
        names,
        &names.iface_chain,
        json!([{"jump": {"target": names.mac_chain}}]),
    ));
    cmds.push(rule(
        names,
        &names.mac_chain,
        json!([
            {"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "saddr"}}, "right": mac}},
            {"return": null},
        ]),
    ));
    cmds.push(rule(names, &names.mac_chain, json!([{"drop": null}])));
    json!({ "nftables": cmds }).to_string()
}

/// The jump rules first (a chain something jumps to cannot go), then the attachment's chain,
/// whose rule is the only jump to the MAC chain, then that. None when nothing is left.
fn teardown_batch(names: &Names, found: &Found) -> Option<String> {
    let mut cmds: Vec<Value> = found.jumps.iter().map(|h| delete_jump(*h)).collect();
    if found.iface_chain {
        cmds.push(json!({"delete": {"chain": chain(&names.iface_chain)}}));
    }
    if found.mac_chain {
        cmds.push(json!({"delete": {"chain": chain(&names.mac_chain)}}));
    }
    (!cmds.is_empty()).then(|| json!({ "nftables": cmds }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spoofcheck_names_are_the_reference_ones() {
        let n = Names::new("ctr1-eth0");
        assert_eq!(n.iface_chain, "cni-br-iface-ctr1-eth0");
        assert_eq!(n.mac_chain, "cni-br-iface-ctr1-eth0-mac");
        assert_eq!(n.comment, "macspoofchk-ctr1-eth0");
    }

    #[test]
    fn spoofcheck_batches() {
        let n = Names::new("c-eth0");
        let setup: Value =
            serde_json::from_str(&setup_batch(&n, "veth1", "0a:58:00:00:00:01", &[7])).unwrap();
        let cmds = setup["nftables"].as_array().unwrap();
        assert_eq!(cmds.len(), 11);
        assert_eq!(cmds[1]["add"]["chain"]["prio"], -300);
        assert_eq!(cmds[6]["delete"]["rule"]["handle"], 7);
        let jump = &cmds[7]["add"]["rule"];
        assert_eq!(jump["chain"], "PREROUTING");
        assert_eq!(jump["expr"][0]["match"]["right"], "veth1");
        assert_eq!(jump["expr"][1]["jump"]["target"], "cni-br-iface-c-eth0");
        assert_eq!(jump["comment"], "macspoofchk-c-eth0");
        assert_eq!(
            cmds[9]["add"]["rule"]["expr"][0]["match"]["right"],
            "0a:58:00:00:00:01"
        );
        assert!(cmds[10]["add"]["rule"]["expr"][0].get("drop").is_some());

        assert_eq!(teardown_batch(&n, &Found::default()), None);
        let all = Found {
            jumps: vec![3, 9],
            iface_chain: true,
            mac_chain: true,
        };
        let td: Value = serde_json::from_str(&teardown_batch(&n, &all).unwrap()).unwrap();
        let cmds = td["nftables"].as_array().unwrap();
        assert_eq!(cmds.len(), 4);
        assert_eq!(cmds[1]["delete"]["rule"]["handle"], 9);
        assert_eq!(cmds[2]["delete"]["chain"]["name"], "cni-br-iface-c-eth0");
        assert_eq!(
            cmds[3]["delete"]["chain"]["name"],
            "cni-br-iface-c-eth0-mac"
        );
    }

    #[test]
    fn spoofcheck_listing_parse() {
        let n = Names::new("c-eth0");
        let listing = json!({"nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "bridge", "name": "nat", "handle": 1}},
            {"chain": {"family": "bridge", "table": "nat", "name": "PREROUTING", "handle": 1}},
            {"chain": {"family": "bridge", "table": "nat", "name": "cni-br-iface-c-eth0", "handle": 2}},
            {"rule": {"chain": "PREROUTING", "handle": 4, "comment": "macspoofchk-c-eth0"}},
            {"rule": {"chain": "PREROUTING", "handle": 5, "comment": "macspoofchk-c-eth1"}},
            {"rule": {"chain": "cni-br-iface-c-eth0", "handle": 6, "comment": "macspoofchk-c-eth0"}},
        ]});
        let found = parse_found(&listing.to_string(), &n).unwrap();
        assert_eq!(
            found,
            Found {
                jumps: vec![4],
                iface_chain: true,
                mac_chain: false
            }
        );
        assert!(parse_found("{}", &n).is_err());
    }
}
