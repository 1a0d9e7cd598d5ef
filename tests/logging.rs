//! Logging: stderr and `logFile` carry the logs at the configured level, stdout carries only
//! the result; `CNI_LOG_LEVEL` overrides the config. Also the multicall `--version`.

mod common;

use common::*;

fn add(dir: &AppletDir, ns: &Netns, config: &Value, level_env: Option<&str>) -> Output {
    let mut run = Invocation::new(dir.path("loopback"))
        .command("ADD")
        .container_id("ctr-log")
        .netns(ns.path_str())
        .ifname("eth0")
        .cni_path(dir.dir())
        .config(config);
    if let Some(level) = level_env {
        run = run.env("CNI_LOG_LEVEL", level);
    }
    run.run()
}

#[test]
fn log_level_and_file_follow_the_config_and_the_environment() {
    let dir = AppletDir::new();
    let ns = Netns::new("log");
    let log_file = dir.dir().join("plugin.log");
    let mut config = json!({"cniVersion": "1.0.0", "name": "log-test", "type": "loopback"});

    // Default level warn: a successful ADD says nothing on stderr.
    let quiet = add(&dir, &ns, &config, None);
    quiet.assert_success();
    assert!(quiet.stderr.is_empty(), "{quiet}");

    config["logLevel"] = "debug".into();
    config["logFile"] = log_file.to_str().unwrap().into();
    let verbose = add(&dir, &ns, &config, None);
    verbose.assert_success();
    assert_eq!(
        verbose.json()["interfaces"][0]["name"],
        "lo",
        "stdout is the result only"
    );
    assert!(verbose.stderr.contains("DEBUG"), "{verbose}");
    assert!(verbose.stderr.contains("ctr-log"), "{verbose}");
    let logged = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        logged.contains("DEBUG") && logged.contains("ctr-log"),
        "{logged}"
    );

    // The environment wins over the config; the file is appended to, never truncated.
    let overridden = add(&dir, &ns, &config, Some("error"));
    overridden.assert_success();
    assert!(overridden.stderr.is_empty(), "{overridden}");
    assert_eq!(std::fs::read_to_string(&log_file).unwrap(), logged);

    // An unwritable log file does not fail the plugin.
    config["logFile"] = "/nonexistent-dir/plugin.log".into();
    let unwritable = add(&dir, &ns, &config, None);
    unwritable.assert_success();
    assert!(
        unwritable.stderr.contains("cannot open logFile"),
        "{unwritable}"
    );
}

#[test]
fn version_flag() {
    let out = std::process::Command::new(cnibox())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("cnibox {}\n", env!("CARGO_PKG_VERSION"))
    );
}
