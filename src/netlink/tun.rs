//! Persistent tap devices through the tun driver's ioctls on `/dev/net/tun` (what
//! `ip tuntap add` does), not netlink: `TUNSETIFF`, then `TUNSETOWNER`/`TUNSETGROUP`, then
//! `TUNSETPERSIST` so the device outlives the descriptor.
//!
//! The device is created in the network namespace of the thread that opens `/dev/net/tun`, so
//! call this inside `NetNs::run`.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

const TUN_DEVICE: &str = "/dev/net/tun";

/// What to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapSpec {
    pub name: String,
    /// `IFF_MULTI_QUEUE`: several descriptors may attach to the device.
    pub multi_queue: bool,
    /// `IFF_VNET_HDR`: frames carry a `virtio_net_hdr`.
    pub vnet_hdr: bool,
    /// Packet information header off (`IFF_NO_PI`), as `ip tuntap` does unless told `pi`.
    pub no_pi: bool,
    /// The user and group allowed to attach without `CAP_NET_ADMIN`; None leaves it unset.
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

impl TapSpec {
    /// The `TUNSETIFF` flags: tap, refusing an existing device (`IFF_TUN_EXCL`).
    pub fn flags(&self) -> i16 {
        let mut flags = libc::IFF_TAP | libc::IFF_TUN_EXCL;
        if self.multi_queue {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        if self.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        if self.no_pi {
            flags |= libc::IFF_NO_PI;
        }
        // The flags field of `struct ifreq` is a short; 0x8000 is its sign bit.
        flags as u16 as i16
    }
}

/// `struct ifreq` as the tun driver reads it: the name, then the flags in the union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: i16,
    _rest: [u8; 22],
}

/// Creates the persistent tap device `spec.name` in the calling thread's namespace.
pub fn create_tap(spec: &TapSpec) -> io::Result<()> {
    let name = spec.name.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid tap name {:?}", spec.name),
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(TUN_DEVICE)
        .map_err(|e| io::Error::new(e.kind(), format!("open {TUN_DEVICE}: {e}")))?;
    let fd = file.as_raw_fd();
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: spec.flags(),
        _rest: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name);
    let call = |what: &str, result: libc::c_int| -> io::Result<()> {
        if result < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
        }
        Ok(())
    };
    // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is laid out as and
    // outlives the call.
    call("TUNSETIFF", unsafe {
        libc::ioctl(fd, libc::TUNSETIFF, &mut req as *mut IfReq)
    })?;
    // The three below take their argument by value; the device goes away with the descriptor
    // until TUNSETPERSIST, so a failure leaves nothing behind.
    if let Some(owner) = spec.owner {
        // SAFETY: an integer argument, no memory is passed.
        call("TUNSETOWNER", unsafe {
            libc::ioctl(fd, libc::TUNSETOWNER, owner as libc::c_ulong)
        })?;
    }
    if let Some(group) = spec.group {
        // SAFETY: as above.
        call("TUNSETGROUP", unsafe {
            libc::ioctl(fd, libc::TUNSETGROUP, group as libc::c_ulong)
        })?;
    }
    // SAFETY: as above.
    call("TUNSETPERSIST", unsafe {
        libc::ioctl(fd, libc::TUNSETPERSIST, 1 as libc::c_ulong)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert_eq!(std::mem::offset_of!(IfReq, flags), 16);
    }

    #[test]
    fn flags_follow_the_spec() {
        let mut spec = TapSpec {
            name: "tap0".into(),
            no_pi: true,
            ..TapSpec::default()
        };
        assert_eq!(spec.flags() as u16, 0x0002 | 0x8000 | 0x1000);
        spec.multi_queue = true;
        spec.vnet_hdr = true;
        spec.no_pi = false;
        assert_eq!(spec.flags() as u16, 0x0002 | 0x8000 | 0x0100 | 0x4000);
    }

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        for name in ["", "a-name-far-too-long", "a\0b"] {
            let spec = TapSpec {
                name: name.into(),
                ..TapSpec::default()
            };
            let err = create_tap(&spec).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
    }
}
