//! cnibox: every CNI reference plugin in one static binary, picked by the name it was run as.

mod applets;
mod arena;
mod cni;
mod firewall;
mod iface;
mod install;
mod ipam;
mod logging;
mod netlink;
mod netns;
mod plugins;
mod sha512;
mod sysctl;

#[global_allocator]
static ALLOCATOR: arena::Arena = arena::Arena::new();

fn main() {
    std::process::exit(applets::main());
}
