//! bandwidth: token-bucket shaping of a container's veth. Traffic towards the container
//! ("ingress") is shaped by a root `tbf` on the host end of the veth; traffic from the
//! container ("egress") is redirected from the host end's `ingress` qdisc by a match-all `u32`
//! filter to an `ifb` device (`bwp` + 12 hex digits of sha512(network + container ID)) whose
//! root `tbf` shapes it. The host end is the veth peer of `CNI_IFNAME`, and must be listed in
//! the previous result without a sandbox.
//!
//! As the reference (containernetworking/plugins v1.9.1 `plugins/meta/bandwidth`): the keys
//! (top level, or `runtimeConfig.bandwidth` when no top-level key is there; rates in bit/s,
//! bursts in bits), their validation, the tbf parameters (rate/8 bytes per second, buffer =
//! ticks of burst/rate, limit = 25 ms at the rate + burst), the ifb name and settings (host
//! MTU, up, queue length 0) and its entry in the result, the filter (prio 1, all protocols,
//! class 1:1, mirred egress redirect), and the error texts. v1.9.1 has no
//! `shapedSubnets`/`unshapedSubnets` (added in v1.5 and reverted before v1.6), so neither has
//! this plugin.
//!
//! Deliberately different: DEL also removes the qdiscs from the host veth when it still
//! exists (the reference leaves them to die with the veth); the ifb is labelled with its
//! network and container in its alias, and GC removes this network's ifbs of attachments no
//! longer valid; CHECK compares the root tbf (the reference stops at the first qdisc that is
//! not a tbf, so a missing one passes), also wants the redirect to the ifb, and accepts a
//! bucket read back capped as older kernels report it; an ADD that
//! fails after creating the ifb removes it; the host veth must have the container's interface
//! as its peer, not only its index; the filter carries one mirred action (the reference's
//! library adds a second, identical one that never runs).

use std::collections::BTreeSet;

use serde::{Deserialize, Deserializer};

use crate::cni::result::Interface;
use crate::cni::{Applet, CniError, CniOutput, CniResult, Request};
use crate::iface::in_netns;
use crate::netlink::{
    ETH_P_ALL, INGRESS_HANDLE, Netlink, TC_H_INGRESS, TC_H_ROOT, TCA_EGRESS_REDIR, Tbf, format_mac,
    tc_handle,
};
use crate::netns::{NetNs, NetnsError};
use crate::plugins::shared::{self, null_default};

pub const APPLET: Applet = Applet {
    name: "bandwidth",
    min_version: "0.3.0",
    run,
};

const IFB_PREFIX: &str = "bwp";
const IFB_NAME_LEN: usize = 15;
const LATENCY_MS: f64 = 25.0;
const TIME_UNITS_PER_SEC: f64 = 1_000_000.0;
/// The alias that marks an ifb as this plugin's: `cni-bandwidth/<network>/<container ID>`.
const ALIAS_PREFIX: &str = "cni-bandwidth/";
const CHAINED_ONLY: &str = "must be called as chained plugin";

fn run(req: &Request) -> CniResult<Option<CniOutput>> {
    shared::dispatch(req, add, del, check, gc, shared::nothing)
}

// ------------------------------------------------------------------ configuration

/// Rates in bit/s, bursts in bits; 0 is no limit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bandwidth {
    #[serde(default, deserialize_with = "null_default")]
    ingress_rate: u64,
    #[serde(default, deserialize_with = "null_default")]
    ingress_burst: u64,
    #[serde(default, deserialize_with = "null_default")]
    egress_rate: u64,
    #[serde(default, deserialize_with = "null_default")]
    egress_burst: u64,
}

impl Bandwidth {
    fn is_zero(&self) -> bool {
        *self == Bandwidth::default()
    }

    fn ingress(&self) -> Option<(u64, u64)> {
        (self.ingress_rate > 0 && self.ingress_burst > 0)
            .then_some((self.ingress_rate, self.ingress_burst))
    }

    fn egress(&self) -> Option<(u64, u64)> {
        (self.egress_rate > 0 && self.egress_burst > 0)
            .then_some((self.egress_rate, self.egress_burst))
    }
}

/// A key that is present, even as `null` (Go then allocates the embedded entry).
fn present<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Option<u64>>, D::Error> {
    Ok(Some(Option::<u64>::deserialize(de)?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    #[serde(default, deserialize_with = "present")]
    ingress_rate: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    ingress_burst: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    egress_rate: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    egress_burst: Option<Option<u64>>,
    #[serde(default, deserialize_with = "null_default")]
    runtime_config: RuntimeConfig,
}

#[derive(Debug, Default, Deserialize)]
struct RuntimeConfig {
    #[serde(default)]
    bandwidth: Option<Bandwidth>,
}

/// The effective limits, validated; None when nothing is configured.
fn parse_conf(req: &Request) -> CniResult<Option<Bandwidth>> {
    let raw: RawConf = serde_json::from_slice(&req.stdin)
        .map_err(|e| CniError::internal(format!("failed to parse network configuration: {e}")))?;
    let top = [
        raw.ingress_rate,
        raw.ingress_burst,
        raw.egress_rate,
        raw.egress_burst,
    ];
    let bandwidth = if top.iter().any(Option::is_some) {
        let value = |v: Option<Option<u64>>| v.flatten().unwrap_or(0);
        Some(Bandwidth {
            ingress_rate: value(top[0]),
            ingress_burst: value(top[1]),
            egress_rate: value(top[2]),
            egress_burst: value(top[3]),
        })
    } else {
        raw.runtime_config.bandwidth
    };
    if let Some(bw) = bandwidth {
        validate(bw.ingress_rate, bw.ingress_burst)?;
        validate(bw.egress_rate, bw.egress_burst)?;
    }
    Ok(bandwidth)
}

fn validate(rate: u64, burst: u64) -> CniResult<()> {
    let msg = if burst == 0 && rate != 0 {
        "if rate is set, burst must also be set"
    } else if rate == 0 && burst != 0 {
        "if burst is set, rate must also be set"
    } else if burst / 8 >= u64::from(u32::MAX) {
        "burst cannot be more than 4GB"
    } else {
        return Ok(());
    };
    Err(CniError::internal(msg))
}

/// `bwp` + the first 12 hex digits of sha512(network name + container ID).
fn ifb_name(network: &str, container_id: &str) -> String {
    let mut name = format!(
        "{IFB_PREFIX}{}",
        crate::sha512::hex_digest(format!("{network}{container_id}").as_bytes())
    );
    name.truncate(IFB_NAME_LEN);
    name
}

fn ifb_alias(network: &str, container_id: &str) -> String {
    format!("{ALIAS_PREFIX}{network}/{container_id}")
}

// ------------------------------------------------------------------ tbf parameters

/// Go's `uint32(float64)` on amd64: truncation through int64, wrapping to 32 bits; values
/// outside int64 (and NaN) give 0.
fn go_u32(value: f64) -> u32 {
    if value.is_nan() || !(-9.223_372_036_854_775e18..9.223_372_036_854_775e18).contains(&value) {
        return 0;
    }
    (value as i64) as u32
}

/// Microseconds per scheduler tick, from `/proc/net/psched` as the reference's library
/// computes it.
fn tick_in_usec() -> CniResult<f64> {
    let text = std::fs::read_to_string("/proc/net/psched")
        .map_err(|e| CniError::internal(format!("reading /proc/net/psched: {e}")))?;
    let words: Vec<u64> = text
        .split_whitespace()
        .map(|w| u64::from_str_radix(w, 16))
        .collect::<Result<_, _>>()
        .map_err(|e| CniError::internal(format!("parsing /proc/net/psched: {e}")))?;
    let [mut t2us, us2t, clock_res, ..] = words[..] else {
        return Err(CniError::internal(
            "parsing /proc/net/psched: too few fields",
        ));
    };
    if clock_res == 1_000_000_000 {
        t2us = us2t;
    }
    let clock_factor = clock_res as f64 / TIME_UNITS_PER_SEC;
    Ok(t2us as f64 / us2t as f64 * clock_factor)
}

/// The reference's `createTBF` arithmetic.
fn tbf_params(rate_bits: u64, burst_bits: u64, tick: f64) -> Tbf {
    let rate = rate_bits / 8;
    let burst = (burst_bits / 8) as u32;
    let time = go_u32(f64::from(burst) * TIME_UNITS_PER_SEC / rate as f64);
    let buffer = go_u32(f64::from(time) * tick);
    let latency = TIME_UNITS_PER_SEC * (LATENCY_MS / 1000.0);
    let limit = go_u32(rate as f64 * latency / TIME_UNITS_PER_SEC).wrapping_add(burst);
    Tbf {
        rate,
        limit,
        buffer,
    }
}

/// The bucket size as kernels before 6.x report it back: they kept it in nanoseconds capped
/// at 2^32 - 1, so buckets of more than ~4.3 s read back smaller.
fn capped_buffer(buffer: u32) -> u32 {
    ((u64::from(buffer) << 6).min(u64::from(u32::MAX)) >> 6) as u32
}

// ------------------------------------------------------------------ the host veth

struct HostVeth {
    name: String,
    index: u32,
    mtu: u32,
}

/// The host end of `ifname`'s veth: its peer, here in the plugin's namespace, listed in the
/// previous result without a sandbox.
fn host_veth(nl: &Netlink, ns: &NetNs, ifname: &str, prev: &CniOutput) -> CniResult<HostVeth> {
    if prev.interfaces.is_empty() {
        return Err(CniError::internal("no interfaces provided"));
    }
    let container = in_netns(ns, |cnl| {
        cnl.link_by_name(ifname)
            .map_err(|e| CniError::internal(e.to_string()))
    });
    let (container_index, peer) = match container {
        Ok(Some(link)) if link.kind.as_deref() == Some("veth") => match link.peer_index {
            Some(peer) if peer > 0 => (link.index, peer),
            _ => {
                return Err(CniError::internal(format!(
                    "container interface {ifname} has no veth peer: no peer index"
                )));
            }
        },
        Ok(Some(_)) => {
            return Err(CniError::internal(format!(
                "container interface {ifname} has no veth peer: interface {ifname} was not a veth interface"
            )));
        }
        Ok(None) => {
            return Err(CniError::internal(format!(
                "container interface {ifname} has no veth peer: Link not found"
            )));
        }
        Err(e) => {
            return Err(CniError::internal(format!(
                "container interface {ifname} has no veth peer: {e}"
            )));
        }
    };
    let not_here = || CniError::internal(format!("veth peer with index {peer} is not in host ns"));
    let link = nl
        .link_by_index(peer)
        .map_err(|_| not_here())?
        .ok_or_else(not_here)?;
    // An index can repeat across namespaces: the link found must be the container's peer.
    if link.kind.as_deref() != Some("veth") || link.peer_index != Some(container_index) {
        return Err(not_here());
    }
    if !prev
        .interfaces
        .iter()
        .any(|i| i.sandbox.is_empty() && i.name == link.name)
    {
        return Err(CniError::internal(
            "no veth peer of container interface found in host ns",
        ));
    }
    Ok(HostVeth {
        name: link.name,
        index: link.index,
        mtu: link.mtu,
    })
}

fn open_host_netlink() -> CniResult<Netlink> {
    Netlink::open().map_err(CniError::internal)
}

// ------------------------------------------------------------------ verbs

fn add(req: &Request) -> CniResult<CniOutput> {
    let bandwidth = parse_conf(req)?;
    let prev = req.prev_result()?;
    let Some(mut result) = prev else {
        return Err(CniError::internal(CHAINED_ONLY));
    };
    let Some(bw) = bandwidth.filter(|b| !b.is_zero()) else {
        return Ok(result);
    };
    let tick = tick_in_usec()?;
    let ns = crate::plugins::shared::open_netns(&req.env.netns)?;
    let nl = open_host_netlink()?;
    let host = host_veth(&nl, &ns, &req.env.ifname, &result)?;

    if let Some((rate, burst)) = bw.ingress() {
        nl.add_tbf(
            host.index,
            TC_H_ROOT,
            tc_handle(1, 0),
            &tbf_params(rate, burst, tick),
        )
        .map_err(|e| CniError::internal(format!("create qdisc: {e}")))?;
    }
    if let Some((rate, burst)) = bw.egress() {
        let name = ifb_name(&req.config.name, &req.env.container_id);
        nl.create_ifb(&name, host.mtu, Some(0), true)
            .map_err(|e| CniError::internal(format!("adding link: {e}")))?;
        let shaped = shape_egress(&nl, &host, &name, tbf_params(rate, burst, tick), req);
        let ifb = match shaped {
            Ok(ifb) => ifb,
            Err(e) => {
                undo_egress(&nl, &host, &name);
                return Err(e);
            }
        };
        result.interfaces.push(ifb);
    }
    Ok(result)
}

/// Labels the new ifb, redirects the host veth's incoming traffic to it and shapes it.
fn shape_egress(
    nl: &Netlink,
    host: &HostVeth,
    name: &str,
    tbf: Tbf,
    req: &Request,
) -> CniResult<Interface> {
    let ifb = nl
        .link_by_name(name)
        .map_err(CniError::internal)?
        .ok_or_else(|| CniError::internal(format!("get ifb device: {name}: Link not found")))?;
    nl.set_alias(
        ifb.index,
        &ifb_alias(&req.config.name, &req.env.container_id),
    )
    .map_err(CniError::internal)?;
    nl.add_ingress_qdisc(host.index)
        .map_err(|e| CniError::internal(format!("create ingress qdisc: {e}")))?;
    nl.add_redirect_filter(
        host.index,
        INGRESS_HANDLE,
        1,
        ETH_P_ALL,
        tc_handle(1, 1),
        ifb.index,
    )
    .map_err(|e| CniError::internal(format!("add filter: {e}")))?;
    nl.add_tbf(ifb.index, TC_H_ROOT, tc_handle(1, 0), &tbf)
        .map_err(|e| CniError::internal(format!("create ifb qdisc: create qdisc: {e}")))?;
    Ok(Interface {
        name: name.to_string(),
        mac: ifb.mac.map(format_mac).unwrap_or_default(),
        ..Interface::default()
    })
}

fn undo_egress(nl: &Netlink, host: &HostVeth, name: &str) {
    if let Err(e) = delete_ifb(nl, name) {
        tracing::warn!("removing {name} after a failed ADD: {e}");
    }
    if let Err(e) = nl.del_qdisc(host.index, TC_H_INGRESS, INGRESS_HANDLE)
        && e.errno() != libc::ENOENT
        && e.errno() != libc::EINVAL
    {
        tracing::warn!(
            "removing the ingress qdisc of {} after a failed ADD: {e}",
            host.name
        );
    }
}

fn delete_ifb(nl: &Netlink, name: &str) -> CniResult<()> {
    match nl.link_by_name(name).map_err(CniError::internal)? {
        None => Ok(()),
        Some(link) => match nl.delete_link(link.index) {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == libc::ENODEV => Ok(()),
            Err(e) => Err(CniError::internal(e)),
        },
    }
}

fn del(req: &Request) -> CniResult<()> {
    let bandwidth = parse_conf(req)?;
    let nl = open_host_netlink()?;
    delete_ifb(&nl, &ifb_name(&req.config.name, &req.env.container_id))?;
    if bandwidth.is_some_and(|b| !b.is_zero()) {
        remove_host_qdiscs(&nl, req, bandwidth.unwrap_or_default());
    }
    Ok(())
}

/// Takes this plugin's qdiscs off the host veth, when it can still be found (the previous
/// result is there and the container's interface still exists). Failures are only logged:
/// the qdiscs go away with the veth anyway.
fn remove_host_qdiscs(nl: &Netlink, req: &Request, bw: Bandwidth) {
    let Ok(Some(prev)) = req.prev_result() else {
        return;
    };
    let ns = match NetNs::open(&req.env.netns) {
        Ok(ns) => ns,
        Err(NetnsError::NotFound(_)) => return,
        Err(e) => {
            tracing::debug!("no netns for the qdisc cleanup: {e}");
            return;
        }
    };
    let Ok(host) = host_veth(nl, &ns, &req.env.ifname, &prev) else {
        return;
    };
    let Ok(qdiscs) = nl.qdiscs(host.index) else {
        return;
    };
    for q in qdiscs {
        let ours = (bw.ingress().is_some()
            && q.parent == TC_H_ROOT
            && q.kind == "tbf"
            && q.handle == tc_handle(1, 0))
            || (bw.egress().is_some() && q.kind == "ingress" && q.handle == INGRESS_HANDLE);
        if ours && let Err(e) = nl.del_qdisc(host.index, q.parent, q.handle) {
            tracing::warn!("removing qdisc {:x} from {}: {e}", q.handle, host.name);
        }
    }
}

fn check(req: &Request) -> CniResult<()> {
    let bandwidth = parse_conf(req)?;
    let prev = req
        .prev_result()?
        .ok_or_else(|| CniError::internal("must be called as a chained plugin"))?;
    let ns = crate::plugins::shared::open_netns(&req.env.netns)?;
    let nl = open_host_netlink()?;
    let host = host_veth(&nl, &ns, &req.env.ifname, &prev)?;
    let Some(bw) = bandwidth.filter(|b| !b.is_zero()) else {
        return Ok(());
    };
    let tick = tick_in_usec()?;
    if let Some((rate, burst)) = bw.ingress() {
        check_tbf(&nl, host.index, tbf_params(rate, burst, tick))?;
    }
    if let Some((rate, burst)) = bw.egress() {
        let name = ifb_name(&req.config.name, &req.env.container_id);
        let ifb = nl
            .link_by_name(&name)
            .map_err(|e| CniError::internal(format!("get ifb device: {e}")))?
            .ok_or_else(|| CniError::internal("get ifb device: Link not found"))?;
        check_tbf(&nl, ifb.index, tbf_params(rate, burst, tick))?;
        // No ingress qdisc at all reads as no filters.
        let filters = nl.filters(host.index, INGRESS_HANDLE).unwrap_or_default();
        if !filters
            .iter()
            .any(|f| f.mirred.contains(&(TCA_EGRESS_REDIR, ifb.index)))
        {
            return Err(CniError::internal(format!(
                "no redirect from {} to {name}",
                host.name
            )));
        }
    }
    Ok(())
}

fn check_tbf(nl: &Netlink, index: u32, want: Tbf) -> CniResult<()> {
    let qdiscs = nl.qdiscs(index).map_err(CniError::internal)?;
    let Some(tbf) = qdiscs
        .iter()
        .find(|q| q.parent == TC_H_ROOT)
        .and_then(|q| q.tbf)
    else {
        return Err(CniError::internal("Failed to find qdisc"));
    };
    let msg = if tbf.rate != want.rate {
        "Rate doesn't match"
    } else if tbf.limit != want.limit {
        "Limit doesn't match"
    } else if tbf.buffer != want.buffer && tbf.buffer != capped_buffer(want.buffer) {
        "Buffer doesn't match"
    } else {
        return Ok(());
    };
    Err(CniError::internal(msg))
}

/// Deletes this network's ifbs (found by their alias) whose container is not among the
/// valid attachments.
fn gc(req: &Request) -> CniResult<()> {
    let Some(keep) = req.config.attachments_to_keep() else {
        return Ok(());
    };
    let keep: BTreeSet<&str> = keep.iter().map(|a| a.container_id.as_str()).collect();
    let prefix = format!("{ALIAS_PREFIX}{}/", req.config.name);
    let nl = open_host_netlink()?;
    let links = nl.links().map_err(CniError::internal)?;
    let mut failures = Vec::new();
    for link in links {
        if link.kind.as_deref() != Some("ifb") {
            continue;
        }
        let Some(cid) = link.alias.as_deref().and_then(|a| a.strip_prefix(&prefix)) else {
            continue;
        };
        if keep.contains(cid) {
            continue;
        }
        if let Err(e) = nl.delete_link(link.index)
            && e.errno() != libc::ENODEV
        {
            failures.push(format!("{}: {e}", link.name));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CniError::internal(format!(
            "failed to delete ifb devices: {}",
            failures.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_ifb_name_is_the_references_hash() {
        let name = ifb_name("net", "cid");
        assert_eq!(name.len(), 15);
        assert!(name.starts_with("bwp"));
        let out = std::process::Command::new("sh")
            .args(["-c", "printf %s netcid | sha512sum"])
            .output()
            .unwrap();
        let hex = String::from_utf8_lossy(&out.stdout);
        assert_eq!(&name[3..], &hex[..12]);
    }

    #[test]
    fn bandwidth_tbf_arithmetic_matches_the_reference() {
        // tick = 15.625 us on kernels with 1 GHz clock resolution (psched 3e8 40 f4240 ...).
        let tick = 1000.0 / 64.0;
        // 1 Mbit/s, 10 kbit burst: 125000 B/s, 1250 B; 10000 us -> 156250 ticks.
        let t = tbf_params(1_000_000, 10_000, tick);
        assert_eq!((t.rate, t.limit, t.buffer), (125_000, 3125 + 1250, 156_250));
        // Go truncates like this too: 8 bit/s with a huge burst wraps around.
        let t = tbf_params(8, 8 * 4_000_000_000, tick);
        assert_eq!(t.rate, 1);
        assert_eq!(t.buffer, go_u32(f64::from(go_u32(4e15)) * tick));
        assert_eq!(go_u32(f64::INFINITY), 0);
        assert_eq!(go_u32(4_294_967_297.0), 1);
        assert_eq!(capped_buffer(u32::MAX), u32::MAX >> 6);
        assert_eq!(capped_buffer(1000), 1000);
    }

    #[test]
    fn bandwidth_rate_and_burst_go_together() {
        assert!(validate(0, 0).is_ok());
        assert!(validate(1000, 10).is_ok());
        assert_eq!(
            validate(1000, 0).unwrap_err().msg,
            "if rate is set, burst must also be set"
        );
        assert_eq!(
            validate(0, 10).unwrap_err().msg,
            "if burst is set, rate must also be set"
        );
        assert_eq!(
            validate(1, 8 * u64::from(u32::MAX)).unwrap_err().msg,
            "burst cannot be more than 4GB"
        );
    }
}
