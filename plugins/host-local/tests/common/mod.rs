//! Running plugin binaries (ours and upstream's) as a runtime would.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Debian's build of upstream host-local (containernetworking-plugins 1.1.1).
pub const UPSTREAM: &str = "/usr/lib/cni/host-local";

pub fn ours() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_host-local"))
}

pub fn upstream() -> PathBuf {
    let path = PathBuf::from(UPSTREAM);
    assert!(
        path.is_file(),
        "{UPSTREAM} is missing: apt-get install containernetworking-plugins (scripts/test.sh does)"
    );
    path
}

/// One plugin invocation.
#[derive(Clone, Debug)]
pub struct Call {
    pub command: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    pub args: String,
    pub stdin: String,
    /// Extra environment (e.g. HOST_LOCAL_BOOT_ID to simulate a reboot).
    pub env: Vec<(String, String)>,
}

impl Call {
    pub fn new(command: &str, container_id: &str, stdin: &str) -> Call {
        Call {
            command: command.into(),
            container_id: container_id.into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/does-not-exist".into(),
            args: String::new(),
            stdin: stdin.into(),
            env: Vec::new(),
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Call {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn ifname(mut self, ifname: &str) -> Call {
        self.ifname = ifname.into();
        self
    }

    pub fn args(mut self, args: &str) -> Call {
        self.args = args.into();
        self
    }

    pub fn netns(mut self, netns: &str) -> Call {
        self.netns = netns.into();
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// The CNI error's (code, msg).
    pub fn error(&self) -> (u64, String) {
        assert_ne!(self.code, 0, "expected a failure: {self:?}");
        let v = self.json();
        (v["code"].as_u64().unwrap(), v["msg"].as_str().unwrap().to_string())
    }

    pub fn ips(&self) -> Vec<String> {
        let v = self.json();
        if let Some(ips) = v["ips"].as_array() {
            return ips.iter().map(|i| i["address"].as_str().unwrap().to_string()).collect();
        }
        ["ip4", "ip6"].iter().filter_map(|k| v[k]["ip"].as_str().map(str::to_string)).collect()
    }
}

/// `binary` started as a runtime starts a plugin for `call`, its stdio piped.
pub fn spawn(binary: &Path, call: &Call) -> std::process::Child {
    Command::new(binary)
        .env_clear()
        .env("CNI_COMMAND", &call.command)
        .env("CNI_CONTAINERID", &call.container_id)
        .env("CNI_NETNS", &call.netns)
        .env("CNI_IFNAME", &call.ifname)
        .env("CNI_ARGS", &call.args)
        .env("CNI_PATH", "/opt/cni/bin")
        .envs(call.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()))
}

pub fn run(binary: &Path, call: &Call) -> Outcome {
    let mut child = spawn(binary, call);
    // A plugin may reject its environment and exit before reading stdin.
    let _ = child.stdin.take().unwrap().write_all(call.stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    Outcome {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// Our binary run for `call`.
pub fn exec(call: Call) -> Outcome {
    run(&ours(), &call)
}

/// The addresses a call that must succeed reported.
pub fn ips(out: Outcome) -> Vec<String> {
    assert!(out.ok(), "{out:?}");
    out.ips()
}

/// A call that must succeed.
pub fn ok(out: Outcome) {
    assert!(out.ok(), "{out:?}");
}

/// A scratch directory (unique, named after the test), removed on drop.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        TempDir(tempfile::Builder::new().prefix(&format!("hl-test-{tag}-")).tempdir().unwrap())
    }

    /// A scratch directory under `parent` (a test filesystem's mount point).
    pub fn new_in(tag: &str, parent: &Path) -> TempDir {
        TempDir(tempfile::Builder::new().prefix(&format!("hl-test-{tag}-")).tempdir_in(parent).unwrap())
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    pub fn display(&self) -> String {
        self.path().display().to_string()
    }
}

/// A filesystem made by `mkfs` on a loop device, mounted in a scratch directory; unmounted
/// on drop.
pub struct LoopFs {
    dir: TempDir,
}

impl LoopFs {
    pub fn mount(tag: &str, mkfs: &[&str]) -> LoopFs {
        let dir = TempDir::new(tag);
        let image = dir.path().join("image");
        std::fs::File::create(&image).unwrap().set_len(256 << 20).unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let ok = |cmd: &mut Command| assert!(cmd.output().is_ok_and(|o| o.status.success()), "{cmd:?}");
        ok(Command::new(mkfs[0]).args(&mkfs[1..]).arg(&image));
        ok(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mnt));
        LoopFs { dir }
    }

    pub fn data_dir(&self) -> String {
        format!("{}/mnt", self.dir.display())
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path().join("mnt")).status();
    }
}

/// A network "net" whose IPAM is host-local on `dd`, with `ipam_fields` (JSON members,
/// comma-separated) after the type and dataDir.
pub fn net_conf(version: &str, dd: &TempDir, ipam_fields: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"net","ipam":{{"type":"host-local","dataDir":"{}",{ipam_fields}}}}}"#,
        dd.display()
    )
}

/// The files upstream host-local knows in a network directory: name -> content.
/// Our additions (the `.hostlocal` cache and `*.pod` records) are left out.
pub fn upstream_view(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return BTreeMap::new() };
    entries
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".pod"))
        .map(|n| {
            let content = std::fs::read(dir.join(&n)).unwrap();
            (n, content)
        })
        .collect()
}

/// Lease file names (addresses) in a network directory.
pub fn leases(dir: &Path) -> Vec<String> {
    upstream_view(dir).into_keys().filter(|n| n.parse::<std::net::IpAddr>().is_ok()).collect()
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce from the printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}
