//! One module per plugin; each only composes the protocol, netns, netlink and IPAM layers.

pub mod host_local;
pub mod loopback;
pub mod ptp;
pub mod shared;
pub mod static_ipam;
pub mod tuning;
