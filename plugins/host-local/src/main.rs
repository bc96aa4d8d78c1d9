use host_local::plugin::HostLocal;
use libcni::skel::{self, PluginInfo};

const INFO: PluginInfo =
    PluginInfo { name: "host-local", version: env!("CARGO_PKG_VERSION"), supported: &libcni::version::ALL };

fn main() -> std::process::ExitCode {
    // Runtimes always set CNI_COMMAND; an operator runs `host-local leases` and friends.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var_os("CNI_COMMAND").is_none_or(|c| c.is_empty()) && !args.is_empty() {
        return host_local::admin::main(&args);
    }
    skel::main(&HostLocal, &INFO)
}
