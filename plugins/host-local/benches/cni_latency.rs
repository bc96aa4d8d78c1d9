//! Side-by-side benchmark of our host-local and upstream's, as a runtime calls them:
//! one process per call, on stores pre-filled with N leases. Prints a Markdown report
//! with medians and our/upstream ratios. Run through scripts/bench.sh.
//!
//! Env: BENCH_UPSTREAM (default /usr/lib/cni/host-local), BENCH_OURS (default the release
//! build), BENCH_LEASES (default "0,110,10000,60000"), BENCH_QUICK=1 for fewer rounds.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Plugin {
    name: &'static str,
    path: PathBuf,
}

/// What containerd passes for a pod: with it, our host-local also records the pod.
const POD_ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bench;K8S_POD_UID=u1";

fn spawn(plugin: &Path, command: &str, id: &str, conf: &str) -> Child {
    spawn_with_args(plugin, command, id, conf, "")
}

/// The whole environment of a benchmarked call.
fn plugin_env<'a>(command: &'a str, id: &'a str, args: &'a str) -> [(&'static str, &'a str); 6] {
    [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_NETNS", "/var/run/netns/bench-nonexistent"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        ("CNI_ARGS", args),
    ]
}

fn spawn_with_args(plugin: &Path, command: &str, id: &str, conf: &str, args: &str) -> Child {
    let mut child = Command::new(plugin)
        .env_clear()
        .envs(plugin_env(command, id, args))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", plugin.display()));
    let _ = child.stdin.take().unwrap().write_all(conf.as_bytes());
    child
}

/// Wait for `child`; the wall time since `started`.
fn wait(mut child: Child, started: Instant, must_succeed: bool) -> Duration {
    let exit = child.wait().expect("wait");
    let wall = started.elapsed();
    assert!(!must_succeed || exit.success(), "a benchmarked call failed: {exit}");
    wall
}

fn call(plugin: &Path, command: &str, id: &str, conf: &str, must_succeed: bool) -> Duration {
    let started = Instant::now();
    wait(spawn(plugin, command, id, conf), started, must_succeed)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn conf(data_dir: &Path, version: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"bench","ipam":{{"type":"host-local","dataDir":"{}","subnet":"10.200.0.0/16"}}}}"#,
        data_dir.display()
    )
}

/// A store with `n` leases (.0.2 upwards), as a node with `n` pods would have.
fn populate(data_dir: &Path, n: usize) {
    let _ = fs::remove_dir_all(data_dir);
    let dir = data_dir.join("bench");
    fs::create_dir_all(&dir).unwrap();
    let ip = |i: usize| format!("10.200.{}.{}", (i + 2) / 256, (i + 2) % 256);
    for i in 0..n {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dir.join(ip(i))).unwrap();
        write!(f, "pre-{i}\r\neth0").unwrap();
    }
    if n > 0 {
        fs::write(dir.join("last_reserved_ip.0"), ip(n - 1)).unwrap();
    }
}

struct Row {
    what: String,
    upstream: Duration,
    ours: Duration,
}

fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let ours_default = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/host-local");
    let plugins = [
        Plugin {
            name: "upstream",
            path: std::env::var("BENCH_UPSTREAM")
                .map(PathBuf::from)
                .unwrap_or_else(|_| "/usr/lib/cni/host-local".into()),
        },
        Plugin { name: "ours", path: std::env::var("BENCH_OURS").map(PathBuf::from).unwrap_or(ours_default) },
    ];
    let counts: Vec<usize> = std::env::var("BENCH_LEASES")
        .unwrap_or_else(|_| "0,110,10000,60000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("BENCH_LEASES: comma-separated numbers"))
        .collect();
    let scratch = std::env::temp_dir().join(format!("cni-bench-{}", std::process::id()));
    let mut rows = Vec::new();

    for &n in &counts {
        let rounds = match n {
            _ if quick => 5,
            60_000.. => 5,
            10_000.. => 15,
            _ => 40,
        };
        // The machine's speed drifts: run both plugins round by round, not one after the other.
        let confs: Vec<String> = plugins
            .iter()
            .map(|plugin| {
                let data_dir = scratch.join(plugin.name);
                populate(&data_dir, n);
                let c = conf(&data_dir, "1.0.0");
                // Warm-up: page cache, and our index after a foreign-written directory.
                call(&plugin.path, "ADD", "warm", &c, true);
                call(&plugin.path, "DEL", "warm", &c, true);
                c
            })
            .collect();
        let mut results: [[Vec<Duration>; 5]; 2] = Default::default();
        for r in 0..rounds {
            let id = format!("bench-{r}");
            for (p, plugin) in plugins.iter().enumerate() {
                let c = &confs[p];
                results[p][0].push(call(&plugin.path, "ADD", &id, c, true));
                results[p][1].push(call(&plugin.path, "CHECK", &id, c, true));
                results[p][2].push(call(&plugin.path, "DEL", &id, c, true));
                results[p][3].push(call(&plugin.path, "DEL", &id, c, true));
                // A pod's sandbox as containerd sets it up; DEL'd without the pod arguments,
                // so that the address is freed and the store keeps its size.
                let pod = format!("bench-pod-{r}");
                let started = Instant::now();
                results[p][4].push(wait(spawn_with_args(&plugin.path, "ADD", &pod, c, POD_ARGS), started, true));
                call(&plugin.path, "DEL", &pod, c, true);
            }
        }
        for (k, what) in ["ADD", "CHECK", "DEL", "DEL (repeated)", "ADD with K8S_POD_* args"].iter().enumerate() {
            rows.push(Row {
                what: format!("{what} @ {n} leases"),
                upstream: median(results[0][k].clone()),
                ours: median(results[1][k].clone()),
            });
        }
    }

    // Reboot storm: 110 pods come back at once on an empty store.
    let storm_rounds = if quick { 2 } else { 5 };
    let mut storm = [Vec::new(), Vec::new()];
    for _ in 0..storm_rounds {
        for (p, plugin) in plugins.iter().enumerate() {
            let data_dir = scratch.join(format!("storm-{}", plugin.name));
            populate(&data_dir, 0);
            let c = conf(&data_dir, "1.0.0");
            let started = Instant::now();
            let children: Vec<Child> = (0..110).map(|i| spawn(&plugin.path, "ADD", &format!("pod-{i}"), &c)).collect();
            for child in children {
                wait(child, started, true);
            }
            storm[p].push(started.elapsed());
        }
    }
    let [storm_up, storm_ours] = storm;
    rows.push(Row { what: "110 concurrent ADDs (wall)".into(), upstream: median(storm_up), ours: median(storm_ours) });

    // VERSION: process start-up; STATUS: ours only (Debian's upstream predates spec 1.1.0).
    let version_rounds = if quick { 10 } else { 200 };
    let mut version = [Vec::new(), Vec::new()];
    for _ in 0..version_rounds {
        for (p, plugin) in plugins.iter().enumerate() {
            version[p].push(call(&plugin.path, "VERSION", "", "", true));
        }
    }
    let [v_up, v_ours] = version;
    rows.push(Row { what: "VERSION (start-up)".into(), upstream: median(v_up), ours: median(v_ours) });
    let status_dir = scratch.join("status");
    populate(&status_dir, 110);
    let status_conf = conf(&status_dir, "1.1.0");
    let status =
        median((0..version_rounds).map(|_| call(&plugins[1].path, "STATUS", "", &status_conf, true)).collect());

    // The floor the brief sets: spawning a trivial static binary plus one durable write.
    let trivial = trivial_static_binary();
    let spawn_floor =
        trivial.as_ref().map(|t| median((0..version_rounds).map(|_| call(t, "VERSION", "", "", false)).collect()));
    let durable_write = durable_write_cost(&scratch);
    // Peak RSS per call at 110 leases: the largest of a few rounds of each verb.
    let rss_verbs = ["ADD", "CHECK", "DEL", "STATUS"];
    let rss: Vec<Vec<Option<u64>>> = plugins
        .iter()
        .map(|plugin| {
            let data_dir = scratch.join(format!("rss-{}", plugin.name));
            populate(&data_dir, 110);
            // STATUS needs spec 1.1.0, which Debian's upstream predates.
            let c = conf(&data_dir, if plugin.name == "ours" { "1.1.0" } else { "1.0.0" });
            let mut peaks = vec![None; rss_verbs.len()];
            for r in 0..5 {
                let id = format!("rss-{r}");
                for (v, verb) in rss_verbs.iter().enumerate() {
                    if *verb == "STATUS" && plugin.name != "ours" {
                        continue;
                    }
                    let peak = peak_rss_kib(&plugin.path, verb, &id, &c);
                    peaks[v] = peaks[v].max(Some(peak));
                }
            }
            peaks
        })
        .collect();
    let _ = fs::remove_dir_all(&scratch);

    println!("| operation | upstream (ms) | ours (ms) | ours / upstream |");
    println!("|---|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.2}× |",
            r.what,
            ms(r.upstream),
            ms(r.ours),
            r.ours.as_secs_f64() / r.upstream.as_secs_f64()
        );
    }
    println!();
    println!("| other | value |");
    println!("|---|---:|");
    println!("| STATUS, ours (ms) | {} |", ms(status));
    for plugin in &plugins {
        let size = fs::metadata(&plugin.path).map(|m| m.len()).unwrap_or(0);
        println!("| {} binary size (bytes) | {size} |", plugin.name);
    }
    println!("| one durable write: write + fdatasync + rename + dir fsync (ms) | {} |", ms(durable_write));
    if let (Some(floor), Some(t)) = (spawn_floor, trivial) {
        let add0 = rows.iter().find(|r| r.what == "ADD @ 0 leases").map(|r| r.ours);
        println!("| spawn of a trivial static binary ({}) (ms) | {} |", t.display(), ms(floor));
        if let Some(add0) = add0 {
            let budget = floor + durable_write;
            println!(
                "| our ADD @ 0 leases / (spawn + durable write) | {:.2}× |",
                add0.as_secs_f64() / budget.as_secs_f64()
            );
        }
    }
    println!();
    println!("| peak RSS per call @ 110 leases (KiB) | upstream | ours |");
    println!("|---|---:|---:|");
    for (v, verb) in rss_verbs.iter().enumerate() {
        let show = |peak: Option<u64>| peak.map_or("—".to_string(), |k| k.to_string());
        println!("| {verb} | {} | {} |", show(rss[0][v]), show(rss[1][v]));
    }
}

/// busybox-static's `true` if installed.
fn trivial_static_binary() -> Option<PathBuf> {
    let busybox = PathBuf::from("/bin/busybox");
    busybox.is_file().then(|| {
        let link = std::env::temp_dir().join(format!("bench-true-{}", std::process::id()));
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&busybox, &link).unwrap();
        // busybox picks the applet from argv[0]: a symlink named "true" would be clearer,
        // but any name that is not an applet runs "busybox" itself, so name it true.
        let named = link.with_file_name("true");
        let _ = fs::remove_file(&named);
        fs::rename(&link, &named).unwrap();
        named
    })
}

fn durable_write_cost(scratch: &Path) -> Duration {
    let dir = scratch.join("durable");
    fs::create_dir_all(&dir).unwrap();
    let dir_handle = fs::File::open(&dir).unwrap();
    let samples: Vec<Duration> = (0..50)
        .map(|i| {
            let started = Instant::now();
            let tmp = dir.join(format!(".tmp{i}"));
            let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).unwrap();
            f.write_all(b"c1\r\neth0").unwrap();
            f.sync_data().unwrap();
            fs::rename(&tmp, dir.join(format!("10.0.0.{i}"))).unwrap();
            dir_handle.sync_all().unwrap();
            started.elapsed()
        })
        .collect();
    median(samples)
}

/// Peak RSS (VmHWM, KiB) of one call, of the plugin's own address space. wait4's ru_maxrss
/// cannot tell it: exec folds the spawning process's peak into the child's, so every
/// child would report this harness's size. Instead the child runs under ptrace and its
/// VmHWM is read at its exit stop, while its memory still exists.
fn peak_rss_kib(plugin: &Path, command: &str, id: &str, conf: &str) -> u64 {
    use std::ptr::null;

    let path = CString::new(plugin.as_os_str().as_bytes()).unwrap();
    let argv = [path.as_ptr(), null()];
    let env: Vec<CString> =
        plugin_env(command, id, "").iter().map(|(k, v)| CString::new(format!("{k}={v}")).unwrap()).collect();
    let envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).chain([null()]).collect();
    let stdin_pipe = {
        let (reader, mut writer) = std::io::pipe().unwrap();
        writer.write_all(conf.as_bytes()).unwrap(); // fits the pipe buffer
        reader
    };
    let devnull = fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
    let (stdin_fd, null_fd) = (stdin_pipe.as_raw_fd(), devnull.as_raw_fd());

    // SAFETY: between fork and execve the child calls only async-signal-safe functions on
    // memory prepared before the fork; the parent traces only its own child.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            libc::dup2(stdin_fd, 0);
            libc::dup2(null_fd, 1);
            libc::dup2(null_fd, 2);
            libc::ptrace(libc::PTRACE_TRACEME, 0, null::<libc::c_void>(), null::<libc::c_void>());
            libc::raise(libc::SIGSTOP);
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
        drop((stdin_pipe, devnull));
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        libc::ptrace(libc::PTRACE_SETOPTIONS, pid, null::<libc::c_void>(), libc::PTRACE_O_TRACEEXIT as usize);
        let exit_stop = libc::SIGTRAP | (libc::PTRACE_EVENT_EXIT << 8);
        let mut peak = None;
        let mut deliver = 0;
        loop {
            libc::ptrace(libc::PTRACE_CONT, pid, null::<libc::c_void>(), deliver as usize);
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                break;
            }
            deliver = 0;
            if status >> 8 == exit_stop {
                let proc_status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
                peak = proc_status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
            } else if libc::WSTOPSIG(status) != libc::SIGTRAP {
                deliver = libc::WSTOPSIG(status); // the plugin's own signal (Go uses SIGURG)
            }
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "traced {command} of {} failed",
            plugin.display()
        );
        peak.expect("VmHWM at the exit stop")
    }
}
