//! cnitool: drive a network config list by hand, with upstream cnitool's CLI.
//!
//!   cnitool add|check|del|gc|status <net> <netns>
//!
//! Environment: NETCONFPATH (default /etc/cni/net.d), CNI_PATH, CNI_ARGS ("K=V;K=V"),
//! CAP_ARGS (a JSON object of capability arguments), CNI_IFNAME (default eth0),
//! CNI_CACHE_DIR (default /var/lib/cni).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use libcni::conf::load_conf_list;
use libcni::runtime::{CniConfig, RuntimeConf, DEFAULT_CACHE_DIR};
use libcni::{args, invoke, Error};
use sha2::{Digest, Sha512};

fn usage(exe: &str) -> ExitCode {
    eprintln!("{exe}: Add, check, remove, garbage-collect or query network interfaces from a network namespace");
    for verb in ["add   ", "check ", "del   ", "gc    ", "status"] {
        eprintln!("  {exe} {verb} <net> <netns>");
    }
    ExitCode::FAILURE
}

/// `"cnitool-" + hex(sha512(absolute netns path)[:10])`, as upstream derives the container ID.
fn container_id(netns: &Path) -> String {
    let digest = Sha512::digest(netns.as_os_str().as_encoded_bytes());
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("cnitool-{hex}")
}

/// Go's `filepath.Abs`: join with the working directory and clean `.`/`..` lexically.
fn absolute(path: &str) -> std::io::Result<PathBuf> {
    let joined = std::env::current_dir()?.join(path);
    let mut clean = PathBuf::from("/");
    for part in joined.components() {
        match part {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::Normal(p) => clean.push(p),
            _ => {}
        }
    }
    Ok(clean)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn run(verb: &str, net: &str, netns: Option<&str>) -> Result<(), Error> {
    let conf_dir = env("NETCONFPATH").filter(|s| !s.is_empty()).unwrap_or_else(|| "/etc/cni/net.d".into());
    let list = load_conf_list(Path::new(&conf_dir), net)?;
    let capability_args = match env("CAP_ARGS").filter(|s| !s.is_empty()) {
        None => Default::default(),
        Some(text) => match libcni::json::parse(text.as_bytes()) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(_) => return Err(Error::config("CAP_ARGS must be a JSON object")),
            Err(e) => return Err(Error::decoding(format!("CAP_ARGS: {e}"))),
        },
    };
    let cni_args = args::split_pairs(&env("CNI_ARGS").unwrap_or_default())?;
    let ifname = env("CNI_IFNAME").unwrap_or_else(|| "eth0".into());
    let cache_dir = env("CNI_CACHE_DIR").filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_CACHE_DIR.into());
    let cni = CniConfig::new(invoke::split_path(&env("CNI_PATH").unwrap_or_default()), cache_dir);

    let netns = netns.map(absolute).transpose().map_err(|e| Error::io(format!("netns path: {e}")))?;
    let rt = netns.as_ref().map(|netns| RuntimeConf {
        container_id: container_id(netns),
        netns: netns.display().to_string(),
        ifname: ifname.clone(),
        args: cni_args,
        capability_args,
    });
    let need_rt = || rt.as_ref().ok_or_else(|| Error::config(format!("{verb} needs a network namespace")));
    match verb {
        "add" => {
            let result = cni.add_network_list(&list, need_rt()?)?;
            println!("{}", result.to_wire());
            Ok(())
        }
        "check" => cni.check_network_list(&list, need_rt()?),
        "del" => cni.del_network_list(&list, need_rt()?),
        // With a netns, that attachment stays valid and every other cached one is collected.
        "gc" => {
            let valid: Vec<(String, String)> =
                rt.iter().map(|rt| (rt.container_id.clone(), rt.ifname.clone())).collect();
            cni.gc_network_list(&list, &valid)
        }
        "status" => cni.status_network_list(&list),
        _ => unreachable!("verbs are checked in main"),
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let exe = argv
        .first()
        .map(|a| Path::new(a).file_name().and_then(|n| n.to_str()).unwrap_or("cnitool"))
        .unwrap_or("cnitool");
    let verb = argv.get(1).map(String::as_str).unwrap_or("");
    let needs_netns = matches!(verb, "add" | "check" | "del");
    let known = needs_netns || matches!(verb, "gc" | "status");
    if !known || argv.len() < if needs_netns { 4 } else { 3 } || argv.len() > 4 {
        return usage(exe);
    }
    match run(verb, &argv[2], argv.get(3).map(String::as_str)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_id_is_upstreams_hash() {
        // printf '%s' /var/run/netns/testing | sha512sum | cut -c1-20
        assert_eq!(container_id(Path::new("/var/run/netns/testing")), "cnitool-77383ca0a0715733ca6f");
    }

    #[test]
    fn absolute_paths_are_cleaned() {
        assert_eq!(absolute("/var/run/netns/../netns/x").unwrap(), PathBuf::from("/var/run/netns/x"));
        assert!(absolute("rel").unwrap().is_absolute());
    }
}
