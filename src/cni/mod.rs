//! The CNI protocol: environment, configuration, versions, results and errors. No netlink here.

pub mod args;
pub mod config;
pub mod env;
pub mod error;
pub mod result;
pub mod skel;
pub mod version;

pub use env::{Command, Env};
pub use error::{CniError, CniResult, code};
pub use result::CniOutput;
pub use skel::{Applet, Request};
