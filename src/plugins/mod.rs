//! One module per plugin; each only composes the protocol, netns, netlink and IPAM layers.

pub mod loopback;
