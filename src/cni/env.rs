//! The `CNI_*` environment, validated as the reference skel does.

use super::error::{CniError, CniResult, code};

/// A CNI verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(text: &str) -> Option<Command> {
        Some(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

/// The raw `CNI_*` variables; set-but-empty is the same as unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
    pub netns_override: String,
}

/// Which verbs need a variable (the reference skel's table; the command is always needed).
const NEEDS_CONTAINER_ID: &[&str] = &["ADD", "CHECK", "DEL"];
const NEEDS_NETNS: &[&str] = &["ADD", "CHECK"];
const NEEDS_IFNAME: &[&str] = &["ADD", "CHECK", "DEL"];
const NEEDS_PATH: &[&str] = &["ADD", "CHECK", "DEL", "GC", "STATUS"];

impl Env {
    pub fn from_process() -> Env {
        let var = |name: &str| std::env::var(name).unwrap_or_default();
        Env {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS"),
            path: var("CNI_PATH"),
            netns_override: var("CNI_NETNS_OVERRIDE"),
        }
    }

    /// The variables as `(name, value)` pairs, for running a delegate with the same environment.
    pub fn vars(&self) -> [(&'static str, &str); 7] {
        [
            ("CNI_COMMAND", &self.command),
            ("CNI_CONTAINERID", &self.container_id),
            ("CNI_NETNS", &self.netns),
            ("CNI_IFNAME", &self.ifname),
            ("CNI_ARGS", &self.args),
            ("CNI_PATH", &self.path),
            ("CNI_NETNS_OVERRIDE", &self.netns_override),
        ]
    }

    /// `CNI_NETNS_OVERRIDE` set to `1` or `true` turns off the own-namespace check.
    pub fn netns_override(&self) -> bool {
        self.netns_override == "1" || self.netns_override.eq_ignore_ascii_case("true")
    }

    /// The `CNI_PATH` directories.
    pub fn path_dirs(&self) -> impl Iterator<Item = &str> {
        self.path.split(':').filter(|dir| !dir.is_empty())
    }

    /// Checks the variables in the skel's order: a present, required, invalid value fails at
    /// once; missing required ones are reported together at the end.
    pub fn validate(&self) -> CniResult<()> {
        let cmd = self.command.as_str();
        let mut missing = Vec::new();
        type Validator = fn(&str) -> CniResult<()>;
        let checks: [(&str, &str, &[&str], Option<Validator>); 5] = [
            ("CNI_COMMAND", &self.command, &[], None),
            (
                "CNI_CONTAINERID",
                &self.container_id,
                NEEDS_CONTAINER_ID,
                Some(validate_container_id),
            ),
            ("CNI_NETNS", &self.netns, NEEDS_NETNS, None),
            (
                "CNI_IFNAME",
                &self.ifname,
                NEEDS_IFNAME,
                Some(validate_interface_name),
            ),
            ("CNI_PATH", &self.path, NEEDS_PATH, None),
        ];
        for (name, value, verbs, validator) in checks {
            let required = name == "CNI_COMMAND" || verbs.contains(&cmd);
            if !required {
                continue;
            }
            if value.is_empty() {
                missing.push(name);
            } else if let Some(validate) = validator {
                validate(value)?;
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                code::INVALID_ENV,
                format!("required env variables [{}] missing", missing.join(",")),
            ))
        }
    }
}

/// Container IDs and network names: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn is_valid_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn validate_container_id(id: &str) -> CniResult<()> {
    if is_valid_identifier(id) {
        Ok(())
    } else {
        Err(CniError::new(code::INVALID_ENV, "invalid characters in containerID").with_details(id))
    }
}

/// The kernel's `dev_valid_name` rules, in the reference's order and wording.
pub fn validate_interface_name(name: &str) -> CniResult<()> {
    let fail = |msg: &str| CniError::new(code::INVALID_ENV, msg);
    if name.is_empty() {
        return Err(fail("interface name is empty"));
    }
    if name.len() > 15 {
        return Err(fail("interface name is too long")
            .with_details("interface name should be less than 16 characters"));
    }
    if name == "." || name == ".." {
        return Err(fail("interface name is . or .."));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(fail(
            "interface name contains / or : or whitespace characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(command: &str) -> Env {
        Env {
            command: command.into(),
            container_id: "c1".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            path: "/opt/cni/bin".into(),
            ..Env::default()
        }
    }

    fn missing(e: Env) -> String {
        let err = e.validate().unwrap_err();
        assert_eq!(err.code, 4);
        err.msg
    }

    #[test]
    fn complete_env_passes_for_every_verb() {
        for cmd in ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"] {
            env(cmd).validate().unwrap();
        }
    }

    #[test]
    fn lists_every_missing_variable_in_order() {
        let bare = Env {
            command: "ADD".into(),
            ..Env::default()
        };
        assert_eq!(
            missing(bare),
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"
        );
        let del = Env {
            command: "DEL".into(),
            ..Env::default()
        };
        assert_eq!(
            missing(del),
            "required env variables [CNI_CONTAINERID,CNI_IFNAME,CNI_PATH] missing"
        );
        for cmd in ["GC", "STATUS"] {
            let e = Env {
                command: cmd.into(),
                ..Env::default()
            };
            assert_eq!(missing(e), "required env variables [CNI_PATH] missing");
        }
        assert_eq!(
            missing(Env::default()),
            "required env variables [CNI_COMMAND] missing"
        );
        Env {
            command: "VERSION".into(),
            ..Env::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn del_does_not_need_a_netns() {
        let mut e = env("DEL");
        e.netns.clear();
        e.validate().unwrap();
    }

    #[test]
    fn bad_container_ids_fail_before_missing_variables() {
        for id in ["-abc", "a b", "a%b", ".x", "_x"] {
            let mut e = env("ADD");
            e.container_id = id.into();
            e.path.clear();
            let err = e.validate().unwrap_err();
            assert_eq!(
                (err.code, err.msg.as_str(), err.details.as_str()),
                (4, "invalid characters in containerID", id)
            );
        }
        // Not required for GC, so not validated.
        let mut gc = env("GC");
        gc.container_id = "-bad".into();
        gc.validate().unwrap();
    }

    #[test]
    fn interface_name_rules() {
        let cases = [
            ("0123456789abcdef", "interface name is too long"),
            (".", "interface name is . or .."),
            ("..", "interface name is . or .."),
            (
                "a/b",
                "interface name contains / or : or whitespace characters",
            ),
            (
                "a:b",
                "interface name contains / or : or whitespace characters",
            ),
            (
                "a b",
                "interface name contains / or : or whitespace characters",
            ),
            (
                "a\tb",
                "interface name contains / or : or whitespace characters",
            ),
        ];
        for (name, msg) in cases {
            let mut e = env("CHECK");
            e.ifname = name.into();
            let err = e.validate().unwrap_err();
            assert_eq!((err.code, err.msg.as_str()), (4, msg), "{name:?}");
        }
        validate_interface_name("0123456789abcde").unwrap();
        // 15 characters but more than 15 bytes.
        assert!(validate_interface_name("ééééééééé").is_err());
        assert_eq!(
            validate_interface_name("").unwrap_err().msg,
            "interface name is empty"
        );
    }

    #[test]
    fn netns_override_values() {
        for (v, expected) in [
            ("1", true),
            ("true", true),
            ("TRUE", true),
            ("0", false),
            ("", false),
            ("yes", false),
        ] {
            let e = Env {
                netns_override: v.into(),
                ..Env::default()
            };
            assert_eq!(e.netns_override(), expected, "{v}");
        }
    }
}
