use delegated_ipam::DelegatedIpam;
use libcni::skel::{self, PluginInfo};

const INFO: PluginInfo =
    PluginInfo { name: "delegated-ipam", version: env!("CARGO_PKG_VERSION"), supported: &libcni::version::ALL };

fn main() {
    skel::main(&DelegatedIpam, &INFO)
}
