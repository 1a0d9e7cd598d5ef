//! host-local IPAM: addresses from configured ranges, reserved in a data directory shared with
//! (and laid out exactly as by) the Go reference plugin. `common` is shared with static IPAM.

// The parent module allows dead code for its delegate; nothing here may be dead.
#![warn(dead_code)]

pub mod allocator;
pub mod common;
pub mod config;
mod index;
pub mod range;
mod store;
