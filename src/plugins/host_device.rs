//! host-device: moves an existing link of the host into the container as `CNI_IFNAME`, and
//! back under its old name on DEL. The device is picked by `device` (name), `hwaddr`,
//! `kernelpath`, `pciBusID` or the runtime's `deviceID` (PCI or auxiliary bus). The old
//! name travels in the link's alias, as the reference keeps it; renames happen in a
//! throwaway namespace, so the host never sees the device under a temporary name.
//!
//! A PCI device bound to a userspace driver (vfio-pci, uio_pci_generic, igb_uio) is "DPDK
//! mode": nothing is moved, as in the reference.
//!
//! sysfs lists the links of the namespace that mounted it, which need not be the one this
//! plugin runs in. A sysfs entry is only taken when that link exists here; otherwise the link
//! whose parent device (as netlink reports it, for this namespace) is the one named is.
//!
//! Unlike the reference: DEL releases the IPAM reservation even without a namespace (the
//! reference returns first and leaks it), and a DEL that finds no device (a second DEL, or
//! the namespace gone) succeeds.

use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use serde::Deserialize;

use super::shared::{self, IpSource, Notify, null_default};
use crate::cni::result::Interface;
use crate::cni::{Applet, CniError, CniOutput, CniResult, Command, Request};
use crate::iface;
use crate::ipam;
use crate::netlink::{Link, Netlink};
use crate::netns::NetNs;

pub const APPLET: Applet = Applet {
    name: "host-device",
    min_version: "0.1.0",
    run,
};

const SYS_BUS_PCI: &str = "/sys/bus/pci/devices";
const SYS_BUS_AUXILIARY: &str = "/sys/bus/auxiliary/devices";

/// Drivers that hand a PCI network device to userspace.
const USERSPACE_DRIVERS: [&str; 3] = ["vfio-pci", "uio_pci_generic", "igb_uio"];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HostDeviceConf {
    #[serde(default, deserialize_with = "null_default")]
    device: String,
    #[serde(default, deserialize_with = "null_default")]
    hwaddr: String,
    #[serde(default, deserialize_with = "null_default")]
    kernelpath: String,
    #[serde(default, rename = "pciBusID", deserialize_with = "null_default")]
    pci_bus_id: String,
    /// The reference's untagged `DPDKMode` field can be set from the config too.
    #[serde(default, rename = "DPDKMode", deserialize_with = "null_default")]
    dpdk_mode: bool,
    #[serde(default, deserialize_with = "null_default")]
    runtime_config: RuntimeConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeConfig {
    #[serde(default, rename = "deviceID", deserialize_with = "null_default")]
    device_id: String,
}

/// How the device is named in the config, after `deviceID` is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    Name(String),
    Mac(String),
    KernelPath(String),
    Pci(String),
    Auxiliary(String),
}

struct Loaded {
    selector: Selector,
    dpdk: bool,
}

fn run(req: &Request) -> CniResult<Option<CniOutput>> {
    shared::dispatch_single(req, add, del, check, shared::status)
}

/// The reference's `loadConf`: `deviceID` wins over the keys, one of them is required, and
/// a PCI device's driver decides DPDK mode.
fn load(req: &Request) -> CniResult<Loaded> {
    let conf: HostDeviceConf = req.decode()?;
    let mut pci = conf.pci_bus_id.clone();
    let mut aux = String::new();
    let id = &conf.runtime_config.device_id;
    if !id.is_empty() {
        if Path::new(SYS_BUS_PCI).join(id).exists() {
            pci = id.clone();
        } else if Path::new(SYS_BUS_AUXILIARY).join(id).exists() {
            pci.clear();
            aux = id.clone();
        } else {
            return Err(CniError::internal(format!(
                "runtime config DeviceID {id} not found or unsupported"
            )));
        }
    }
    let selector = if !conf.device.is_empty() {
        Selector::Name(conf.device.clone())
    } else if !conf.hwaddr.is_empty() {
        Selector::Mac(conf.hwaddr.clone())
    } else if !conf.kernelpath.is_empty() {
        Selector::KernelPath(conf.kernelpath.clone())
    } else if !pci.is_empty() {
        Selector::Pci(pci.clone())
    } else if !aux.is_empty() {
        Selector::Auxiliary(aux)
    } else {
        return Err(CniError::internal(
            "specify either \"device\", \"hwaddr\", \"kernelpath\" or \"pciBusID\"",
        ));
    };
    let dpdk = if pci.is_empty() {
        conf.dpdk_mode
    } else {
        has_dpdk_driver(&pci)
            .map_err(|e| CniError::internal(format!("error with host device: {e}")))?
    };
    Ok(Loaded { selector, dpdk })
}

fn has_dpdk_driver(pci: &str) -> std::io::Result<bool> {
    let driver = std::fs::canonicalize(Path::new(SYS_BUS_PCI).join(pci).join("driver"))?;
    let name = driver.file_name().map(|n| n.to_string_lossy().into_owned());
    Ok(name.is_some_and(|n| USERSPACE_DRIVERS.contains(&n.as_str())))
}

/// The host link the selector names, in the namespace of `nl`.
fn find_device(nl: &Netlink, selector: &Selector) -> CniResult<Link> {
    let not_found = || CniError::internal("failed to find physical interface");
    match selector {
        Selector::Name(name) => nl
            .link_by_name(name)
            .map_err(CniError::internal)?
            .ok_or_else(|| CniError::internal("Link not found")),
        Selector::Mac(text) => {
            let mac = iface::parse_mac(text).ok_or_else(|| {
                CniError::internal(format!(
                    "failed to parse MAC address {text:?}: address {text}: invalid MAC address"
                ))
            })?;
            let links = nl
                .links()
                .map_err(|e| CniError::internal(format!("failed to list node links: {e}")))?;
            links
                .into_iter()
                .find(|l| l.mac == Some(mac))
                .ok_or_else(not_found)
        }
        Selector::KernelPath(path) => {
            if !Path::new(path).is_absolute() || !path.starts_with("/sys/devices/") {
                return Err(CniError::internal(format!(
                    "kernel device path {path:?} must be absolute and begin with /sys/devices/"
                )));
            }
            let dir = Path::new(path).join("net");
            let parent = Path::new(path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            link_from_sysfs(nl, &dir, parent.as_deref())
        }
        Selector::Pci(pci) => {
            let device = Path::new(SYS_BUS_PCI).join(pci);
            let dir = device.join("net");
            if dir.symlink_metadata().is_ok() {
                return link_from_sysfs(nl, &dir, Some(pci));
            }
            // A virtio NIC sits one level down: <pci>/virtioN/net.
            let virtio = virtio_dirs(&device);
            let Some(first) = virtio.first() else {
                return Err(CniError::internal(format!(
                    "no net directory under pci device {pci}"
                )));
            };
            let parent = first.file_name().map(|n| n.to_string_lossy().into_owned());
            link_from_sysfs(nl, &first.join("net"), parent.as_deref())
        }
        Selector::Auxiliary(aux) => {
            let dir = Path::new(SYS_BUS_AUXILIARY).join(aux).join("net");
            link_from_sysfs(nl, &dir, Some(aux))
        }
    }
}

/// `<device>/virtio*` directories that have a `net` directory, sorted.
fn virtio_dirs(device: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(device)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("virtio"))
                .map(|e| e.path())
                .filter(|p| p.join("net").symlink_metadata().is_ok())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The first link listed in the sysfs `net` directory `dir` that exists in this namespace;
/// failing that, the link here whose parent device is `parent` (sysfs may be another
/// namespace's).
fn link_from_sysfs(nl: &Netlink, dir: &Path, parent: Option<&str>) -> CniResult<Link> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) if parent.is_some() => Vec::new(),
        Err(e) => {
            return Err(CniError::internal(format!(
                "failed to read directory {}: {:?}",
                dir.display(),
                e.to_string()
            )));
        }
    };
    names.sort();
    for name in &names {
        if let Some(link) = nl.link_by_name(name).map_err(CniError::internal)? {
            return Ok(link);
        }
    }
    if let Some(parent) = parent {
        let links = nl.all_link_details().map_err(CniError::internal)?;
        if let Some(found) = links
            .into_iter()
            .find(|d| d.parent_dev.as_deref() == Some(parent))
        {
            return Ok(found.link);
        }
    }
    Err(CniError::internal(format!(
        "failed to find network device in path {}",
        dir.display()
    )))
}

/// A fresh network namespace held only by the returned handle; it goes away when that is
/// dropped (virtual links inside with it, physical ones back to the initial namespace).
fn temp_netns() -> CniResult<NetNs> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|e| CniError::internal(format!("failed to create tempNS: {e}")))?;
                NetNs::open("/proc/thread-self/ns/net")
                    .map_err(|e| CniError::internal(format!("failed to create tempNS: {e}")))
            })
            .join()
            .map_err(|_| CniError::internal("failed to create tempNS: thread panicked"))?
    })
}

fn add(req: &Request) -> CniResult<CniOutput> {
    let loaded = load(req)?;
    let netns = shared::open_netns(&req.env.netns)?;
    let ifname = req.env.ifname.as_str();
    if loaded.dpdk {
        return add_dpdk(req);
    }
    let host_nl = Netlink::open().map_err(CniError::internal)?;
    let device = find_device(&host_nl, &loaded.selector)
        .map_err(|e| e.context("failed to find host device"))?;
    let intf = move_in(&host_nl, &device, &netns, ifname, &req.env.netns)
        .map_err(|e| e.context("failed to move link"))?;
    if req.config.ipam_type().is_none() {
        return Ok(CniOutput {
            interfaces: vec![intf],
            ..CniOutput::default()
        });
    }
    match shared::finish_single(req, &netns, intf, IpSource::Ipam, Notify::default()) {
        Ok(mut result) => {
            result.dns = req.config.dns.clone().unwrap_or_default();
            Ok(result)
        }
        Err(e) => {
            // Give the device back as it was found (up again if it was).
            if let Err(undo) = move_out(&netns, ifname) {
                tracing::warn!("moving {ifname} back after a failed ADD: {undo}");
            }
            if device.up
                && let Ok(Some(back)) = host_nl.link_by_name(&device.name)
            {
                let _ = host_nl.set_up(back.index, true);
            }
            Err(e)
        }
    }
}

/// DPDK mode: nothing moves; the result names the interface and, with IPAM, its addresses.
fn add_dpdk(req: &Request) -> CniResult<CniOutput> {
    let intf = Interface {
        name: req.env.ifname.clone(),
        sandbox: req.env.netns.clone(),
        ..Interface::default()
    };
    if req.config.ipam_type().is_none() {
        return Ok(CniOutput {
            interfaces: vec![intf],
            ..CniOutput::default()
        });
    }
    let mut result = shared::ipam_add(req)?;
    if result.ips.is_empty() {
        shared::release_after_failure(req);
        return Err(CniError::internal("IPAM plugin returned missing IP config"));
    }
    for ip in &mut result.ips {
        ip.interface = Some(0);
    }
    result.interfaces = vec![intf];
    result.dns = req.config.dns.clone().unwrap_or_default();
    Ok(result)
}

/// Host → throwaway namespace (renamed to `ifname` there, old name in the alias) →
/// container, set up. Every step is undone when a later one fails, and the device is set up
/// again on the host if it was.
fn move_in(
    host_nl: &Netlink,
    device: &Link,
    container: &NetNs,
    ifname: &str,
    sandbox: &str,
) -> CniResult<Interface> {
    let orig = device.name.as_str();
    let host = NetNs::current()
        .map_err(|e| CniError::internal(format!("failed to open the plugin's own netns: {e}")))?;
    let temp = temp_netns()?;
    let moved = (|| {
        host_nl
            .move_to_netns(device.index, temp.fd())
            .map_err(|e| CniError::internal(format!("failed to move {orig:?} to tempNS: {e}")))?;
        iface::in_netns(&temp, |nl| {
            let dev = nl
                .link_by_name(orig)
                .map_err(CniError::internal)?
                .ok_or_else(|| {
                    CniError::internal(format!("failed to find {orig:?} in tempNS: Link not found"))
                })?;
            let steps = (|| {
                nl.rename(dev.index, ifname).map_err(|e| {
                    CniError::internal(format!(
                        "failed to rename host device {orig:?} to {ifname:?}: {e}"
                    ))
                })?;
                nl.set_alias(dev.index, orig).map_err(|e| {
                    CniError::internal(format!("failed to set alias to {orig:?}: {e}"))
                })?;
                nl.move_to_netns(dev.index, container.fd()).map_err(|e| {
                    CniError::internal(format!(
                        "failed to move {ifname:?} (host: {orig:?}) to container NS: {e}"
                    ))
                })
            })();
            if steps.is_err() {
                let _ = nl.set_alias(dev.index, "");
                let _ = nl.rename(dev.index, orig);
                let _ = nl.move_to_netns(dev.index, host.fd());
            }
            steps
        })?;
        iface::in_netns(container, |nl| {
            let dev = nl
                .link_by_name(ifname)
                .map_err(CniError::internal)?
                .ok_or_else(|| {
                    CniError::internal(format!(
                        "failed to find {ifname:?} in container NS: Link not found"
                    ))
                })?;
            nl.set_up(dev.index, true)
                .map_err(|e| CniError::internal(format!("failed to set {ifname:?} up: {e}")))?;
            iface::container_interface(nl, ifname, sandbox, "host device")
        })
        .inspect_err(|_| {
            let _ = move_out(container, ifname);
        })
    })();
    if moved.is_err()
        && device.up
        && let Ok(Some(back)) = host_nl.link_by_name(orig)
    {
        let _ = host_nl.set_up(back.index, true);
    }
    moved
}

/// Container → throwaway namespace (renamed to the alias, alias cleared) → this namespace,
/// left down. Ok(false) when the container has no `ifname`.
fn move_out(container: &NetNs, ifname: &str) -> CniResult<bool> {
    let host = NetNs::current()
        .map_err(|e| CniError::internal(format!("failed to open the plugin's own netns: {e}")))?;
    let temp = temp_netns()?;
    let found = iface::in_netns(container, |nl| {
        let Some(dev) = nl.link_by_name(ifname).map_err(CniError::internal)? else {
            return Ok(None);
        };
        let orig = dev.alias.clone().unwrap_or_default();
        if orig.is_empty() {
            return Err(CniError::internal(format!(
                "failed to find original ifname for {ifname:?} (alias is not set)"
            )));
        }
        nl.move_to_netns(dev.index, temp.fd())
            .map_err(|e| CniError::internal(format!("failed to move {ifname:?} to tempNS: {e}")))?;
        Ok(Some((orig, dev.up)))
    })?;
    let Some((orig, was_up)) = found else {
        return Ok(false);
    };
    let back = iface::in_netns(&temp, |nl| {
        let dev = nl
            .link_by_name(ifname)
            .map_err(CniError::internal)?
            .ok_or_else(|| {
                CniError::internal(format!(
                    "failed to find {ifname:?} in tempNS: Link not found"
                ))
            })?;
        let steps = (|| {
            nl.rename(dev.index, &orig).map_err(|e| {
                CniError::internal(format!(
                    "failed to rename device {ifname:?} to {orig:?}: {e}"
                ))
            })?;
            nl.set_alias(dev.index, "").map_err(|e| {
                CniError::internal(format!("failed to unset alias of {orig:?}: {e}"))
            })?;
            nl.move_to_netns(dev.index, host.fd())
                .map_err(|e| CniError::internal(format!("failed to move {orig:?} to hostNS: {e}")))
        })();
        if steps.is_err() {
            let _ = nl.set_alias(dev.index, &orig);
            let _ = nl.rename(dev.index, ifname);
            let _ = nl.move_to_netns(dev.index, container.fd());
        }
        steps
    });
    if let Err(e) = back {
        if was_up {
            let _ = iface::in_netns(container, |nl| {
                if let Ok(Some(dev)) = nl.link_by_name(ifname) {
                    let _ = nl.set_up(dev.index, true);
                }
                Ok(())
            });
        }
        return Err(e);
    }
    Ok(true)
}

fn del(req: &Request) -> CniResult<()> {
    let conf: HostDeviceConf = req.decode()?;
    // Released first and whatever else is gone: the reference skips this without a netns.
    if req.config.ipam_type().is_some() {
        ipam::delegate(req, Command::Del)?;
    }
    let Some(netns) = shared::open_netns_for_del(&req.env.netns)? else {
        return Ok(());
    };
    // DPDK mode is decided as ADD decided it; a device that cannot be looked at any more is
    // not one that stayed with userspace.
    let pci = if conf.runtime_config.device_id.is_empty() {
        conf.pci_bus_id.clone()
    } else {
        conf.runtime_config.device_id.clone()
    };
    let dpdk = conf.dpdk_mode || (!pci.is_empty() && has_dpdk_driver(&pci).unwrap_or(false));
    if dpdk {
        return Ok(());
    }
    move_out(&netns, &req.env.ifname).map(|_| ())
}

fn check(req: &Request) -> CniResult<()> {
    let loaded = load(req)?;
    let netns = shared::open_netns(&req.env.netns)?;
    shared::ipam_check(req)?;
    if req.config.prev_result.as_ref().is_none_or(|v| v.is_null()) {
        return Err(CniError::internal("Required prevResult missing"));
    }
    if loaded.dpdk {
        return req.prev_result().map(|_| ());
    }
    let (prev, intf) = shared::prev_container_interface(req, "Required prevResult missing")?;
    let ifname = req.env.ifname.as_str();
    iface::in_netns(&netns, |nl| {
        iface::validate_container_link(nl, &intf)?;
        iface::validate_result(nl, ifname, &prev)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_paths_outside_sys_devices_are_refused() {
        let nl = Netlink::open().unwrap();
        for bad in ["sys/devices/x", "/sys/class/net/lo", "/tmp"] {
            let e = find_device(&nl, &Selector::KernelPath(bad.into())).unwrap_err();
            assert!(e.msg.contains("must be absolute"), "{bad}: {}", e.msg);
        }
    }

    #[test]
    fn bad_mac_and_missing_pci_device_fail_clearly() {
        let nl = Netlink::open().unwrap();
        let e = find_device(&nl, &Selector::Mac("zz".into())).unwrap_err();
        assert!(
            e.msg.starts_with("failed to parse MAC address"),
            "{}",
            e.msg
        );
        let e = find_device(&nl, &Selector::Pci("0000:ff:1f.7".into())).unwrap_err();
        assert_eq!(e.msg, "no net directory under pci device 0000:ff:1f.7");
    }
}
