//! `/proc/sys` reads and writes, named the way the reference's `sysctl.Sysctl` names them.
//!
//! Plugins use the slash form (`net/ipv6/conf/eth0.100/accept_ra`) so that interface names
//! with dots survive. A name whose first separator is a dot (`net.ipv4.ip_forward`) is the
//! dotted form: its dots and slashes are swapped, as the reference does.
//!
//! The `net/` tree belongs to the network namespace of the calling *thread*, so a write made
//! inside `NetNs::run` lands in that namespace.

use std::fs;
use std::io;
use std::path::PathBuf;

const ROOT: &str = "/proc/sys";

/// The file behind a sysctl name.
pub fn path(name: &str) -> PathBuf {
    let name = name.trim_start_matches('/');
    let dotted = name
        .find(['.', '/'])
        .is_some_and(|at| name.as_bytes()[at] == b'.');
    let relative: String = if dotted {
        name.chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                other => other,
            })
            .collect()
    } else {
        name.to_string()
    };
    PathBuf::from(ROOT).join(relative)
}

/// The current value, without the trailing newline.
pub fn read(name: &str) -> io::Result<String> {
    let text = fs::read_to_string(path(name))?;
    Ok(text.trim_end_matches('\n').to_string())
}

/// Writes `value`.
pub fn write(name: &str, value: &str) -> io::Result<()> {
    fs::write(path(name), value.as_bytes())
}

/// Writes `value` unless the sysctl already reads exactly that (saves a write, and keeps a
/// read-only `/proc/sys` from failing a no-op).
pub fn ensure(name: &str, value: &str) -> io::Result<()> {
    match read(name) {
        Ok(current) if current == value => Ok(()),
        _ => write(name, value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash_form_is_kept_and_dotted_form_is_swapped() {
        assert_eq!(
            path("net/ipv6/conf/eth0.100/accept_ra"),
            PathBuf::from("/proc/sys/net/ipv6/conf/eth0.100/accept_ra")
        );
        assert_eq!(
            path("/net/ipv6/conf/eth0/enhanced_dad"),
            PathBuf::from("/proc/sys/net/ipv6/conf/eth0/enhanced_dad")
        );
        assert_eq!(
            path("net.ipv4.ip_forward"),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            path("net.ipv6.conf.eth0/100.accept_ra"),
            PathBuf::from("/proc/sys/net/ipv6/conf/eth0.100/accept_ra")
        );
        assert_eq!(path("kernel"), PathBuf::from("/proc/sys/kernel"));
    }

    #[test]
    fn reads_without_newline_and_missing_is_an_error() {
        let value = read("kernel/ostype").unwrap();
        assert_eq!(value, "Linux");
        let err = read("net/ipv4/conf/cnibox-no-such-if/forwarding").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(write("net/ipv4/conf/cnibox-no-such-if/forwarding", "1").is_err());
    }
}
