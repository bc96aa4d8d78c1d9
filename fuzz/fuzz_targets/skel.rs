//! The skel's handling of stdin (tests/fuzz.rs `fuzz_skel_stdin`): whatever stdin holds,
//! a failure is a CNI error JSON with a code and a message.
#![no_main]
use libcni::skel::{CmdArgs, Plugin, PluginInfo};
use libcni::types::AnyResult;
use libcni::version::ALL;
use libfuzzer_sys::fuzz_target;

struct Never;

impl Plugin for Never {
    fn add(&self, _: &CmdArgs) -> libcni::Result<AnyResult> {
        Err(libcni::Error::internal("not reached"))
    }
    fn del(&self, _: &CmdArgs) -> libcni::Result<()> {
        Ok(())
    }
    fn check(&self, _: &CmdArgs) -> libcni::Result<()> {
        Ok(())
    }
    fn gc(&self, _: &CmdArgs) -> libcni::Result<()> {
        Ok(())
    }
    fn status(&self, _: &CmdArgs) -> libcni::Result<()> {
        Ok(())
    }
}

const INFO: PluginInfo = PluginInfo { name: "fuzz", version: "0", supported: &ALL };

fuzz_target!(|data: &[u8]| {
    let getenv = |k: &str| {
        match k {
            "CNI_COMMAND" => "DEL",
            "CNI_CONTAINERID" => "c1",
            "CNI_IFNAME" => "eth0",
            "CNI_PATH" => "/x",
            _ => "",
        }
        .to_string()
    };
    let out = libcni::skel::dispatch(&Never, &INFO, &getenv, &mut &data[..]);
    if out.exit_code != 0 {
        let v = libcni::json::parse(out.stdout.as_bytes()).expect("errors are JSON");
        assert!(v["code"].as_u64().is_some() && v["msg"].is_string(), "{}", out.stdout);
    }
});
