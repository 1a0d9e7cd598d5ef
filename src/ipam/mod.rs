//! Running the IPAM plugin named by `ipam.type`, found in `CNI_PATH` like libcni does.

// The main plugins (bridge, ptp, macvlan, ...) are its callers; until they land, the unit
// tests below `delegate` exercise it against scripts and the Go host-local.

mod delegate;

pub use delegate::delegate;
pub mod host_local;
