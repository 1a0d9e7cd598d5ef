//! tap: a persistent tap device made inside the container with the tun driver's ioctls,
//! renamed to `CNI_IFNAME`, optionally enslaved to a bridge that exists in the container,
//! set up, with addresses from IPAM when there is an `ipam` section.
//!
//! The reference runs `ip tuntap add` unless both `owner` and `group` are set, and then uses
//! netlink; the two paths make different devices, and this plugin makes the same ones without
//! running anything: packet information off (`IFF_NO_PI`) and no virtio header on the first,
//! `IFF_VNET_HDR` and packet information on (off with `multiQueue`) on the second. Unlike the
//! reference's netlink path, `mtu` and `mac` are applied in both cases.
//!
//! `selinuxContext`: the device gets the SELinux label of the process that creates it, so the
//! reference sets the exec label and lets `ip` create it. Here the label is written to
//! `/proc/thread-self/attr/exec` just the same (failing the same way where SELinux is off),
//! and the device is created by this binary re-executed under that label
//! ([`helper_main`]), never by `ip`.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

use serde::Deserialize;

use super::shared::{self, IpSource, Notify, null_default};
use crate::cni::{Applet, CniError, CniOutput, CniResult, Request};
use crate::iface;
use crate::netlink::Netlink;
use crate::netlink::tun::{self, TapSpec};
use crate::netns::NetNs;

pub const APPLET: Applet = Applet {
    name: "tap",
    min_version: "0.1.0",
    run,
};

/// argv[1] of the re-executed binary that creates a labelled tap (see [`helper_main`]).
const HELPER_FLAG: &str = "--cnibox-create-tap";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TapConf {
    #[serde(default, deserialize_with = "null_default")]
    multi_queue: bool,
    #[serde(default, deserialize_with = "null_default")]
    mtu: i64,
    #[serde(default, deserialize_with = "null_default")]
    mac: String,
    #[serde(default)]
    owner: Option<u32>,
    #[serde(default)]
    group: Option<u32>,
    #[serde(default, deserialize_with = "null_default")]
    selinux_context: String,
    #[serde(default, deserialize_with = "null_default")]
    bridge: String,
}

fn run(req: &Request) -> CniResult<Option<CniOutput>> {
    shared::dispatch_single(req, add, del, check, shared::status)
}

/// The device the reference would make for this config (see the module comment).
fn tap_spec(conf: &TapConf, name: &str) -> TapSpec {
    let netlink_path =
        conf.selinux_context.is_empty() && conf.owner.is_some() && conf.group.is_some();
    TapSpec {
        name: name.to_string(),
        multi_queue: conf.multi_queue,
        vnet_hdr: netlink_path,
        no_pi: !netlink_path || conf.multi_queue,
        owner: conf.owner,
        group: conf.group,
    }
}

fn add(req: &Request) -> CniResult<CniOutput> {
    let conf: TapConf = req.decode()?;
    let mac = shared::configured_mac(req, &conf.mac)?;
    let netns = shared::open_netns(&req.env.netns)?;
    let ifname = req.env.ifname.as_str();
    let intf = create_tap(&conf, mac, &netns, ifname, &req.env.netns)?;
    let source = IpSource::from_config(req);
    let notify = Notify {
        arp: true,
        ndisc: false,
    };
    shared::finish_created(req, &netns, intf, source, notify)
}

/// Everything inside the container: the device under a temporary name, its MTU and MAC,
/// the final name, the bridge, up. Nothing is left behind when a step fails.
fn create_tap(
    conf: &TapConf,
    mac: Option<[u8; 6]>,
    netns: &NetNs,
    ifname: &str,
    sandbox: &str,
) -> CniResult<crate::cni::result::Interface> {
    let tmp = iface::random_veth_name()?;
    let spec = tap_spec(conf, &tmp);
    iface::in_netns(netns, |nl| {
        if conf.selinux_context.is_empty() {
            tun::create_tap(&spec)
                .map_err(|e| CniError::internal(format!("failed to create tap: {e}")))?;
        } else {
            create_labelled(&spec, &conf.selinux_context)?;
        }
        let configured = (|| {
            let link = nl
                .link_by_name(&tmp)
                .map_err(CniError::internal)?
                .ok_or_else(|| CniError::internal(format!("failed to find new tap {tmp:?}")))?;
            if let Some(mtu) = shared::mtu(conf.mtu) {
                nl.set_mtu(link.index, mtu)
                    .map_err(|e| CniError::internal(format!("failed to set tap MTU: {e}")))?;
            }
            if let Some(mac) = mac {
                nl.set_mac(link.index, mac)
                    .map_err(|e| CniError::internal(format!("failed to set tap MAC: {e}")))?;
            }
            iface::rename_new_link(nl, &tmp, ifname, "tap")?;
            if !conf.bridge.is_empty() {
                let bridge = nl
                    .link_by_name(&conf.bridge)
                    .map_err(CniError::internal)?
                    .ok_or_else(|| {
                        CniError::internal(format!(
                            "failed to get bridge {}: Link not found",
                            conf.bridge
                        ))
                    })?;
                nl.set_master(link.index, Some(bridge.index)).map_err(|e| {
                    CniError::internal(format!(
                        "failed to set tap {ifname} as a port of bridge {}: {e}",
                        conf.bridge
                    ))
                })?;
            }
            nl.set_up(link.index, true)
                .map_err(|e| CniError::internal(format!("failed to set tap interface up: {e}")))?;
            iface::container_interface(nl, ifname, sandbox, "tap")
        })();
        if configured.is_err() {
            for name in [tmp.as_str(), ifname] {
                if let Ok(Some(link)) = nl.link_by_name(name) {
                    let _ = nl.delete_link(link.index);
                }
            }
        }
        configured
    })
}

/// Creates the tap from a child process running this binary under the SELinux label
/// `label`, in the calling thread's namespace (which the child inherits). The label is set on
/// a throwaway thread: it stays on the thread that set it, and anything that thread ran later
/// (an IPAM plugin) would run under it too.
fn create_labelled(spec: &TapSpec, label: &str) -> CniResult<()> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| run_labelled_helper(spec, label))
            .join()
            .unwrap_or_else(|_| Err(CniError::internal("failed to create tap: helper panicked")))
    })
}

fn run_labelled_helper(spec: &TapSpec, label: &str) -> CniResult<()> {
    std::fs::write("/proc/thread-self/attr/exec", label)
        .map_err(|e| CniError::internal(format!("failed set socket label: {e}")))?;
    let mut args: Vec<String> = vec![
        HELPER_FLAG.to_string(),
        spec.name.clone(),
        u8::from(spec.multi_queue).to_string(),
        u8::from(spec.vnet_hdr).to_string(),
        u8::from(spec.no_pi).to_string(),
    ];
    for id in [spec.owner, spec.group] {
        args.push(id.map(|i| i.to_string()).unwrap_or_default());
    }
    let output = std::process::Command::new("/proc/self/exe")
        .arg0(APPLET.name)
        .args(&args)
        .env_clear()
        .output()
        .map_err(|e| CniError::internal(format!("failed to create tap: {e}")))?;
    if !output.status.success() {
        return Err(CniError::internal(format!(
            "failed to create tap: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// The re-executed side of [`create_labelled`]: `tap --cnibox-create-tap NAME MQ VNET NOPI
/// OWNER GROUP` creates the device and exits. None for any other command line.
pub fn helper_main(args: &[OsString]) -> Option<i32> {
    let invoked_as = std::path::Path::new(args.first()?).file_name()?;
    if invoked_as != APPLET.name || args.get(1)? != HELPER_FLAG {
        return None;
    }
    let text: Vec<String> = args[2..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let [name, mq, vnet, nopi, owner, group] = text.as_slice() else {
        eprintln!("usage: tap {HELPER_FLAG} NAME MQ VNET NOPI OWNER GROUP");
        return Some(2);
    };
    let id = |s: &str| s.parse::<u32>().ok();
    let spec = TapSpec {
        name: name.clone(),
        multi_queue: mq == "1",
        vnet_hdr: vnet == "1",
        no_pi: nopi == "1",
        owner: id(owner),
        group: id(group),
    };
    Some(match tun::create_tap(&spec) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    })
}

fn del(req: &Request) -> CniResult<()> {
    let _conf: TapConf = req.decode()?;
    shared::del_single(req)
}

/// CHECK, as the reference's: the addresses and routes of the result (the device itself is
/// not looked at).
fn check(req: &Request) -> CniResult<()> {
    let _conf: TapConf = req.decode()?;
    let _ = shared::configured_mac(req, "")?;
    let netns = shared::open_netns(&req.env.netns)?;
    shared::ipam_check(req)?;
    let (prev, _intf) = shared::prev_container_interface(req, "Required prevResult missing")?;
    let ifname = req.env.ifname.as_str();
    iface::in_netns(&netns, |nl: &Netlink| {
        iface::validate_result(nl, ifname, &prev)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_flags_follow_the_references_two_paths() {
        let plain = TapConf::default();
        let s = tap_spec(&plain, "t0");
        assert!(s.no_pi && !s.vnet_hdr && !s.multi_queue);
        let owned = TapConf {
            owner: Some(1),
            group: Some(2),
            ..TapConf::default()
        };
        let s = tap_spec(&owned, "t0");
        assert!(!s.no_pi && s.vnet_hdr);
        assert_eq!((s.owner, s.group), (Some(1), Some(2)));
        let owned_mq = TapConf {
            multi_queue: true,
            ..owned
        };
        let s = tap_spec(&owned_mq, "t0");
        assert!(s.no_pi && s.vnet_hdr && s.multi_queue);
        let only_owner = TapConf {
            owner: Some(1),
            ..TapConf::default()
        };
        let s = tap_spec(&only_owner, "t0");
        assert!(s.no_pi && !s.vnet_hdr);
        assert_eq!((s.owner, s.group), (Some(1), None));
    }

    #[test]
    fn helper_only_answers_its_own_command_line() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(helper_main(&os(&["tap"])), None);
        assert_eq!(helper_main(&os(&["/x/macvlan", HELPER_FLAG])), None);
        assert_eq!(helper_main(&os(&["/opt/cni/bin/tap", "--other"])), None);
        assert_eq!(helper_main(&os(&["tap", HELPER_FLAG, "x"])), Some(2));
    }
}
