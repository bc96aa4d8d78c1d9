use host_local::plugin::HostLocal;
use libcni::skel::{self, PluginInfo};

const INFO: PluginInfo =
    PluginInfo { name: "host-local", version: env!("CARGO_PKG_VERSION"), supported: &libcni::version::ALL };

fn main() {
    skel::main(&HostLocal, &INFO)
}
