//! One module per plugin; each only composes the protocol, netns, netlink and IPAM layers.

pub mod bandwidth;
pub mod bridge;
pub mod dummy;
pub mod firewall;
pub mod host_device;
pub mod host_local;
pub mod ipvlan;
pub mod loopback;
pub mod macvlan;
pub mod portmap;
pub mod ptp;
pub mod sbr;
pub mod shared;
pub mod static_ipam;
pub mod tap;
pub mod tuning;
pub mod vlan;
pub mod vrf;
