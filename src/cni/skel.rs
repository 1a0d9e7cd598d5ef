//! The dispatcher every applet runs through: the reference skel's checks, in its order.

use std::io::Read;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::args::CniArgs;
use super::config::NetConf;
use super::env::{Command, Env, is_valid_identifier};
use super::error::{CniError, CniResult, code};
use super::result::CniOutput;
use super::version;

/// One personality of the binary.
pub struct Applet {
    pub name: &'static str,
    /// The oldest spec version it accepts; it accepts every later one.
    pub min_version: &'static str,
    /// Handles ADD, DEL, CHECK, GC and STATUS; returns the result to print for ADD.
    pub run: fn(&Request) -> CniResult<Option<CniOutput>>,
}

impl Applet {
    pub fn supported_versions(&self) -> &'static [&'static str] {
        version::starting_from(self.min_version)
    }

    /// The help text printed to stderr when `CNI_COMMAND` is empty.
    pub fn about(&self) -> String {
        format!(
            "CNI {} plugin {}\nCNI protocol versions supported: {}\n",
            self.name,
            env!("CARGO_PKG_VERSION"),
            self.supported_versions().join(", ")
        )
    }

    pub fn version_info(&self) -> Value {
        serde_json::json!({
            "cniVersion": version::CURRENT,
            "supportedVersions": self.supported_versions(),
        })
    }
}

/// Everything a handler gets: the verb, the environment and the configuration.
pub struct Request {
    pub command: Command,
    pub env: Env,
    pub stdin: Vec<u8>,
    pub config: NetConf,
}

impl Request {
    /// The configuration's `cniVersion`, which is also the version of the printed result.
    pub fn version(&self) -> &str {
        if self.config.cni_version.is_empty() {
            "0.1.0"
        } else {
            &self.config.cni_version
        }
    }

    /// Decodes the plugin's own keys from the configuration.
    pub fn decode<T: DeserializeOwned>(&self) -> CniResult<T> {
        serde_json::from_slice(&self.stdin)
            .map_err(|e| CniError::config(format!("failed to load netconf: {e}")))
    }

    /// The previous plugin's result, of any spec version.
    pub fn prev_result(&self) -> CniResult<Option<CniOutput>> {
        self.config
            .prev_result
            .as_ref()
            .filter(|v| !v.is_null())
            .map(|v| {
                CniOutput::from_json(v, self.version())
                    .map_err(|e| e.context("could not parse prevResult"))
            })
            .transpose()
    }

    /// `CNI_ARGS`, keeping the keys this plugin knows.
    pub fn cni_args(&self, known: &[&str]) -> CniResult<CniArgs> {
        CniArgs::parse(&self.env.args, known)
    }
}

/// What a successful run prints.
pub enum Outcome {
    /// `CNI_COMMAND` was empty: the about text goes to stderr.
    About(String),
    Version(Value),
    Result(Value),
    Nothing,
}

/// Runs `applet` as the reference skel would; `stdin` is not read for VERSION.
pub fn execute(applet: &Applet, env: Env, stdin: &mut dyn Read) -> CniResult<Outcome> {
    if let Err(err) = env.validate() {
        return if env.command.is_empty() {
            Ok(Outcome::About(applet.about()))
        } else {
            Err(err)
        };
    }
    if env.command == "VERSION" {
        return Ok(Outcome::Version(applet.version_info()));
    }
    let mut bytes = Vec::new();
    stdin
        .read_to_end(&mut bytes)
        .map_err(|e| CniError::new(code::IO_FAILURE, format!("error reading from stdin: {e}")))?;
    let raw: Value = serde_json::from_slice(&bytes).map_err(|e| {
        CniError::new(
            code::DECODING_FAILURE,
            format!("error unmarshall network config: {e}"),
        )
    })?;
    check_network_name(&raw)?;
    crate::logging::configure(&raw, applet.name, &env);
    let Some(command) = Command::parse(&env.command) else {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("unknown CNI_COMMAND: {}", env.command),
        ));
    };
    let config_version = match raw.get("cniVersion") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(v)) => v.clone(),
        Some(other) => {
            return Err(CniError::new(
                code::DECODING_FAILURE,
                format!(
                    "decoding version from network config: cniVersion is not a string: {other}"
                ),
            ));
        }
    };
    check_version_gate(applet, command, &config_version)?;
    let config: NetConf = serde_json::from_value(raw)
        .map_err(|e| CniError::config(format!("failed to load netconf: {e}")))?;
    if matches!(command, Command::Add | Command::Del) && !env.netns_override() {
        check_not_own_netns(&env.netns)?;
    }
    let request = Request {
        command,
        env,
        stdin: bytes,
        config,
    };
    tracing::debug!(applet = applet.name, command = command.as_str(), "running");
    match (applet.run)(&request)? {
        Some(result) => Ok(Outcome::Result(result.to_json(request.version())?)),
        None => Ok(Outcome::Nothing),
    }
}

fn check_network_name(raw: &Value) -> CniResult<()> {
    let name = match raw.get("name") {
        None | Some(Value::Null) => "",
        Some(Value::String(name)) => name,
        Some(other) => {
            return Err(CniError::new(
                code::DECODING_FAILURE,
                format!("error unmarshall network config: name is not a string: {other}"),
            ));
        }
    };
    if !raw.is_object() {
        return Err(CniError::new(
            code::DECODING_FAILURE,
            "error unmarshall network config: not a JSON object",
        ));
    }
    if name.is_empty() {
        return Err(CniError::config("missing network name"));
    }
    if !is_valid_identifier(name) {
        return Err(CniError::config("invalid characters found in network name").with_details(name));
    }
    Ok(())
}

/// The CHECK/GC/STATUS minimum versions, then the exact-string support check.
fn check_version_gate(applet: &Applet, command: Command, config_version: &str) -> CniResult<()> {
    let minimum = match command {
        Command::Check => Some("0.4.0"),
        Command::Gc | Command::Status => Some("1.1.0"),
        _ => None,
    };
    let supported = applet.supported_versions();
    if let Some(minimum) = minimum {
        let verb = command.as_str();
        if !version::at_least(config_version, minimum)? {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("config version does not allow {verb}"),
            ));
        }
        let mut plugin_allows = false;
        for v in supported {
            plugin_allows |= version::at_least(v, config_version)?;
        }
        if !plugin_allows {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("plugin version does not allow {verb}"),
            ));
        }
    }
    let effective = if config_version.is_empty() {
        "0.1.0"
    } else {
        config_version
    };
    if !supported.contains(&effective) {
        let list: Vec<String> = supported.iter().map(|v| format!("{v:?}")).collect();
        return Err(
            CniError::new(code::INCOMPATIBLE_VERSION, "incompatible CNI versions").with_details(
                format!(
                    "config is {effective:?}, plugin supports [{}]",
                    list.join(" ")
                ),
            ),
        );
    }
    Ok(())
}

/// The `CNI_NETNS` that passed [`check_not_own_netns`] in this process: an in-process
/// delegate (IPAM) gets the same one and need not look again.
static NOT_OWN_NETNS: OnceLock<String> = OnceLock::new();

/// Refuses a `CNI_NETNS` that is the plugin's own namespace (a recycled `/proc/PID/ns/net`
/// once made loopback DEL take the host's `lo` down). Runs before the handler acts, unlike the
/// reference, which checks after the damage is done. A path that cannot be looked at passes.
fn check_not_own_netns(netns: &str) -> CniResult<()> {
    if netns.is_empty() || NOT_OWN_NETNS.get().is_some_and(|passed| passed == netns) {
        return Ok(());
    }
    let own = crate::netns::is_current(std::path::Path::new(netns)).map_err(|e| {
        CniError::new(
            code::INVALID_NETNS,
            format!("get plugin's netns failed: {e}"),
        )
    })?;
    if own == Some(true) {
        return Err(CniError::new(
            code::INVALID_NETNS,
            "plugin's netns and netns from CNI_NETNS should not be the same",
        ));
    }
    let _ = NOT_OWN_NETNS.set(netns.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::result::IpConfig;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn record(req: &Request) -> CniResult<Option<CniOutput>> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        if req.command != Command::Add {
            return Ok(None);
        }
        Ok(Some(CniOutput {
            ips: vec![IpConfig {
                address: "10.0.0.2/24".parse().unwrap(),
                gateway: None,
                interface: None,
            }],
            ..CniOutput::default()
        }))
    }

    const ALL: Applet = Applet {
        name: "fake",
        min_version: "0.1.0",
        run: record,
    };
    const FROM_040: Applet = Applet {
        name: "fw",
        min_version: "0.4.0",
        run: record,
    };

    fn must_not_run(_: &Request) -> CniResult<Option<CniOutput>> {
        Err(CniError::internal("the handler ran"))
    }

    const GUARDED: Applet = Applet {
        name: "guarded",
        min_version: "0.1.0",
        run: must_not_run,
    };

    fn env(command: &str) -> Env {
        Env {
            command: command.into(),
            container_id: "c1".into(),
            netns: "/run/netns/none".into(),
            ifname: "eth0".into(),
            path: "/opt/cni/bin".into(),
            netns_override: "1".into(),
            ..Env::default()
        }
    }

    fn err(applet: &Applet, env: Env, stdin: &str) -> CniError {
        match execute(applet, env, &mut stdin.as_bytes()) {
            Err(e) => e,
            Ok(_) => panic!("expected an error for {stdin}"),
        }
    }

    fn ok(applet: &Applet, env: Env, stdin: &str) -> Outcome {
        execute(applet, env, &mut stdin.as_bytes()).unwrap()
    }

    #[test]
    fn empty_command_prints_about_and_version_reads_nothing() {
        match ok(&ALL, Env::default(), "") {
            Outcome::About(text) => assert_eq!(
                text,
                format!(
                    "CNI fake plugin {}\nCNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n",
                    env!("CARGO_PKG_VERSION")
                )
            ),
            _ => panic!("expected the about text"),
        }
        let version_only = Env {
            command: "VERSION".into(),
            ..Env::default()
        };
        match ok(&FROM_040, version_only, "not json at all") {
            Outcome::Version(v) => assert_eq!(
                v,
                serde_json::json!({"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]})
            ),
            _ => panic!("expected version info"),
        }
    }

    #[test]
    fn stdin_errors_have_their_codes() {
        let cases = [
            ("", 6, "error unmarshall network config"),
            ("{", 6, "error unmarshall network config"),
            ("[]", 6, "error unmarshall network config"),
            (r#"{"name":5}"#, 6, "error unmarshall network config"),
            ("{}", 7, "missing network name"),
            (r#"{"name":""}"#, 7, "missing network name"),
            (
                r#"{"name":"-x"}"#,
                7,
                "invalid characters found in network name",
            ),
            (
                r#"{"name":"a/b"}"#,
                7,
                "invalid characters found in network name",
            ),
            (
                r#"{"name":"n","cniVersion":1}"#,
                6,
                "decoding version from network config",
            ),
            (
                r#"{"name":"n","cniVersion":"9.9.9"}"#,
                1,
                "incompatible CNI versions",
            ),
            (
                r#"{"name":"n","cniVersion":"1.1"}"#,
                1,
                "incompatible CNI versions",
            ),
            (
                r#"{"name":"n","cniVersion":"1.0.0","ipam":5}"#,
                7,
                "failed to load netconf",
            ),
        ];
        for (stdin, code, msg) in cases {
            let e = err(&ALL, env("ADD"), stdin);
            assert_eq!(e.code, code, "{stdin}: {e}");
            assert!(e.msg.starts_with(msg), "{stdin}: {e}");
        }
    }

    #[test]
    fn unknown_command_is_reported_after_the_config_is_read() {
        let e = err(&ALL, env("FOO"), r#"{"name":"n"}"#);
        assert_eq!((e.code, e.msg.as_str()), (4, "unknown CNI_COMMAND: FOO"));
        assert_eq!(err(&ALL, env("FOO"), "").code, 6);
    }

    #[test]
    fn incompatible_versions_list_what_the_plugin_supports() {
        let e = err(&FROM_040, env("ADD"), r#"{"name":"n"}"#);
        assert_eq!(e.code, 1);
        assert_eq!(
            e.details,
            r#"config is "0.1.0", plugin supports ["0.4.0" "1.0.0" "1.1.0"]"#
        );
    }

    #[test]
    fn verb_gates() {
        let cases = [
            ("CHECK", "0.3.1", "config version does not allow CHECK"),
            ("CHECK", "", "config version does not allow CHECK"),
            ("GC", "1.0.0", "config version does not allow GC"),
            ("STATUS", "0.4.0", "config version does not allow STATUS"),
            ("CHECK", "2.0.0", "plugin version does not allow CHECK"),
        ];
        for (cmd, version, msg) in cases {
            let stdin = format!(r#"{{"name":"n","cniVersion":"{version}"}}"#);
            let e = err(&ALL, env(cmd), &stdin);
            assert_eq!((e.code, e.msg.as_str()), (1, msg), "{cmd} {version}");
        }
        for cmd in ["GC", "STATUS"] {
            let gc_env = Env {
                command: cmd.into(),
                path: "/x".into(),
                ..Env::default()
            };
            let before = CALLS.load(Ordering::SeqCst);
            assert!(matches!(
                ok(&ALL, gc_env, r#"{"name":"n","cniVersion":"1.1.0"}"#),
                Outcome::Nothing
            ));
            assert!(CALLS.load(Ordering::SeqCst) > before);
        }
    }

    #[test]
    fn result_is_printed_in_the_config_version() {
        for (version, key) in [("0.2.0", "ip4"), ("0.3.1", "ips"), ("1.1.0", "ips")] {
            let stdin = format!(r#"{{"name":"n","cniVersion":"{version}"}}"#);
            match ok(&ALL, env("ADD"), &stdin) {
                Outcome::Result(v) => {
                    assert_eq!(v["cniVersion"], version);
                    assert!(v.get(key).is_some(), "{v}");
                }
                _ => panic!("expected a result"),
            }
        }
    }

    #[test]
    fn own_netns_is_refused_before_the_plugin_runs() {
        let mut own = env("ADD");
        own.netns = "/proc/thread-self/ns/net".into();
        own.netns_override.clear();
        let e = err(
            &GUARDED,
            own.clone(),
            r#"{"name":"n","cniVersion":"1.0.0"}"#,
        );
        assert_eq!(e.code, 8);
        assert_eq!(
            e.msg,
            "plugin's netns and netns from CNI_NETNS should not be the same"
        );
        own.command = "DEL".into();
        assert_eq!(err(&GUARDED, own.clone(), r#"{"name":"n"}"#).code, 8);
        own.netns_override = "true".into();
        assert_eq!(err(&GUARDED, own, r#"{"name":"n"}"#).msg, "the handler ran");
    }
}
