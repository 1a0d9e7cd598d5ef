//! Delegation: the same stdin and environment with `CNI_COMMAND` set per verb. A delegate that
//! is this very executable (same device and inode) runs in-process instead of forking.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::cni::skel::{Outcome, execute};
use crate::cni::{CniError, CniOutput, CniResult, Command, Request};

/// Runs the configured IPAM plugin for `command`; returns its result for ADD.
pub fn delegate(req: &Request, command: Command) -> CniResult<Option<CniOutput>> {
    let Some(plugin) = req.config.ipam_type() else {
        return Err(CniError::config(
            "no IPAM plugin configured (ipam.type is empty)",
        ));
    };
    let path = find_in_path(plugin, &req.env.path_dirs().collect::<Vec<_>>())?;
    let mut env = req.env.clone();
    env.command = command.as_str().to_string();
    tracing::debug!(plugin, command = command.as_str(), path = %path.display(), "delegating");
    let output = if is_this_executable(&path) {
        run_in_process(plugin, env, &req.stdin)?
    } else {
        run_executable(&path, &env, &req.stdin)?
    };
    match (command, output) {
        (Command::Add, Some(value)) => CniOutput::from_json(&value, req.version()).map(Some),
        (Command::Add, None) => Err(CniError::internal(format!(
            "IPAM plugin {plugin} returned no result"
        ))),
        _ => Ok(None),
    }
}

/// The first `<dir>/<plugin>` that is a regular file after following links.
fn find_in_path(plugin: &str, dirs: &[&str]) -> CniResult<PathBuf> {
    if plugin.contains('/') {
        return Err(CniError::config(format!("invalid plugin name: {plugin}")));
    }
    dirs.iter()
        .map(|dir| Path::new(dir).join(plugin))
        .find(|candidate| candidate.metadata().is_ok_and(|m| m.is_file()))
        .ok_or_else(|| {
            CniError::internal(format!(
                "failed to find plugin {plugin:?} in path [{}]",
                dirs.join(" ")
            ))
        })
}

fn is_this_executable(path: &Path) -> bool {
    let (Ok(found), Ok(me)) = (path.metadata(), Path::new("/proc/self/exe").metadata()) else {
        return false;
    };
    found.dev() == me.dev() && found.ino() == me.ino()
}

fn run_in_process(plugin: &str, env: crate::cni::Env, stdin: &[u8]) -> CniResult<Option<Value>> {
    let Some(applet) = crate::applets::find(plugin) else {
        return Err(CniError::internal(format!(
            "unknown cnibox applet {plugin:?}"
        )));
    };
    match execute(applet, env, &mut &stdin[..])? {
        Outcome::Result(value) => Ok(Some(value)),
        _ => Ok(None),
    }
}

/// libcni retries a plugin that is being replaced ("text file busy") for a few seconds.
const BUSY_RETRIES: u32 = 5;

fn run_executable(path: &Path, env: &crate::cni::Env, stdin: &[u8]) -> CniResult<Option<Value>> {
    let mut attempt = 0;
    let mut child = loop {
        let spawned = Process::new(path)
            .envs(env.vars())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        match spawned {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < BUSY_RETRIES => {
                attempt += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => {
                return Err(CniError::internal(format!(
                    "failed to run {}: {e}",
                    path.display()
                )));
            }
            Ok(child) => break child,
        }
    };
    if let Some(mut input) = child.stdin.take() {
        // A plugin may exit without reading stdin (VERSION); its exit status tells the story.
        let _ = input.write_all(stdin);
    }
    let output = child
        .wait_with_output()
        .map_err(|e| CniError::internal(format!("failed to wait for {}: {e}", path.display())))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let parsed: Option<Value> = serde_json::from_str(&stdout).ok();
    if output.status.success() {
        return Ok(parsed.filter(|v| !v.is_null()));
    }
    Err(match parsed.as_ref().and_then(CniError::from_json) {
        Some(err) => err,
        None if stdout.trim().is_empty() => CniError::internal(format!(
            "netplugin failed with no error message: {}",
            output.status
        )),
        None => CniError::internal(format!(
            "netplugin failed but error parsing its diagnostic message {:?}",
            stdout.trim()
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_paths_in_plugin_names_and_reports_the_search_path() {
        assert_eq!(find_in_path("../x", &["/tmp"]).unwrap_err().code, 7);
        let err = find_in_path("cnibox-no-such-plugin", &["/nonexistent", "/tmp"]).unwrap_err();
        assert_eq!(
            err.msg,
            r#"failed to find plugin "cnibox-no-such-plugin" in path [/nonexistent /tmp]"#
        );
    }

    #[test]
    fn skips_directories_and_finds_files() {
        let dir = std::env::temp_dir().join(format!("cnibox-find-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("first/plugin")).unwrap();
        std::fs::create_dir_all(dir.join("second")).unwrap();
        std::fs::write(dir.join("second/plugin"), b"").unwrap();
        let first = dir.join("first");
        let second = dir.join("second");
        let found = find_in_path(
            "plugin",
            &[first.to_str().unwrap(), second.to_str().unwrap()],
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found.unwrap(), second.join("plugin"));
    }
}

#[cfg(test)]
mod exec_tests {
    use super::*;
    use crate::cni::{Env, config::NetConf};
    use std::os::unix::fs::PermissionsExt;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("cnibox-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn script(&self, name: &str, body: &str) {
            let path = self.0.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn request(stdin: String, path: &Path) -> Request {
        Request {
            command: Command::Add,
            env: Env {
                command: "ADD".into(),
                container_id: "ctr-delegate".into(),
                netns: "/run/netns/none".into(),
                ifname: "eth0".into(),
                path: format!("/nonexistent:{}", path.display()),
                ..Env::default()
            },
            config: serde_json::from_str::<NetConf>(&stdin).unwrap(),
            stdin: stdin.into_bytes(),
        }
    }

    #[test]
    fn passes_stdin_and_env_and_reads_the_result() {
        let dir = TempDir::new("delegate-echo");
        // Echoes what it got so the test sees the verb and stdin it was run with.
        dir.script(
            "fake-ipam",
            r#"read -r conf; [ "$CNI_COMMAND" = ADD ] && [ "$CNI_CONTAINERID" = ctr-delegate ] || exit 3
echo '{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.9.0.2/24"}]}'"#,
        );
        dir.script(
            "busy-ipam",
            r#"echo '{"code":11,"msg":"try later","details":"busy"}'; exit 1"#,
        );
        let req = request(
            r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"fake-ipam"}}"#.into(),
            &dir.0,
        );
        let result = delegate(&req, Command::Add).unwrap().unwrap();
        assert_eq!(result.ips[0].address.to_string(), "10.9.0.2/24");

        let busy = request(
            r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"busy-ipam"}}"#.into(),
            &dir.0,
        );
        let err = delegate(&busy, Command::Del).unwrap_err();
        assert_eq!(
            (err.code, err.msg.as_str(), err.details.as_str()),
            (11, "try later", "busy")
        );
    }

    #[test]
    fn works_with_the_go_host_local() {
        let go = Path::new("/usr/lib/cni/host-local");
        if !go.is_file() {
            eprintln!(
                "SKIP: Go host-local delegation because {} is missing",
                go.display()
            );
            assert_ne!(std::env::var("CNIBOX_REQUIRE_GO").as_deref(), Ok("1"));
            return;
        }
        let data = TempDir::new("delegate-go");
        let stdin = serde_json::json!({
            "cniVersion": "1.0.0", "name": "delegate-go",
            "ipam": {"type": "host-local", "subnet": "10.77.0.0/24",
                     "dataDir": data.0.join("store")}
        })
        .to_string();
        let req = request(stdin, Path::new("/usr/lib/cni"));
        let result = delegate(&req, Command::Add).unwrap().unwrap();
        assert_eq!(result.ips[0].address.to_string(), "10.77.0.2/24");
        let reservation = data.0.join("store/delegate-go/10.77.0.2");
        assert!(reservation.is_file());
        assert!(delegate(&req, Command::Del).unwrap().is_none());
        assert!(!reservation.exists());
    }
}
