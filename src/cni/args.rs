//! `CNI_ARGS` (`K=V;K2=V2`) parsed exactly as the Go library's `types.LoadArgs`.

use super::error::{CniError, CniResult};

/// The recognised pairs of `CNI_ARGS`, by key.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    /// Parses `raw`, keeping the keys in `known` (matched case-sensitively, like Go field names).
    /// Any other key is an error unless `IgnoreUnknown` is true.
    pub fn parse(raw: &str, known: &[&str]) -> CniResult<CniArgs> {
        let mut args = CniArgs::default();
        if raw.is_empty() {
            return Ok(args);
        }
        let mut unknown = Vec::new();
        let mut ignore_unknown = false;
        for pair in raw.split(';') {
            let kv: Vec<&str> = pair.split('=').collect();
            let [key, value] = kv[..] else {
                return Err(CniError::internal(format!("ARGS: invalid pair {pair:?}")));
            };
            if key == "IgnoreUnknown" {
                ignore_unknown = parse_bool(value).ok_or_else(|| {
                    CniError::internal(format!(
                        "ARGS: error parsing value of pair {pair:?}: invalid boolean"
                    ))
                })?;
            } else if known.contains(&key) {
                args.pairs.push((key.to_string(), value.to_string()));
            } else {
                unknown.push(format!("{pair:?}"));
            }
        }
        if !unknown.is_empty() && !ignore_unknown {
            return Err(CniError::internal(format!(
                "ARGS: unknown args [{}]",
                unknown.join(" ")
            )));
        }
        Ok(args)
    }

    /// The value of `key`; the last occurrence wins, as with Go's field assignment.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_nothing() {
        assert_eq!(CniArgs::parse("", &["IP"]).unwrap(), CniArgs::default());
    }

    #[test]
    fn known_keys_are_kept() {
        let args = CniArgs::parse("IP=10.0.0.5/24;MAC=c2:11:22:33:44:55", &["IP", "MAC"]).unwrap();
        assert_eq!(args.get("IP"), Some("10.0.0.5/24"));
        assert_eq!(args.get("MAC"), Some("c2:11:22:33:44:55"));
        assert_eq!(args.get("GATEWAY"), None);
    }

    #[test]
    fn unknown_keys_fail_without_ignore_unknown() {
        let err = CniArgs::parse("K8S_POD_NAME=x;B=c", &["IP"]).unwrap_err();
        assert_eq!(err.code, 999);
        assert_eq!(err.msg, r#"ARGS: unknown args ["K8S_POD_NAME=x" "B=c"]"#);
    }

    #[test]
    fn ignore_unknown_accepts_them_in_any_order_and_case() {
        for raw in [
            "K8S_POD_NAME=x;IgnoreUnknown=1",
            "IgnoreUnknown=TRUE;K8S_POD_NAME=x;IP=10.1.1.1",
            "IgnoreUnknown=true",
        ] {
            assert!(CniArgs::parse(raw, &["IP"]).is_ok(), "{raw}");
        }
        let err = CniArgs::parse("IgnoreUnknown=0;X=1", &[]).unwrap_err();
        assert!(err.msg.starts_with("ARGS: unknown args"));
    }

    #[test]
    fn bad_pairs_fail() {
        for (raw, piece) in [("A=b;", ""), ("A", "A"), ("A=b=c", "A=b=c"), (";", "")] {
            let err = CniArgs::parse(raw, &["A"]).unwrap_err();
            assert_eq!(err.msg, format!("ARGS: invalid pair {piece:?}"), "{raw}");
        }
        let err = CniArgs::parse("IgnoreUnknown=maybe", &[]).unwrap_err();
        assert!(
            err.msg
                .starts_with(r#"ARGS: error parsing value of pair "IgnoreUnknown=maybe""#)
        );
    }
}
