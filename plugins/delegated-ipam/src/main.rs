// No std start-up: libc calls `main` (see `libcni::skel::prepare_process`).
#![no_main]

use delegated_ipam::DelegatedIpam;
use libcni::skel::{self, PluginInfo};

const INFO: PluginInfo =
    PluginInfo { name: "delegated-ipam", version: env!("CARGO_PKG_VERSION"), supported: &libcni::version::ALL };

#[unsafe(no_mangle)]
extern "C" fn main(_argc: std::ffi::c_int, _argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    skel::prepare_process();
    skel::main(&DelegatedIpam, &INFO)
}
