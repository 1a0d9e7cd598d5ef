//! The host-local configuration: range sets from every source, requested addresses, routes,
//! `dataDir` and `resolvConf`, merged and validated in the reference's order.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::Value;

use super::common::{self, ArgsIps};
use super::range::{RangeSet, RawRange, canonical, parse_ip};
use crate::cni::result::{Dns, Route};
use crate::cni::{CniError, CniResult, Request};

/// Where reservations live unless `dataDir` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNet {
    #[serde(default)]
    ipam: Option<RawIpam>,
    #[serde(default)]
    runtime_config: Option<RawRuntime>,
    #[serde(default)]
    args: Option<ArgsIps>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    /// The single range of old configurations: top-level `subnet`, `rangeStart`, ...
    #[serde(flatten)]
    legacy: RawRange,
    #[serde(default)]
    routes: Option<Vec<Value>>,
    #[serde(default)]
    data_dir: Option<String>,
    #[serde(default)]
    resolv_conf: Option<String>,
    #[serde(default)]
    ranges: Option<Vec<Vec<RawRange>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRuntime {
    #[serde(default)]
    ip_ranges: Option<Vec<Vec<RawRange>>>,
    #[serde(default)]
    ips: Option<Vec<String>>,
}

/// A validated host-local configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The network name: the data directory's subdirectory.
    pub name: String,
    pub data_dir: PathBuf,
    /// Range sets in allocation order; the index is the `last_reserved_ip.<N>` suffix.
    pub ranges: Vec<RangeSet>,
    /// Specific addresses asked for (`CNI_ARGS` `IP`, `args.cni.ips`, `runtimeConfig.ips`).
    pub requested: Vec<IpAddr>,
    pub routes: Vec<Route>,
    pub resolv_conf: Option<PathBuf>,
}

impl Config {
    pub fn load(req: &Request) -> CniResult<Config> {
        let raw: RawNet = req.decode()?;
        let ipam = common::require_ipam(raw.ipam)?;
        let runtime = raw.runtime_config.unwrap_or_default();

        let mut requested = Vec::new();
        let cni_args = req.cni_args(&["IP"])?;
        if let Some(text) = cni_args.get("IP").filter(|t| !t.is_empty()) {
            let ip = requested_ip(text).map_err(|e| {
                CniError::internal(format!(
                    "ARGS: error parsing value of pair {:?}: {e}",
                    format!("IP={text}")
                ))
            })?;
            requested.push(ip);
        }
        let listed = raw.args.as_ref().map(ArgsIps::ips).unwrap_or_default();
        for text in listed.iter().chain(runtime.ips.iter().flatten()) {
            requested.push(requested_ip(text).map_err(CniError::config)?);
        }
        let mut unique = Vec::with_capacity(requested.len());
        for ip in requested {
            if !unique.contains(&ip) {
                unique.push(ip);
            }
        }

        let mut raw_sets: Vec<Vec<RawRange>> = runtime.ip_ranges.unwrap_or_default();
        if ipam.legacy.subnet.as_deref().is_some_and(|s| !s.is_empty()) {
            raw_sets.push(vec![ipam.legacy.clone()]);
        }
        raw_sets.extend(ipam.ranges.unwrap_or_default());
        if raw_sets.is_empty() {
            return Err(CniError::config("no IP ranges specified"));
        }
        let ranges = raw_sets
            .iter()
            .enumerate()
            .map(|(i, set)| {
                RangeSet::parse(set)
                    .map_err(|e| CniError::config(format!("invalid range set {i}: {e}")))
            })
            .collect::<CniResult<Vec<_>>>()?;
        common::check_family_limit(
            &req.config.cni_version,
            ranges.iter().map(|set| set.0[0].start),
        )?;
        for (i, a) in ranges.iter().enumerate() {
            if let Some(j) = ranges[i + 1..].iter().position(|b| a.overlaps(b)) {
                return Err(CniError::config(format!(
                    "range set {i} overlaps with {}",
                    i + j + 1
                )));
            }
        }

        let name = req.config.name.clone();
        check_network_name(&name)?;
        let data_dir = ipam
            .data_dir
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| DEFAULT_DATA_DIR.to_string());
        Ok(Config {
            name,
            data_dir: PathBuf::from(data_dir),
            ranges,
            requested: unique,
            routes: common::routes(ipam.routes.as_deref())?,
            resolv_conf: ipam
                .resolv_conf
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        })
    }

    /// The network's directory under `dataDir`.
    pub fn network_dir(&self) -> PathBuf {
        self.data_dir.join(&self.name)
    }

    /// The DNS settings from `resolvConf`, if configured.
    pub fn dns(&self) -> CniResult<Dns> {
        match &self.resolv_conf {
            None => Ok(Dns::default()),
            Some(path) => std::fs::read_to_string(path)
                .map(|text| parse_resolv_conf(&text))
                .map_err(|e| CniError::internal(format!("open {}: {e}", path.display()))),
        }
    }
}

/// The name becomes a directory under `dataDir`: it must stay one component inside it.
fn check_network_name(name: &str) -> CniResult<()> {
    if name.is_empty() || name.contains(['/', '\0']) || name.contains("..") || name == "." {
        return Err(
            CniError::config("invalid network name for a data directory").with_details(name),
        );
    }
    Ok(())
}

/// `<ip>` or `<ip>/<prefix>` (the prefix is ignored), as the reference's `ip.IP` type reads it.
fn requested_ip(text: &str) -> Result<IpAddr, String> {
    if text.is_empty() {
        return Err("cannot understand ip: empty address".into());
    }
    let ip = if text.contains('/') {
        text.parse::<IpNetwork>().ok().map(|n| canonical(n.ip()))
    } else {
        parse_ip(text)
    };
    ip.ok_or_else(|| format!("invalid IP address {text}"))
}

/// `nameserver`, `domain`, `search` and `options` lines; `#` and `;` start comments.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines().map(str::trim) {
        if line.starts_with(['#', ';']) {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [keyword, first, ..] = fields[..] else {
            continue;
        };
        let rest = fields[1..].iter().map(|s| s.to_string());
        match keyword {
            "nameserver" => dns.nameservers.push(first.to_string()),
            "domain" => dns.domain = first.to_string(),
            "search" => dns.search.extend(rest),
            "options" => dns.options.extend(rest),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::config::NetConf;
    use crate::cni::{Command, Env};

    fn request(config: &str, cni_args: &str) -> Request {
        Request {
            command: Command::Add,
            env: Env {
                args: cni_args.into(),
                ..Env::default()
            },
            stdin: config.as_bytes().to_vec(),
            config: serde_json::from_str::<NetConf>(config).unwrap(),
        }
    }

    fn load(config: &str) -> CniResult<Config> {
        Config::load(&request(config, ""))
    }

    fn err(config: &str) -> (u32, String) {
        let e = load(config).unwrap_err();
        (e.code, e.msg)
    }

    #[test]
    fn legacy_range_is_prepended_and_runtime_ranges_go_first() {
        let conf = load(
            r#"{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"ipRanges":[[{"subnet":"10.9.0.0/24"}]]},
                "ipam":{"type":"host-local","subnet":"10.1.0.0/24","rangeStart":"10.1.0.10","gateway":"10.1.0.254",
                "ranges":[[{"subnet":"10.2.0.0/24"}],[{"subnet":"fd00::/64"}]]}}"#,
        )
        .unwrap();
        let sets: Vec<String> = conf.ranges.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            sets,
            [
                "10.9.0.1-10.9.0.254",
                "10.1.0.10-10.1.0.254",
                "10.2.0.1-10.2.0.254",
                "fd00::1-fd00::ffff:ffff:ffff:ffff"
            ]
        );
        assert_eq!(conf.ranges[1].0[0].gateway.to_string(), "10.1.0.254");
        assert_eq!(conf.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(conf.network_dir(), PathBuf::from("/var/lib/cni/networks/n"));
    }

    #[test]
    fn requested_addresses_from_every_source_in_order() {
        let req = request(
            r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","dataDir":"/tmp/x",
                "ranges":[[{"subnet":"10.1.0.0/24"}]]},
                "args":{"cni":{"ips":["10.1.0.7/24","10.1.0.5"]}},
                "runtimeConfig":{"ips":["::ffff:10.1.0.8","10.1.0.5"]}}"#,
            "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.1.0.9",
        );
        let conf = Config::load(&req).unwrap();
        let got: Vec<String> = conf.requested.iter().map(|ip| ip.to_string()).collect();
        assert_eq!(got, ["10.1.0.9", "10.1.0.7", "10.1.0.5", "10.1.0.8"]);
        assert_eq!(conf.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn bad_requested_addresses() {
        let base =
            r#"{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}]]}"#;
        let e = Config::load(&request(&format!("{base}}}"), "IP=10.1.0.300")).unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str()),
            (
                999,
                r#"ARGS: error parsing value of pair "IP=10.1.0.300": invalid IP address 10.1.0.300"#
            )
        );
        let e = Config::load(&request(&format!("{base}}}"), "MAC=x")).unwrap_err();
        assert!(e.msg.starts_with("ARGS: unknown args"), "{e}");
        // An empty IP= asks for nothing.
        assert!(
            Config::load(&request(&format!("{base}}}"), "IP="))
                .unwrap()
                .requested
                .is_empty()
        );
        let (code, msg) = err(&format!(r#"{base},"runtimeConfig":{{"ips":["nope"]}}}}"#));
        assert_eq!((code, msg.as_str()), (7, "invalid IP address nope"));
        let (code, msg) = err(&format!(r#"{base},"args":{{"cni":{{"ips":[""]}}}}}}"#));
        assert_eq!(
            (code, msg.as_str()),
            (7, "cannot understand ip: empty address")
        );
    }

    #[test]
    fn validation_errors_in_reference_order() {
        let cases = [
            (r#"{"name":"n"}"#, "IPAM config missing 'ipam' key"),
            (
                r#"{"name":"n","ipam":{"type":"host-local"}}"#,
                "no IP ranges specified",
            ),
            (
                r#"{"name":"n","ipam":{"ranges":[]}}"#,
                "no IP ranges specified",
            ),
            (
                r#"{"name":"n","ipam":{"ranges":[[]]}}"#,
                "invalid range set 0: empty range set",
            ),
            (
                r#"{"name":"n","ipam":{"subnet":"10.0.0.0/8","ranges":[[{"subnet":"10.1.0.0/16"}]]}}"#,
                "CNI version  does not support more than 1 address per family",
            ),
            (
                r#"{"cniVersion":"0.4.0","name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/8"}],[{"subnet":"10.1.0.0/16"}]]}}"#,
                "range set 0 overlaps with 1",
            ),
            (
                r#"{"cniVersion":"0.4.0","name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.1.0.0/33"}]]}}"#,
                "invalid range set 1: invalid CIDR address: 10.1.0.0/33",
            ),
            (
                r#"{"name":"n","ipam":{"ranges":"x"}}"#,
                "failed to load netconf",
            ),
            (
                r#"{"name":"n","ipam":{"ranges":[[{"subnet":"10.1.0.0/16"}]],"routes":[{"dst":"x"}]}}"#,
                "invalid routes",
            ),
            (
                r#"{"name":"a..b","ipam":{"ranges":[[{"subnet":"10.1.0.0/16"}]]}}"#,
                "invalid network name for a data directory",
            ),
        ];
        for (config, msg) in cases {
            let (code, got) = err(config);
            assert_eq!(code, 7, "{config}");
            assert!(got.starts_with(msg), "{config}: {got}");
        }
        // 0.2.0 takes one address of each family.
        load(r#"{"cniVersion":"0.2.0","name":"n","ipam":{"ranges":[[{"subnet":"10.1.0.0/16"}],[{"subnet":"fd00::/64"}]]}}"#)
            .unwrap();
    }

    #[test]
    fn resolv_conf_lines() {
        let dns = parse_resolv_conf(
            "# comment\n; also\nnameserver 10.0.0.1\n  nameserver   fd00::1  \ndomain a.example b\n\
             search x.example y.example\noptions ndots:2 edns0\nsearch z.example\nnameserver\nbogus 1\n",
        );
        assert_eq!(dns.nameservers, ["10.0.0.1", "fd00::1"]);
        assert_eq!(dns.domain, "a.example");
        assert_eq!(dns.search, ["x.example", "y.example", "z.example"]);
        assert_eq!(dns.options, ["ndots:2", "edns0"]);
        assert!(parse_resolv_conf("").is_empty());
    }
}
