//! Configuration pieces host-local and static share: the `runtimeConfig`/`args` address lists,
//! routes, and the one-address-per-family limit of the 0.1.0/0.2.0 results.

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

use crate::cni::result::{Route, parse_routes};
use crate::cni::{CniError, CniResult, version};

/// `runtimeConfig.ips` (capability `ips`).
#[derive(Debug, Default, Deserialize)]
pub struct RuntimeIps {
    #[serde(default)]
    pub ips: Option<Vec<String>>,
}

/// `args.cni.ips`.
#[derive(Debug, Default, Deserialize)]
pub struct ArgsIps {
    #[serde(default)]
    pub cni: Option<RuntimeIps>,
}

impl ArgsIps {
    pub fn ips(&self) -> &[String] {
        self.cni
            .as_ref()
            .and_then(|c| c.ips.as_deref())
            .unwrap_or_default()
    }
}

/// The `ipam` object must be there.
pub fn require_ipam<T>(ipam: Option<T>) -> CniResult<T> {
    ipam.ok_or_else(|| CniError::config("IPAM config missing 'ipam' key"))
}

/// `ipam.routes`, in any result version's route shape.
pub fn routes(raw: Option<&[Value]>) -> CniResult<Vec<Route>> {
    parse_routes(raw.unwrap_or_default())
        .map_err(|e| CniError::config(format!("invalid routes: {}", e.msg)))
}

/// Results before 0.3.0 hold one address per family: refuse more.
pub fn check_family_limit(
    cni_version: &str,
    addresses: impl Iterator<Item = IpAddr>,
) -> CniResult<()> {
    let (mut v4, mut v6) = (0, 0);
    for ip in addresses {
        if ip.is_ipv4() {
            v4 += 1;
        } else {
            v6 += 1;
        }
    }
    let modern = version::at_least(cni_version, "0.3.0").unwrap_or(false);
    if (v4 > 1 || v6 > 1) && !modern {
        return Err(CniError::config(format!(
            "CNI version {cni_version} does not support more than 1 address per family"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn family_limit_applies_before_0_3_0() {
        let two_v4 = ips(&["10.0.0.1", "10.0.0.2"]);
        let dual = ips(&["10.0.0.1", "fd00::1"]);
        for v in ["", "0.1.0", "0.2.0", "bogus"] {
            let err = check_family_limit(v, two_v4.iter().copied()).unwrap_err();
            assert_eq!(err.code, 7);
            assert_eq!(
                err.msg,
                format!("CNI version {v} does not support more than 1 address per family")
            );
            check_family_limit(v, dual.iter().copied()).unwrap();
        }
        for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
            check_family_limit(v, two_v4.iter().copied()).unwrap();
        }
    }

    #[test]
    fn routes_are_config_errors() {
        let bad = [serde_json::json!({"dst": "nope"})];
        assert_eq!(routes(Some(&bad)).unwrap_err().code, 7);
        let good = [serde_json::json!({"dst": "0.0.0.0/0", "gw": "10.0.0.1"})];
        assert_eq!(routes(Some(&good)).unwrap().len(), 1);
        assert!(routes(None).unwrap().is_empty());
    }

    #[test]
    fn args_ips_tolerate_absence() {
        let none: ArgsIps = serde_json::from_str(r#"{"cni":{"labels":[]}}"#).unwrap();
        assert!(none.ips().is_empty());
        let some: ArgsIps = serde_json::from_str(r#"{"cni":{"ips":["10.0.0.2"]}}"#).unwrap();
        assert_eq!(some.ips(), ["10.0.0.2"]);
    }
}
