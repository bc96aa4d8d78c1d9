//! Side-by-side benchmark of our host-local and upstream's, as a runtime calls them:
//! one process per call, on stores pre-filled with N leases, against the physical floor
//! measured in the same rounds: a bare process start (benches/floor_start.c) and one
//! durable file creation (benches/floor_durable_create.c), both static C programs spawned
//! exactly like the plugins. Prints a Markdown report with medians, our/upstream and
//! our/floor ratios, and whether each goal is met. Run through scripts/bench.sh.
//!
//! Env: BENCH_UPSTREAM (default /usr/lib/cni/host-local), BENCH_OURS (default the release
//! build), BENCH_LEASES (default "0,110,110p,10000,60000": `N` a store of N leases, `Np` one
//! of N pods, see [`Fill`]), BENCH_QUICK=1 for fewer rounds.

use std::ffi::{CString, OsStr};
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

/// What containerd passes for a pod: with it, our host-local also records the pod, and its
/// DEL holds the address for the pod's next sandbox.
const POD_ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p";

/// The calls of one round of a plugin, in order (see `plugin_step`).
const VERBS: [&str; 7] =
    ["ADD", "CHECK", "DEL", "DEL (repeated)", "ADD with pod args", "DEL with pod args", "ADD of a new pod"];

fn spawn(plugin: &Path, command: &str, id: &str, conf: &str) -> Child {
    spawn_program(plugin, &[], command, id, conf, "")
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

/// `program` spawned as a runtime spawns a plugin: only the CNI environment, the network
/// configuration on a stdin pipe, stdout and stderr to /dev/null. `argv` is empty for the
/// plugins; the floor programs take their arguments there.
fn spawn_program(program: &Path, argv: &[&OsStr], command: &str, id: &str, conf: &str, args: &str) -> Child {
    let mut child = Command::new(program)
        .args(argv)
        .env_clear()
        .envs(plugin_env(command, id, args))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
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

fn call_with_pod_args(plugin: &Path, command: &str, id: &str, conf: &str, pod_args: &str) -> Duration {
    let started = Instant::now();
    wait(spawn_program(plugin, &[], command, id, conf, pod_args), started, true)
}

/// Call `verb` (one of `VERBS`) of a plugin's round, timed. A round is ADD, CHECK,
/// DEL and a repeated DEL of one container, then a pod's sandbox as containerd sets it up
/// and tears it down: with the pod arguments ours holds the address at DEL and gives it back
/// at the next round's ADD of the same pod, so the store keeps its size. Last, the first
/// sandbox of a new pod (ours writes its lease and a new pod record), removed again by a DEL
/// without pod arguments that is not timed.
fn plugin_step(plugin: &Path, conf: &str, round: &str, verb: &str) -> Duration {
    let (id, pod, new_pod) = (format!("bench-{round}"), format!("bench-pod-{round}"), format!("bench-new-{round}"));
    match verb {
        "ADD" => call(plugin, "ADD", &id, conf, true),
        "CHECK" => call(plugin, "CHECK", &id, conf, true),
        "DEL" | "DEL (repeated)" => call(plugin, "DEL", &id, conf, true),
        "ADD with pod args" => call_with_pod_args(plugin, "ADD", &pod, conf, POD_ARGS),
        "DEL with pod args" => call_with_pod_args(plugin, "DEL", &pod, conf, POD_ARGS),
        "ADD of a new pod" => {
            let new_pod_args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=new-{round}");
            let wall = call_with_pod_args(plugin, "ADD", &new_pod, conf, &new_pod_args);
            call(plugin, "DEL", &new_pod, conf, true);
            wall
        }
        verb => unreachable!("{verb}"),
    }
}

/// The physical floor: static C programs built from benches/floor_*.c, spawned exactly
/// like the plugins (`spawn_program`).
struct Floor {
    /// Exits at once: the floor of every call.
    start: PathBuf,
    /// Creates one small file durably: the floor of a call that records a change.
    durable_create: PathBuf,
}

impl Floor {
    /// Builds the programs with `gcc -O2 -static` into target/tmp/bench-floor.
    fn build() -> Floor {
        let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-floor");
        fs::create_dir_all(&out).unwrap();
        let build = |name: &str| {
            let bin = out.join(name.replace('_', "-"));
            // Built beside and renamed into place: another run may be executing the old one.
            let tmp = bin.with_extension(std::process::id().to_string());
            let status = Command::new("gcc")
                .args(["-O2", "-static", "-o"])
                .arg(&tmp)
                .arg(sources.join(format!("{name}.c")))
                .status()
                .expect("run gcc");
            assert!(status.success(), "gcc -O2 -static {name}.c failed");
            fs::rename(&tmp, &bin).unwrap();
            bin
        };
        Floor { start: build("floor_start"), durable_create: build("floor_durable_create") }
    }

    fn start(&self, id: &str, conf: &str) -> Duration {
        call(&self.start, "ADD", id, conf, true)
    }

    /// Creates `dir/id` durably; the file is removed again outside the timed part, and the
    /// removal synced, so that no program's sync pays for it.
    fn durable_create(&self, dir: &Path, id: &str, conf: &str) -> Duration {
        let argv = [dir.as_os_str(), OsStr::new(id)];
        let started = Instant::now();
        let wall = wait(spawn_program(&self.durable_create, &argv, "ADD", id, conf, ""), started, true);
        fs::remove_file(dir.join(id)).unwrap();
        fs::File::open(dir).unwrap().sync_all().unwrap();
        wall
    }
}

/// The order of the four programs (0 upstream, 1 ours, 2 floor-start, 3 floor-durable-create)
/// at turn `turn` (one turn per call of a round): each of the 24 orders in turn, so that every
/// program takes every place, and follows every other, about equally often.
fn order(turn: usize) -> [usize; 4] {
    let mut left = vec![0, 1, 2, 3];
    let mut code = turn % 24; // the order's number in the factorial number system
    [6, 2, 1, 1].map(|place_value| {
        let next = left.remove(code / place_value);
        code %= place_value;
        next
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn conf(data_dir: &Path, version: &str) -> String {
    format!(
        r#"{{"cniVersion":"{version}","name":"bench","ipam":{{"type":"host-local","dataDir":"{}","subnet":"10.200.0.0/16"}}}}"#,
        data_dir.display()
    )
}

/// How a stage's stores are filled before its rounds.
#[derive(Clone, Copy, PartialEq)]
enum Fill {
    /// `n` lease files (.0.2 upwards) written directly, in upstream's format: the issue's
    /// stores, the same for every program.
    Leases(usize),
    /// `n` pods started through the plugin itself, with the arguments containerd passes: each
    /// plugin's store as it is on a node whose pods it started (ours keeps a pod record and an
    /// index line per pod, which every call reads). The floor's directory holds `n` files.
    Pods(usize),
}

impl Fill {
    fn parse(s: &str) -> Fill {
        let s = s.trim();
        let n = |digits: &str| digits.parse().expect("BENCH_LEASES: numbers, each optionally followed by p");
        match s.strip_suffix('p') {
            Some(digits) => Fill::Pods(n(digits)),
            None => Fill::Leases(n(s)),
        }
    }

    fn count(self) -> usize {
        match self {
            Fill::Leases(n) | Fill::Pods(n) => n,
        }
    }

    fn label(self) -> String {
        match self {
            Fill::Leases(n) => format!("{n} leases"),
            Fill::Pods(n) => format!("{n} pods"),
        }
    }

    /// Fill `data_dir` for `plugin`.
    fn populate(self, data_dir: &Path, plugin: &Path) {
        let pods = match self {
            Fill::Leases(n) => return populate(data_dir, n),
            Fill::Pods(n) => n,
        };
        populate(data_dir, 0);
        let conf = conf(data_dir, "1.0.0");
        for i in 0..pods {
            let args = format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=app-{i}-7d4b9c6f8-x2k9q;\
                 K8S_POD_UID=6f1c2a4e-0b3d-4e5f-8a9b-{i:012};K8S_POD_INFRA_CONTAINER_ID={:064x}",
                i + 1
            );
            call_with_pod_args(plugin, "ADD", &format!("{:064x}", i + 1), &conf, &args);
        }
    }
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

/// Medians of one operation; `fill` is how its store was filled, if the operation has one.
struct Row {
    verb: &'static str,
    fill: Option<Fill>,
    upstream: Duration,
    ours: Duration,
}

impl Row {
    fn what(&self) -> String {
        match self.fill {
            Some(fill) => format!("{} @ {}", self.verb, fill.label()),
            None => self.verb.to_string(),
        }
    }
}

/// Medians of the floor programs, from the rounds of one store size.
struct FloorRow {
    fill: Fill,
    start: Duration,
    durable_create: Duration,
}

/// One line of the goals table: a ratio of medians, and the bound it should keep.
struct Goal {
    what: String,
    /// None if not measured (a store size left out of BENCH_LEASES).
    ratio: Option<f64>,
    bound: Bound,
}

#[derive(Clone, Copy)]
enum Bound {
    Below(f64),
    AtMost(f64),
}

impl Bound {
    fn holds(&self, ratio: f64) -> bool {
        match *self {
            Bound::Below(max) => ratio < max,
            Bound::AtMost(max) => ratio <= max,
        }
    }

    fn show(&self) -> String {
        match self {
            Bound::Below(max) => format!("< {max}×"),
            Bound::AtMost(max) => format!("≤ {max}×"),
        }
    }
}

fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let ours_default = PathBuf::from(env!("CARGO_BIN_EXE_host-local"));
    let plugins = [
        Plugin {
            name: "upstream",
            path: std::env::var("BENCH_UPSTREAM")
                .map(PathBuf::from)
                .unwrap_or_else(|_| "/usr/lib/cni/host-local".into()),
        },
        Plugin { name: "ours", path: std::env::var("BENCH_OURS").map(PathBuf::from).unwrap_or(ours_default) },
    ];
    let fills: Vec<Fill> = std::env::var("BENCH_LEASES")
        .unwrap_or_else(|_| "0,110,110p,10000,60000".into())
        .split(',')
        .map(Fill::parse)
        .collect();
    let floor = Floor::build();
    let scratch = std::env::temp_dir().join(format!("cni-bench-{}", std::process::id()));
    let mut rows = Vec::new();
    let mut floors = Vec::new();

    for &fill in &fills {
        let n = fill.count();
        let rounds = match n {
            _ if quick => 41,
            60_000.. => 5,
            10_000.. => 15,
            _ => 101,
        };
        let confs: Vec<String> = plugins
            .iter()
            .map(|plugin| {
                let data_dir = scratch.join(plugin.name);
                fill.populate(&data_dir, &plugin.path);
                let c = conf(&data_dir, "1.0.0");
                // Warm-up: page cache, our index after a directory written by others (lease
                // stores) or by upstream, the hold.
                for verb in VERBS {
                    plugin_step(&plugin.path, &c, "warm", verb);
                }
                c
            })
            .collect();
        // The floor creates its files beside the stores, in a directory of the same size.
        let floor_data_dir = scratch.join("floor");
        populate(&floor_data_dir, n);
        let floor_dir = floor_data_dir.join("bench");
        let floor_conf = conf(&floor_data_dir, "1.0.0");
        floor.start("warm", &floor_conf);
        floor.durable_create(&floor_dir, "warm", &floor_conf);

        let mut samples: [[Vec<Duration>; VERBS.len()]; 2] = Default::default();
        let (mut floor_start, mut floor_create) = (Vec::new(), Vec::new());
        let mut last_ran = None;
        for r in 0..rounds {
            // The machine's speed drifts, a sync may pay for the previous program's unsynced
            // changes, and a program run right after itself finds the CPU's caches warm: the
            // four take turns at every call, in a changing order, and none runs twice in a
            // row, so that each call of a plugin, like each floor program, follows one of the
            // others. The durable creation takes its turn once a round, at a changing call:
            // on an ext4 without a journal every deleted file slows each file creation for a
            // minute (bench.sh), and seven more deletions a round would slow the late rounds'
            // creations more.
            for (step, verb) in VERBS.into_iter().enumerate() {
                let mut turn: Vec<usize> =
                    order(r * VERBS.len() + step).into_iter().filter(|&p| p != 3 || step == r % VERBS.len()).collect();
                if Some(turn[0]) == last_ran {
                    turn.swap(0, 1);
                }
                last_ran = turn.last().copied();
                for program in turn {
                    match program {
                        p @ (0 | 1) => {
                            samples[p][step].push(plugin_step(&plugins[p].path, &confs[p], &r.to_string(), verb))
                        }
                        2 => floor_start.push(floor.start(&format!("bench-{r}-{step}"), &floor_conf)),
                        _ => floor_create.push(floor.durable_create(&floor_dir, &format!("bench-{r}"), &floor_conf)),
                    }
                }
            }
        }
        let [upstream, ours] = samples;
        for ((verb, upstream), ours) in VERBS.into_iter().zip(upstream).zip(ours) {
            rows.push(Row { verb, fill: Some(fill), upstream: median(upstream), ours: median(ours) });
        }
        floors.push(FloorRow { fill, start: median(floor_start), durable_create: median(floor_create) });
    }

    // Reboot storm: 110 pods come back at once on an empty store.
    let storm_rounds = if quick { 5 } else { 7 };
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
    let storm_verb = "110 concurrent ADDs (wall)";
    rows.push(Row { verb: storm_verb, fill: None, upstream: median(storm_up), ours: median(storm_ours) });

    // VERSION: process start-up; STATUS: ours only (Debian's upstream predates spec 1.1.0).
    let version_rounds = if quick { 101 } else { 201 };
    let mut version = [Vec::new(), Vec::new()];
    for _ in 0..version_rounds {
        for (p, plugin) in plugins.iter().enumerate() {
            version[p].push(call(&plugin.path, "VERSION", "", "", true));
        }
    }
    let [v_up, v_ours] = version;
    rows.push(Row { verb: "VERSION (start-up)", fill: None, upstream: median(v_up), ours: median(v_ours) });
    let status_dir = scratch.join("status");
    populate(&status_dir, 110);
    let status_conf = conf(&status_dir, "1.1.0");
    let status =
        median((0..version_rounds).map(|_| call(&plugins[1].path, "STATUS", "", &status_conf, true)).collect());

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
        println!("| {} | {} | {} | {:.2}× |", r.what(), ms(r.upstream), ms(r.ours), ratio(r.ours, r.upstream));
    }
    println!();
    println!("| physical floor, same rounds (ms) | floor-start | floor-durable-create |");
    println!("|---|---:|---:|");
    for f in &floors {
        println!("| @ {} | {} | {} |", f.fill.label(), ms(f.start), ms(f.durable_create));
    }
    println!();
    print_goals(&goals(&rows, &floors, storm_verb));
    let pods = Fill::Pods(110);
    if floors.iter().any(|f| f.fill == pods) {
        println!();
        println!("The same ratios on each plugin's store after 110 pods were started through it (not the issue's goals, which are set on stores of leases; what a node's calls see):");
        println!();
        print_goals(&floor_and_upstream_goals(&rows, &floors, pods));
    }
    println!();
    println!("| other | value |");
    println!("|---|---:|");
    println!("| STATUS, ours (ms) | {} |", ms(status));
    for plugin in &plugins {
        let size = fs::metadata(&plugin.path).map(|m| m.len()).unwrap_or(0);
        println!("| {} binary size (bytes) | {size} |", plugin.name);
    }
    println!();
    println!("| peak RSS per call @ 110 leases (KiB) | upstream | ours |");
    println!("|---|---:|---:|");
    for (v, verb) in rss_verbs.iter().enumerate() {
        let show = |peak: Option<u64>| peak.map_or("—".to_string(), |k| k.to_string());
        println!("| {verb} | {} | {} |", show(rss[0][v]), show(rss[1][v]));
    }
}

fn find_row<'a>(rows: &'a [Row], verb: &str, fill: Option<Fill>) -> Option<&'a Row> {
    rows.iter().find(|r| r.verb == verb && r.fill == fill)
}

/// The goals, from the medians: against the floor and against upstream at 110 leases,
/// against upstream at 10,000 leases, and the reboot storm against upstream.
fn goals(rows: &[Row], floors: &[FloorRow], storm_verb: &str) -> Vec<Goal> {
    let mut goals = floor_and_upstream_goals(rows, floors, Fill::Leases(110));
    goals.extend(upstream_goals(rows, Fill::Leases(10_000), Bound::AtMost(0.1)));
    goals.push(Goal {
        what: format!("{storm_verb}, ours / upstream"),
        ratio: find_row(rows, storm_verb, None).map(|r| ratio(r.ours, r.upstream)),
        bound: Bound::AtMost(0.5),
    });
    goals
}

/// At `fill`: each changing verb against one durable file creation, CHECK against a bare
/// process start, and every verb faster than upstream.
fn floor_and_upstream_goals(rows: &[Row], floors: &[FloorRow], fill: Fill) -> Vec<Goal> {
    let at = fill.label();
    let floor = floors.iter().find(|f| f.fill == fill);
    let mut goals = Vec::new();
    for verb in ["ADD", "ADD with pod args", "ADD of a new pod", "DEL", "DEL with pod args"] {
        goals.push(Goal {
            what: format!("{verb} @ {at}, ours / floor-durable-create"),
            ratio: find_row(rows, verb, Some(fill)).zip(floor).map(|(r, f)| ratio(r.ours, f.durable_create)),
            bound: Bound::AtMost(1.3),
        });
    }
    goals.push(Goal {
        what: format!("CHECK @ {at}, ours / floor-start"),
        ratio: find_row(rows, "CHECK", Some(fill)).zip(floor).map(|(r, f)| ratio(r.ours, f.start)),
        bound: Bound::AtMost(1.5),
    });
    goals.extend(upstream_goals(rows, fill, Bound::Below(1.0)));
    goals
}

/// Every verb at `fill` against upstream.
fn upstream_goals(rows: &[Row], fill: Fill, bound: Bound) -> Vec<Goal> {
    let at = fill.label();
    if find_row(rows, VERBS[0], Some(fill)).is_none() {
        return vec![Goal { what: format!("every verb @ {at}, ours / upstream"), ratio: None, bound }];
    }
    VERBS
        .into_iter()
        .map(|verb| Goal {
            what: format!("{verb} @ {at}, ours / upstream"),
            ratio: find_row(rows, verb, Some(fill)).map(|r| ratio(r.ours, r.upstream)),
            bound,
        })
        .collect()
}

fn print_goals(goals: &[Goal]) {
    println!("| goal | ratio | target | |");
    println!("|---|---:|---:|---|");
    for g in goals {
        let (ratio, verdict) = match g.ratio {
            Some(r) => (format!("{r:.2}×"), if g.bound.holds(r) { "met" } else { "missed" }),
            None => ("—".to_string(), "not measured"),
        };
        println!("| {} | {ratio} | {} | {verdict} |", g.what, g.bound.show());
    }
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
