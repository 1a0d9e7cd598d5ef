//! Kernel uapi numbers that neli 0.7.5 lacks, or only defines for `target_env = "gnu"` (the
//! release build is musl, where e.g. `Rta::Pref` does not exist).

/// `NLA_F_NESTED | NLA_F_NET_BYTEORDER` may be set on any attribute type the kernel sends.
pub const NLA_TYPE_MASK: u16 = 0x3fff;

/// `linux/rtnetlink.h`: `IFLA_EXT_MASK` bits (bridge VLAN lists, no counters).
pub const RTEXT_FILTER_BRVLAN: u32 = 1 << 1;
pub const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;

/// `linux/veth.h`: nested in `IFLA_INFO_DATA`, payload is an `ifinfomsg` plus attributes.
pub const VETH_INFO_PEER: u16 = 1;

/// `linux/rtnetlink.h`: members of the `RTA_METRICS` nest.
pub const RTAX_MTU: u16 = 2;
pub const RTAX_ADVMSS: u16 = 8;

/// `linux/if_addr.h`: the full 32-bit flags live in `IFA_FLAGS`; `ifa_flags` keeps 8 bits.
pub const IFA_F_NODAD: u32 = 0x02;
pub const IFA_F_DADFAILED: u32 = 0x08;
pub const IFA_F_TENTATIVE: u32 = 0x40;

/// `linux/rtnetlink.h`: route types and the protocol of routes the kernel adds itself.
pub const RTN_UNICAST: u8 = 1;
pub const RTPROT_KERNEL: u8 = 2;

pub const RT_TABLE_UNSPEC: u32 = 0;
pub const RT_TABLE_MAIN: u32 = 254;

pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
pub const RT_SCOPE_HOST: u8 = 254;

/// `RTPROT_BOOT`: what `ip route add` marks routes with by default.
pub const RTPROT_BOOT: u8 = 3;
