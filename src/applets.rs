//! Multicall dispatch: the basename of argv[0], matched exactly, picks the applet;
//! `cnibox <applet>` does the same, and `cnibox --list` / `--version` describe the binary.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::Path;

use serde_json::Value;

use crate::cni::skel::{Outcome, execute};
use crate::cni::{Applet, CniError, Env, code};
use crate::plugins;

/// Every applet this build carries, in `--list` order.
pub const APPLETS: &[Applet] = &[
    plugins::loopback::APPLET,
    plugins::ptp::APPLET,
    plugins::macvlan::APPLET,
    plugins::ipvlan::APPLET,
    plugins::vlan::APPLET,
    plugins::host_device::APPLET,
    plugins::dummy::APPLET,
    plugins::tap::APPLET,
    plugins::bridge::APPLET,
    plugins::host_local::APPLET,
    plugins::static_ipam::APPLET,
    plugins::tuning::APPLET,
    plugins::sbr::APPLET,
    plugins::vrf::APPLET,
    plugins::bandwidth::APPLET,
    plugins::portmap::APPLET,
    plugins::firewall::APPLET,
];

pub fn find(name: &str) -> Option<&'static Applet> {
    APPLETS.iter().find(|applet| applet.name == name)
}

/// Entry point; returns the exit status.
pub fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().collect();
    // tap re-executes itself to create a device under an SELinux label.
    if let Some(code) = plugins::tap::helper_main(&args) {
        return code;
    }
    let invoked_as = args
        .first()
        .and_then(|arg0| Path::new(arg0).file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(applet) = find(&invoked_as) {
        return run(applet);
    }
    if invoked_as.starts_with("cnibox") {
        return multicall(args);
    }
    unknown_applet(&invoked_as)
}

fn multicall(args: Vec<OsString>) -> i32 {
    // `cnibox install DIR ...`: the binary installs itself (images without a shell).
    if args.get(1).is_some_and(|a| a == "install") {
        return crate::install::main(&args[2..]);
    }
    let cli = clap::Command::new("cnibox")
        .about("All the CNI reference plugins in one binary; run it through a link named after a plugin")
        .disable_version_flag(true)
        .arg(
            clap::Arg::new("list")
                .long("list")
                .action(clap::ArgAction::SetTrue)
                .help("Print every applet name, one a line"),
        )
        .arg(
            clap::Arg::new("version")
                .long("version")
                .short('V')
                .action(clap::ArgAction::SetTrue)
                .help("Print the version"),
        )
        .arg(clap::Arg::new("applet").help("The plugin to run, e.g. bridge"))
        .arg(
            clap::Arg::new("rest")
                .num_args(0..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true)
                .hide(true),
        );
    let matches = match cli.try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            // Usage text goes to stderr (help to stdout, as asked for); never a CNI result.
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    if matches.get_flag("version") {
        println!("cnibox {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    if matches.get_flag("list") {
        for applet in APPLETS {
            println!("{}", applet.name);
        }
        return 0;
    }
    match matches.get_one::<String>("applet") {
        Some(name) => match find(name) {
            Some(applet) => run(applet),
            None => unknown_applet(name),
        },
        None => {
            eprintln!("usage: cnibox [--list | --version | APPLET]; see cnibox --help");
            2
        }
    }
}

fn unknown_applet(name: &str) -> i32 {
    let names: Vec<&str> = APPLETS.iter().map(|a| a.name).collect();
    print_error(
        &CniError::new(code::INTERNAL, format!("unknown cnibox applet {name:?}"))
            .with_details(format!("known applets: {}", names.join(", "))),
    )
}

/// Runs one applet with the process's environment and stdin, prints its outcome.
pub fn run(applet: &Applet) -> i32 {
    match execute(applet, Env::from_process(), &mut io::stdin().lock()) {
        Ok(Outcome::About(text)) => {
            eprint!("{text}");
            0
        }
        Ok(Outcome::Version(info)) => write_stdout(&format!("{info}\n")),
        Ok(Outcome::Result(result)) => write_stdout(&pretty(&result)),
        Ok(Outcome::Nothing) => 0,
        Err(err) => print_error(&err),
    }
}

/// The error JSON on stdout, exit status 1, as the reference skel does.
fn print_error(err: &CniError) -> i32 {
    tracing::debug!(code = err.code, "failed: {err}");
    write_stdout(&pretty(&err.to_json()));
    1
}

fn write_stdout(text: &str) -> i32 {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => 0,
        // Nothing can be reported on a stdout that cannot be written; say it on stderr.
        Err(e) => {
            eprintln!("cnibox: writing to stdout: {e} (code {})", code::IO_FAILURE);
            1
        }
    }
}

/// JSON indented by four spaces without a trailing newline, as Go's `MarshalIndent`.
pub fn pretty(value: &Value) -> String {
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    match serde::Serialize::serialize(value, &mut ser) {
        Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
        Err(_) => value.to_string(),
    }
}
