//! host-local: IPAM from address ranges, with reservations in a data directory on the node.

use crate::cni::result::CniOutput;
use crate::cni::{Applet, CniResult, Command, Request};
use crate::ipam::host_local::allocator;
use crate::ipam::host_local::config::Config;

pub const APPLET: Applet = Applet {
    name: "host-local",
    min_version: "0.1.0",
    run,
};

fn run(req: &Request) -> CniResult<Option<CniOutput>> {
    let conf = Config::load(req)?;
    let (id, ifname) = (req.env.container_id.as_str(), req.env.ifname.as_str());
    match req.command {
        Command::Add => {
            let dns = conf.dns()?;
            let ips = allocator::add(&conf, id, ifname)?;
            Ok(Some(CniOutput {
                ips,
                routes: conf.routes.clone(),
                dns,
                ..CniOutput::default()
            }))
        }
        Command::Del => allocator::del(&conf, id, ifname).map(|()| None),
        Command::Check => allocator::check(&conf, id, ifname).map(|()| None),
        Command::Gc => match req.config.attachments_to_keep() {
            Some(valid) => allocator::gc(&conf, valid).map(|()| None),
            // No list at all (cnitool sends none): nothing is known to be stale.
            None => Ok(None),
        },
        Command::Status => allocator::status(&conf).map(|()| None),
        Command::Version => Ok(None),
    }
}
