//! The ADD result in one internal shape (the 1.1.0 superset), read from and written as any spec
//! version with the Go library's conversion rules.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::{Map, Value, json};

use super::error::{CniError, CniResult};
use super::version::{self, Family};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CniOutput {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    pub sandbox: String,
    pub socket_path: String,
    pub pci_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// The address with its prefix length; host bits are kept (`10.1.0.5/16`).
    pub address: IpNetwork,
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`; absent in IPAM results.
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    pub mtu: u32,
    pub advmss: u32,
    pub priority: u32,
    /// `table` and `scope` may be an explicit 0, so absence is kept apart.
    pub table: Option<i64>,
    pub scope: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

impl Route {
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: 0,
            advmss: 0,
            priority: 0,
            table: None,
            scope: None,
        }
    }
}

fn decode_error(what: impl std::fmt::Display) -> CniError {
    CniError::internal(format!("failed to decode result: {what}"))
}

fn str_field<'a>(obj: &'a Value, key: &str) -> CniResult<&'a str> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(decode_error(format!(
            "{key}: expected a string, got {other}"
        ))),
    }
}

fn uint_field(obj: &Value, key: &str) -> CniResult<Option<i64>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| decode_error(format!("{key}: expected an integer, got {v}"))),
    }
}

fn array<'a>(obj: &'a Value, key: &str) -> CniResult<&'a [Value]> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(decode_error(format!(
            "{key}: expected an array, got {other}"
        ))),
    }
}

/// Parses `addr/prefix`, keeping host bits.
pub fn parse_cidr(text: &str) -> CniResult<IpNetwork> {
    text.parse()
        .ok()
        .filter(|_| text.contains('/'))
        .ok_or_else(|| decode_error(format!("invalid CIDR address: {text}")))
}

fn parse_ip(text: &str) -> CniResult<Option<IpAddr>> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| decode_error(format!("invalid IP address: {text}")))
}

fn uint(value: Option<i64>) -> u32 {
    value.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

fn parse_route(obj: &Value) -> CniResult<Route> {
    Ok(Route {
        dst: parse_cidr(str_field(obj, "dst")?)?,
        gw: parse_ip(str_field(obj, "gw")?)?,
        mtu: uint(uint_field(obj, "mtu")?),
        advmss: uint(uint_field(obj, "advmss")?),
        priority: uint(uint_field(obj, "priority")?),
        table: uint_field(obj, "table")?,
        scope: uint_field(obj, "scope")?,
    })
}

/// Parses routes in any version's shape (used by IPAM configs too).
pub fn parse_routes(items: &[Value]) -> CniResult<Vec<Route>> {
    items.iter().map(parse_route).collect()
}

fn parse_dns(obj: &Value) -> CniResult<Dns> {
    match obj.get("dns") {
        None | Some(Value::Null) => Ok(Dns::default()),
        Some(dns) => serde_json::from_value(dns.clone()).map_err(decode_error),
    }
}

impl CniOutput {
    /// Reads a result of any spec version; a missing `cniVersion` means `default_version`.
    pub fn from_json(value: &Value, default_version: &str) -> CniResult<CniOutput> {
        if !value.is_object() {
            return Err(decode_error("not a JSON object"));
        }
        let declared = str_field(value, "cniVersion")?;
        let result_version = if declared.is_empty() {
            default_version
        } else {
            declared
        };
        let mut out = CniOutput {
            dns: parse_dns(value)?,
            ..CniOutput::default()
        };
        if version::family(result_version)? == Family::Legacy {
            for key in ["ip4", "ip6"] {
                let Some(ip) = value.get(key).filter(|v| !v.is_null()) else {
                    continue;
                };
                out.ips.push(IpConfig {
                    address: parse_cidr(str_field(ip, "ip")?)?,
                    gateway: parse_ip(str_field(ip, "gateway")?)?,
                    interface: None,
                });
                out.routes.extend(parse_routes(array(ip, "routes")?)?);
            }
            return Ok(out);
        }
        for iface in array(value, "interfaces")? {
            out.interfaces.push(Interface {
                name: str_field(iface, "name")?.to_string(),
                mac: str_field(iface, "mac")?.to_string(),
                mtu: uint(uint_field(iface, "mtu")?),
                sandbox: str_field(iface, "sandbox")?.to_string(),
                socket_path: str_field(iface, "socketPath")?.to_string(),
                pci_id: str_field(iface, "pciID")?.to_string(),
            });
        }
        for ip in array(value, "ips")? {
            let interface = uint_field(ip, "interface")?
                .map(|i| usize::try_from(i).map_err(|_| decode_error("negative interface index")))
                .transpose()?;
            out.ips.push(IpConfig {
                address: parse_cidr(str_field(ip, "address")?)?,
                gateway: parse_ip(str_field(ip, "gateway")?)?,
                interface,
            });
        }
        out.routes = parse_routes(array(value, "routes")?)?;
        Ok(out)
    }

    /// Writes the result in `target` version's shape, as `types.PrintResult` would.
    pub fn to_json(&self, target: &str) -> CniResult<Value> {
        let mut obj = Map::new();
        obj.insert("cniVersion".into(), target.into());
        let family = version::family(target)?;
        if family == Family::Legacy {
            self.write_legacy(&mut obj)?;
        } else {
            self.write_current(&mut obj, family);
        }
        Ok(Value::Object(obj))
    }

    fn write_current(&self, obj: &mut Map<String, Value>, family: Family) {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|iface| {
                let mut o = Map::new();
                o.insert("name".into(), iface.name.clone().into());
                let mut text = |key: &str, value: &str| {
                    if !value.is_empty() {
                        o.insert(key.into(), value.into());
                    }
                };
                text("mac", &iface.mac);
                text("sandbox", &iface.sandbox);
                if family == Family::V1 {
                    text("socketPath", &iface.socket_path);
                    text("pciID", &iface.pci_id);
                    if iface.mtu > 0 {
                        o.insert("mtu".into(), iface.mtu.into());
                    }
                }
                Value::Object(o)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut o = Map::new();
                o.insert("address".into(), ip.address.to_string().into());
                if let Some(gw) = ip.gateway {
                    o.insert("gateway".into(), gw.to_string().into());
                }
                if let Some(index) = ip.interface {
                    o.insert("interface".into(), index.into());
                }
                if family == Family::V04 {
                    let v = if ip.address.is_ipv4() { "4" } else { "6" };
                    o.insert("version".into(), v.into());
                }
                Value::Object(o)
            })
            .collect();
        let routes: Vec<Value> = self.routes.iter().map(route_json).collect();
        for (key, list) in [("interfaces", interfaces), ("ips", ips), ("routes", routes)] {
            if !list.is_empty() {
                obj.insert(key.into(), Value::Array(list));
            }
        }
        // types040 always emits `dns` (a struct is never omitted by Go); 1.x omits an empty one.
        if family == Family::V04 || !self.dns.is_empty() {
            obj.insert("dns".into(), json!(self.dns));
        }
    }

    fn write_legacy(&self, obj: &mut Map<String, Value>) -> CniResult<()> {
        let first = |v4: bool| self.ips.iter().find(|ip| ip.address.is_ipv4() == v4);
        let (ip4, ip6) = (first(true), first(false));
        if ip4.is_none() && ip6.is_none() {
            return Err(CniError::internal("cannot convert: no valid IP addresses"));
        }
        for (key, ip, v4) in [("ip4", ip4, true), ("ip6", ip6, false)] {
            let Some(ip) = ip else { continue };
            let mut o = Map::new();
            o.insert("ip".into(), ip.address.to_string().into());
            if let Some(gw) = ip.gateway {
                o.insert("gateway".into(), gw.to_string().into());
            }
            let routes: Vec<Value> = self
                .routes
                .iter()
                .filter(|r| r.dst.is_ipv4() == v4)
                .map(|r| route_json(&Route::new(r.dst, r.gw)))
                .collect();
            if !routes.is_empty() {
                o.insert("routes".into(), Value::Array(routes));
            }
            obj.insert(key.into(), Value::Object(o));
        }
        obj.insert("dns".into(), json!(self.dns));
        Ok(())
    }
}

fn route_json(route: &Route) -> Value {
    let mut o = Map::new();
    o.insert("dst".into(), route.dst.to_string().into());
    if let Some(gw) = route.gw {
        o.insert("gw".into(), gw.to_string().into());
    }
    for (key, value) in [
        ("mtu", route.mtu),
        ("advmss", route.advmss),
        ("priority", route.priority),
    ] {
        if value > 0 {
            o.insert(key.into(), value.into());
        }
    }
    for (key, value) in [("table", route.table), ("scope", route.scope)] {
        if let Some(v) = value {
            o.insert(key.into(), v.into());
        }
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_v1() -> Value {
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "cni0", "mac": "0a:00:00:00:00:01"},
                {"name": "veth1", "mac": "0a:00:00:00:00:02", "mtu": 1400},
                {"name": "eth0", "mac": "0a:00:00:00:00:03", "sandbox": "/run/netns/x",
                 "socketPath": "/s.sock", "pciID": "0000:04:00.5"}
            ],
            "ips": [
                {"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2},
                {"address": "10.2.0.5/16", "interface": 2},
                {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 2}
            ],
            "routes": [
                {"dst": "0.0.0.0/0"},
                {"dst": "10.9.0.0/16", "gw": "10.1.0.254", "mtu": 1300, "advmss": 1200,
                 "priority": 5, "table": 0, "scope": 253},
                {"dst": "::/0", "gw": "fd00::1"}
            ],
            "dns": {"nameservers": ["10.1.0.1"], "domain": "ex", "search": ["a.ex"], "options": ["ndots:2"]}
        })
    }

    fn convert(value: &Value, to: &str) -> CniResult<Value> {
        CniOutput::from_json(value, "1.1.0")?.to_json(to)
    }

    #[test]
    fn v1_round_trips_between_1_0_and_1_1() {
        let original = full_v1();
        assert_eq!(convert(&original, "1.1.0").unwrap(), original);
        // The Go library has one type for both: 1.1 fields survive a 1.0.0 result.
        let mut expected = original.clone();
        expected["cniVersion"] = "1.0.0".into();
        assert_eq!(convert(&original, "1.0.0").unwrap(), expected);
    }

    #[test]
    fn v1_to_04_adds_ip_versions_and_keeps_route_extras() {
        for target in ["0.3.0", "0.3.1", "0.4.0"] {
            let out = convert(&full_v1(), target).unwrap();
            assert_eq!(out["cniVersion"], target);
            assert_eq!(out["ips"][0]["version"], "4");
            assert_eq!(out["ips"][2]["version"], "6");
            assert_eq!(out["ips"][2]["interface"], 2);
            assert_eq!(
                out["interfaces"][1],
                json!({"name": "veth1", "mac": "0a:00:00:00:00:02"})
            );
            assert_eq!(out["routes"][1]["table"], 0);
            assert_eq!(out["routes"][1]["scope"], 253);
            assert_eq!(out["dns"]["domain"], "ex");
        }
    }

    #[test]
    fn empty_dns_is_omitted_in_1x_and_kept_in_04() {
        let ipam = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]});
        let v1 = convert(&ipam, "1.0.0").unwrap();
        assert_eq!(v1, ipam);
        let v04 = convert(&ipam, "0.4.0").unwrap();
        assert_eq!(
            v04,
            json!({"cniVersion": "0.4.0", "ips": [{"address": "10.0.0.2/24", "version": "4"}], "dns": {}})
        );
    }

    #[test]
    fn v1_to_legacy_keeps_first_ip_per_family_and_family_routes() {
        for target in ["0.1.0", "0.2.0"] {
            let out = convert(&full_v1(), target).unwrap();
            assert_eq!(
                out,
                json!({
                    "cniVersion": target,
                    "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1",
                            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.1.0.254"}]},
                    "ip6": {"ip": "fd00::5/64", "gateway": "fd00::1", "routes": [{"dst": "::/0", "gw": "fd00::1"}]},
                    "dns": {"nameservers": ["10.1.0.1"], "domain": "ex", "search": ["a.ex"], "options": ["ndots:2"]}
                })
            );
        }
    }

    #[test]
    fn legacy_routes_are_dropped_when_their_family_has_no_ip() {
        let v6_route_only = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}],
            "routes": [{"dst": "::/0"}, {"dst": "0.0.0.0/0"}]});
        let out = convert(&v6_route_only, "0.2.0").unwrap();
        assert_eq!(out["ip4"]["routes"], json!([{"dst": "0.0.0.0/0"}]));
        assert!(out.get("ip6").is_none());
    }

    #[test]
    fn legacy_without_ips_cannot_be_written() {
        let none = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "lo"}]});
        let err = convert(&none, "0.2.0").unwrap_err();
        assert_eq!(err.msg, "cannot convert: no valid IP addresses");
    }

    #[test]
    fn legacy_input_becomes_ips_and_routes() {
        let legacy = json!({
            "cniVersion": "0.2.0",
            "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]},
            "ip6": {"ip": "fd00::5/64", "routes": [{"dst": "::/0"}]},
            "dns": {}
        });
        let out = convert(&legacy, "1.0.0").unwrap();
        assert_eq!(
            out,
            json!({
                "cniVersion": "1.0.0",
                "ips": [{"address": "10.1.0.5/16", "gateway": "10.1.0.1"}, {"address": "fd00::5/64"}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "::/0"}]
            })
        );
        let v04 = convert(&legacy, "0.3.1").unwrap();
        assert_eq!(
            v04["ips"][1],
            json!({"address": "fd00::5/64", "version": "6"})
        );
        assert_eq!(convert(&legacy, "0.1.0").unwrap()["cniVersion"], "0.1.0");
        let mut back = legacy.clone();
        back["cniVersion"] = "0.1.0".into();
        assert_eq!(convert(&legacy, "0.1.0").unwrap(), back);
    }

    #[test]
    fn missing_version_uses_the_default_and_bad_input_fails() {
        let no_version = json!({"ip4": {"ip": "10.0.0.2/24"}});
        let out = CniOutput::from_json(&no_version, "0.2.0").unwrap();
        assert_eq!(out.ips.len(), 1);
        assert!(CniOutput::from_json(&json!({"cniVersion": "9.9.9"}), "1.0.0").is_err());
        assert!(CniOutput::from_json(&json!({"ips": [{"address": "10.0.0.2"}]}), "1.0.0").is_err());
        assert!(CniOutput::from_json(&json!({"ips": "x"}), "1.0.0").is_err());
        assert!(CniOutput::from_json(&json!([1]), "1.0.0").is_err());
    }
}
