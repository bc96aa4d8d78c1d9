//! Power cuts: what host-local ADD acknowledged survives a pulled plug on ext4 (with and
//! without its journal), xfs, btrfs and f2fs. scripts/powercut/powercut.py does the work: per cut, a qemu VM (TCG) runs an
//! ADD/DEL storm with pod arguments on a fresh disk image, the host SIGKILLs qemu at a random
//! moment, a second boot of the same image dumps the store and re-ADDs every pod; the host
//! then checks (a) every acknowledged lease is there, (b) no empty or partial file, (c) every
//! pod gets its address back, (d) no address twice.
//!
//! Needs qemu-system-x86, busybox-static, kmod, the four mkfs tools and apt (the harness
//! downloads Debian's 6.1 kernels into target/powercut on first use); scripts/test.sh installs
//! them. POWERCUT_CUTS (default 2) sets the cuts per filesystem, POWERCUT_SEED the first seed.
//! A longer run: `scripts/powercut/powercut.py --fs all --cuts 50`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const FILESYSTEMS: [&str; 5] = ["ext4", "ext4-nojournal", "xfs", "btrfs", "f2fs"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

#[test]
#[ignore = "needs qemu-system-x86, mkfs.{ext4,xfs,btrfs,f2fs}, kmod, busybox-static and apt: run scripts/test.sh"]
fn acknowledged_adds_survive_power_cuts_on_ext4_xfs_btrfs_f2fs() {
    let missing: Vec<&str> =
        ["qemu-system-x86_64", "busybox", "depmod", "mkfs.ext4", "mkfs.xfs", "mkfs.btrfs", "mkfs.f2fs", "python3"]
            .into_iter()
            .filter(|tool| !on_path(tool))
            .collect();
    assert!(
        missing.is_empty(),
        "power-cut test cannot run, missing {missing:?}: apt-get install qemu-system-x86 busybox-static kmod \
         e2fsprogs xfsprogs btrfs-progs f2fs-tools (scripts/test.sh installs scripts/lib.sh's DEB_PACKAGES)"
    );
    let cuts = std::env::var("POWERCUT_CUTS").unwrap_or_else(|_| "2".into());
    let script = workspace().join("scripts/powercut/powercut.py");
    let mut failures = Vec::new();
    for fs in FILESYSTEMS {
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .args(["--fs", fs, "--cuts", &cuts, "--plugin", "ours", "--binary"])
            .arg(env!("CARGO_BIN_EXE_host-local"));
        if let Ok(seed) = std::env::var("POWERCUT_SEED") {
            cmd.args(["--seed", &seed]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        // stderr is small (tracebacks): drain it on a thread so the child never blocks on it.
        let mut stderr = child.stderr.take().unwrap();
        let err_reader = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut text).ok();
            text
        });
        // Progress goes straight to the terminal (past libtest's capture): a run takes minutes.
        let mut summary = Vec::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap_or_default();
            let _ = writeln!(std::io::stderr(), "{line}");
            if line.starts_with("cut ") || line.starts_with("total ") || line.starts_with("powercut: error") {
                summary.push(line);
            }
        }
        let status = child.wait().unwrap();
        let err = err_reader.join().unwrap_or_default();
        if !err.is_empty() {
            let _ = writeln!(std::io::stderr(), "{err}");
        }
        match status.code() {
            Some(0) => {}
            Some(1) => failures.push(format!("{fs}: a verdict failed\n  {}", summary.join("\n  "))),
            other => failures.push(format!(
                "{fs}: harness error (exit {other:?}); is the machine set up (scripts/test.sh)?\n  {}\n{err}",
                summary.join("\n  ")
            )),
        }
    }
    assert!(failures.is_empty(), "power cuts lost acknowledged state:\n{}", failures.join("\n"));
}
