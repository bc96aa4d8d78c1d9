// No std start-up: libc calls `main` (see `libcni::skel::prepare_process`).
#![no_main]

use std::io::Write;

use host_local::plugin::HostLocal;
use libcni::skel::{self, PluginInfo};

const INFO: PluginInfo =
    PluginInfo { name: "host-local", version: env!("CARGO_PKG_VERSION"), supported: &libcni::version::ALL };

#[unsafe(no_mangle)]
extern "C" fn main(_argc: std::ffi::c_int, _argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    skel::prepare_process();
    // Runtimes always set CNI_COMMAND; an operator runs `host-local leases` and friends.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var_os("CNI_COMMAND").is_none_or(|c| c.is_empty()) && !args.is_empty() {
        let status = host_local::admin::main(&args);
        // Nothing flushes stdout at exit without std's start-up.
        return if std::io::stdout().flush().is_ok() { status } else { 1 };
    }
    skel::main(&HostLocal, &INFO)
}
