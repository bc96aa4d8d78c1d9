//! The plugin entry point, behaving like Go's `pkg/skel`.
//!
//! It reads and validates the `CNI_*` environment and stdin, answers VERSION, gates
//! CHECK/GC/STATUS by config version, calls the plugin, and turns every failure
//! (including a panic) into the CNI error JSON on stdout with exit code 1.

use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Code, Error, Result};
use crate::types::AnyResult;
use crate::{json, validate, version};

/// Upper bound on the network config read from stdin. Real configs are a few KiB; pod
/// annotations passed as runtimeConfig can add more, but never megabytes.
pub const MAX_STDIN: u64 = 4 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }
}

/// Everything a plugin call receives.
#[derive(Clone, Debug)]
pub struct CmdArgs {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// Raw `CNI_ARGS`; parse with [`crate::args::CniArgs`] and the plugin's schema.
    pub args: String,
    pub path: String,
    /// The exact stdin bytes (delegates must get them unchanged).
    pub stdin: Vec<u8>,
    /// stdin parsed once.
    pub conf: Value,
    /// The config's `cniVersion` ("" is reported as 0.1.0).
    pub cni_version: String,
}

/// The verbs a plugin implements. ADD returns its result already in the caller's version.
pub trait Plugin {
    fn add(&self, args: &CmdArgs) -> Result<AnyResult>;
    fn del(&self, args: &CmdArgs) -> Result<()>;
    fn check(&self, args: &CmdArgs) -> Result<()>;
    fn gc(&self, args: &CmdArgs) -> Result<()>;
    fn status(&self, args: &CmdArgs) -> Result<()>;
}

/// Name and version for the "about" text, and the spec versions the plugin supports.
pub struct PluginInfo {
    pub name: &'static str,
    pub version: &'static str,
    pub supported: &'static [&'static str],
}

/// What a call produced, before it is written to the real stdout/stderr.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

impl Outcome {
    fn error(e: &Error) -> Outcome {
        Outcome { stdout: e.to_wire(), stderr: String::new(), exit_code: 1 }
    }
}

/// Which environment variables each command requires (Go skel's table, in its order).
const ENV_VARS: [(&str, &[Command]); 6] = [
    ("CNI_COMMAND", &[Command::Add, Command::Check, Command::Del, Command::Gc, Command::Status]),
    ("CNI_CONTAINERID", &[Command::Add, Command::Check, Command::Del]),
    ("CNI_NETNS", &[Command::Add, Command::Check]),
    ("CNI_IFNAME", &[Command::Add, Command::Check, Command::Del]),
    ("CNI_ARGS", &[]),
    ("CNI_PATH", &[Command::Add, Command::Check, Command::Del, Command::Gc, Command::Status]),
];

/// Run one call: `getenv` gives the environment ("" when unset), `stdin` the config.
pub fn dispatch(
    plugin: &dyn Plugin,
    info: &PluginInfo,
    getenv: &dyn Fn(&str) -> String,
    stdin: &mut dyn Read,
) -> Outcome {
    let command_text = getenv("CNI_COMMAND");
    if command_text.is_empty() {
        return Outcome {
            stderr: format!(
                "CNI {} plugin version {}\nCNI protocol versions supported: {}\n",
                info.name,
                info.version,
                info.supported.join(", ")
            ),
            ..Outcome::default()
        };
    }
    match run(plugin, info, &command_text, getenv, stdin) {
        Ok(stdout) => Outcome { stdout, ..Outcome::default() },
        Err(e) => Outcome::error(&e),
    }
}

fn run(
    plugin: &dyn Plugin,
    info: &PluginInfo,
    command_text: &str,
    getenv: &dyn Fn(&str) -> String,
    stdin: &mut dyn Read,
) -> Result<String> {
    let command = Command::parse(command_text);
    let mut values = Vec::with_capacity(ENV_VARS.len());
    let mut missing = Vec::new();
    for (name, required_for) in ENV_VARS {
        let value = getenv(name);
        let required = command.is_some_and(|c| required_for.contains(&c)) || name == "CNI_COMMAND";
        if value.is_empty() {
            if required {
                missing.push(name);
            }
        } else if required {
            match name {
                "CNI_CONTAINERID" => validate::container_id(&value)?,
                "CNI_IFNAME" => validate::interface_name(&value)?,
                _ => {}
            }
        }
        values.push(value);
    }
    if !missing.is_empty() {
        return Err(Error::env(format!("required env variables [{}] missing", missing.join(","))));
    }
    if command == Some(Command::Version) {
        return Ok(version_json(info));
    }

    let stdin_bytes = read_stdin(stdin)?;
    let conf = validate_config(&stdin_bytes)?;
    let Some(command) = command else {
        return Err(Error::env(format!("unknown CNI_COMMAND: {command_text}")));
    };
    let [_, container_id, netns, ifname, args, path] =
        <[String; 6]>::try_from(values).expect("one value per ENV_VARS entry");
    let cni_version = version::decode_conf_version(&conf)?;
    let cmd = CmdArgs { command, container_id, netns, ifname, args, path, stdin: stdin_bytes, conf, cni_version };
    let netns_override = matches!(getenv("CNI_NETNS_OVERRIDE").to_uppercase().as_str(), "1" | "TRUE");

    match command {
        Command::Add => {
            check_version(&cmd, info)?;
            // Upstream checks this after ADD and leaks the address; we refuse before allocating.
            if !netns_override {
                check_netns(&cmd.netns)?;
            }
            Ok(plugin.add(&cmd)?.to_wire())
        }
        Command::Del => {
            check_version(&cmd, info)?;
            plugin.del(&cmd)?;
            if !netns_override {
                check_netns(&cmd.netns)?;
            }
            Ok(String::new())
        }
        Command::Check => gated(&cmd, info, "0.4.0", || plugin.check(&cmd)),
        Command::Gc => gated(&cmd, info, "1.1.0", || plugin.gc(&cmd)),
        Command::Status => gated(&cmd, info, "1.1.0", || plugin.status(&cmd)),
        Command::Version => unreachable!("answered before stdin is read"),
    }
}

fn read_stdin(stdin: &mut dyn Read) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(4096);
    stdin
        .take(MAX_STDIN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(format!("error reading from stdin: {e}")))?;
    if bytes.len() as u64 > MAX_STDIN {
        return Err(Error::decoding(format!("error unmarshall network config: larger than {MAX_STDIN} bytes")));
    }
    Ok(bytes)
}

/// Go's `validateConfig`: stdin is a JSON object with a valid `name`.
fn validate_config(bytes: &[u8]) -> Result<Value> {
    let fail = |m: String| Error::decoding(format!("error unmarshall network config: {m}"));
    let conf = json::parse(bytes).map_err(|e| fail(e.to_string()))?;
    // Go decodes into an anonymous struct: its fields are named `.name`.
    let f = json::GoFields::of(&conf, "struct { Name string \"json:\\\"name\\\"\" }", ".", fail)?;
    let name = f.string("name")?.unwrap_or_default();
    if name.is_empty() {
        return Err(Error::config("missing network name"));
    }
    validate::network_name(name)?;
    Ok(conf)
}

fn check_version(cmd: &CmdArgs, info: &PluginInfo) -> Result<()> {
    if info.supported.contains(&cmd.cni_version.as_str()) {
        Ok(())
    } else {
        Err(version::incompatible(&cmd.cni_version, info.supported))
    }
}

/// CHECK/GC/STATUS: the config must be at least `floor`, and the plugin must support it.
fn gated(cmd: &CmdArgs, info: &PluginInfo, floor: &str, call: impl FnOnce() -> Result<()>) -> Result<String> {
    let verb = cmd.command.as_str();
    let decoding = |e: Error| Error::decoding(e.msg);
    if !version::gte(&cmd.cni_version, floor).map_err(decoding)? {
        return Err(Error::new(Code::INCOMPATIBLE_VERSION, format!("config version does not allow {verb}")));
    }
    for supported in info.supported {
        if version::gte(supported, &cmd.cni_version).map_err(decoding)? {
            check_version(cmd, info)?;
            call()?;
            return Ok(String::new());
        }
    }
    Err(Error::new(Code::INCOMPATIBLE_VERSION, format!("plugin version does not allow {verb}")))
}

/// Refuse a CNI_NETNS that is the plugin's own network namespace (Go's `ns.CheckNetNS`).
fn check_netns(netns: &str) -> Result<()> {
    if netns.is_empty() {
        return Ok(());
    }
    // A path that doesn't exist (the sandbox is gone) is fine, as upstream; our own
    // namespace is looked up only then (a /proc lookup costs more than the stat).
    let Ok(target) = std::fs::metadata(netns) else { return Ok(()) };
    let Ok(own) = std::fs::metadata("/proc/self/ns/net") else { return Ok(()) };
    if (target.dev(), target.ino()) == (own.dev(), own.ino()) {
        return Err(Error::new(Code::INVALID_NETNS, "plugin's netns and netns from CNI_NETNS should not be the same"));
    }
    Ok(())
}

/// VERSION output (Go's `version.PluginInfo`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionInfo {
    cni_version: &'static str,
    supported_versions: &'static [&'static str],
}

/// VERSION output: Go prints its own current version, compact, with a newline.
fn version_json(info: &PluginInfo) -> String {
    json::to_go_compact(&VersionInfo { cni_version: version::CURRENT, supported_versions: info.supported }) + "\n"
}

/// Print a CNI error JSON on stdout and exit 1 if the process panics, so that the runtime
/// still gets a parseable error (Go's skel has no such net: a Go panic leaves stdout empty).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|panic| {
        let what = panic
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = panic.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let e = Error::internal("internal error (panic)").with_details(format!("{what}{location}"));
        let mut out = io::stdout().lock();
        let _ = out.write_all(e.to_wire().as_bytes());
        let _ = out.flush();
        // Exit here, as every failure does: never unwind into (or abort from) the libc
        // `main` of a plugin binary.
        std::process::exit(1);
    }));
}

/// What std's start-up does that a plugin needs, for binaries that skip it
/// (`#![no_main]`, their `main` called by libc). std's start-up also reads
/// `/proc/self/maps` to place a stack guard and installs a stack-overflow handler: a
/// tenth of a whole plugin call, on every call (docs/benchmarks.md).
pub fn prepare_process() {
    // fds 0-2 open: else the first file a call opens becomes its stdout, and the result
    // would be written into a lease.
    let mut std_fds = [0, 1, 2].map(|fd| libc::pollfd { fd, events: 0, revents: 0 });
    // SAFETY: poll gets a valid array of 3 pollfds; open and signal take constant arguments.
    unsafe {
        let polled = libc::poll(std_fds.as_mut_ptr(), 3, 0) >= 0;
        for pfd in std_fds {
            let closed =
                if polled { pfd.revents & libc::POLLNVAL != 0 } else { libc::fcntl(pfd.fd, libc::F_GETFD) == -1 };
            // The lowest free descriptor: the closed one, as the lower ones are open by now.
            if closed && libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) == -1 {
                libc::abort();
            }
        }
        // Writes to a pipe the reader closed fail with EPIPE instead of killing the call
        // (delegated-ipam writes its delegate's stdin).
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// The whole `main` of a plugin binary.
pub fn main(plugin: &dyn Plugin, info: &PluginInfo) -> ! {
    install_panic_hook();
    let getenv = |k: &str| std::env::var(k).unwrap_or_default();
    let outcome = dispatch(plugin, info, &getenv, &mut io::stdin().lock());
    let _ = io::stderr().write_all(outcome.stderr.as_bytes());
    // One write(2) for the whole document (std's line-buffered stdout would split it).
    // SAFETY: fd 1 is open for the life of the process; ManuallyDrop keeps it open.
    let mut stdout = std::mem::ManuallyDrop::new(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(1) });
    if !outcome.stdout.is_empty() && stdout.write_all(outcome.stdout.as_bytes()).is_err() {
        std::process::exit(1);
    }
    std::process::exit(outcome.exit_code)
}

#[cfg(test)]
mod tests;
