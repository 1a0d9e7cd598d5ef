//! The keys every plugin configuration may carry; plugin-specific keys are decoded by each
//! plugin from the same stdin through `Request::decode`.

use serde::Deserialize;
use serde_json::Value;

use super::result::Dns;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub ipam: Option<IpamRef>,
    #[serde(default)]
    pub dns: Option<Dns>,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(default)]
    pub runtime_config: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The key of the 1.1.0 spec text before it was renamed; libcni sends both.
    #[serde(default, rename = "cni.dev/attachments")]
    pub legacy_attachments: Option<Vec<Attachment>>,
}

/// The `ipam` object as the main plugin sees it: only which plugin to run.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct IpamRef {
    #[serde(default, rename = "type")]
    pub plugin_type: String,
}

/// One attachment still in use, as listed in a GC request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

impl NetConf {
    /// The attachments a GC must keep; `None` when the runtime sent no list at all.
    pub fn attachments_to_keep(&self) -> Option<&[Attachment]> {
        self.valid_attachments
            .as_deref()
            .or(self.legacy_attachments.as_deref())
    }

    /// The IPAM plugin to delegate to, if any.
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam
            .as_ref()
            .map(|ipam| ipam.plugin_type.as_str())
            .filter(|t| !t.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerates_unknown_keys_and_reads_common_ones() {
        let conf: NetConf = serde_json::from_str(
            r#"{"cniVersion":"1.1.0","name":"n","type":"bridge","whatever":{"a":1},
                "ipam":{"type":"host-local","subnet":"10.0.0.0/24"},
                "dns":{"nameservers":["1.1.1.1"]},"prevResult":{"cniVersion":"1.1.0"},
                "runtimeConfig":{"mac":"x"},"args":{"cni":{"ips":["10.0.0.2"]}},
                "capabilities":{"mac":true}}"#,
        )
        .unwrap();
        assert_eq!(conf.ipam_type(), Some("host-local"));
        assert_eq!(conf.dns.unwrap().nameservers, ["1.1.1.1"]);
        assert!(conf.prev_result.is_some() && conf.runtime_config.is_some());
    }

    #[test]
    fn prefers_valid_attachments_and_tells_absent_from_empty() {
        let both: NetConf = serde_json::from_str(
            r#"{"name":"n","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],
                "cni.dev/attachments":[]}"#,
        )
        .unwrap();
        assert_eq!(both.attachments_to_keep().unwrap().len(), 1);
        let legacy: NetConf =
            serde_json::from_str(r#"{"name":"n","cni.dev/attachments":[]}"#).unwrap();
        assert_eq!(legacy.attachments_to_keep(), Some(&[][..]));
        let none: NetConf = serde_json::from_str(r#"{"name":"n"}"#).unwrap();
        assert_eq!(none.attachments_to_keep(), None);
        let empty_ipam: NetConf = serde_json::from_str(r#"{"name":"n","ipam":{}}"#).unwrap();
        assert_eq!(empty_ipam.ipam_type(), None);
    }
}
