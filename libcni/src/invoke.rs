//! Finding and executing plugins (Go's `pkg/invoke`), for delegation and for the runtime.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::json::{self, go_quote};
use crate::skel;
use crate::types::AnyResult;

/// `CNI_PATH` split like Go's `filepath.SplitList` (empty entries kept as ".", none for "").
pub fn split_path(cni_path: &str) -> Vec<PathBuf> {
    if cni_path.is_empty() {
        return Vec::new();
    }
    cni_path.split(':').map(|p| PathBuf::from(if p.is_empty() { "." } else { p })).collect()
}

/// Find plugin `name` in `paths`: the first regular file (symlinks followed) wins.
///
/// Names with a path separator or a `..` component are refused, so a config can never
/// make us execute anything outside `CNI_PATH`.
pub fn find_in_path(name: &str, paths: &[PathBuf]) -> Result<PathBuf> {
    if name.is_empty() {
        return Err(Error::config("no plugin name provided"));
    }
    if name.contains('/') || name == ".." || name == "." || name.contains('\0') {
        return Err(Error::config(format!("invalid plugin name: {name}")));
    }
    if paths.is_empty() {
        return Err(Error::env("no paths provided"));
    }
    for dir in paths {
        let candidate = dir.join(name);
        if std::fs::metadata(&candidate).is_ok_and(|m| m.is_file()) {
            return Ok(candidate);
        }
    }
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Err(Error::config(format!("failed to find plugin {} in path [{}]", go_quote(name), shown.join(" "))))
}

/// How many times a "text file busy" exec is retried: an installer may be writing the binary.
const TEXT_FILE_BUSY_RETRIES: u32 = 5;

/// Run a plugin with exactly `env`, feeding `stdin`; stderr is forwarded to ours.
/// On failure the plugin's error JSON is returned with its own code.
pub fn exec_plugin(plugin: &Path, stdin: &[u8], env: &[(OsString, OsString)]) -> Result<Vec<u8>> {
    let mut attempt = 0;
    let mut child = loop {
        let spawned = Command::new(plugin)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Ok(child) => break child,
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempt < TEXT_FILE_BUSY_RETRIES => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(100 << attempt));
            }
            Err(e) => return Err(Error::internal(format!("failed to exec plugin {}: {e}", plugin.display()))),
        }
    };
    let mut child_stdin = child.stdin.take().expect("stdin is piped");
    // Feed stdin from a thread so a plugin that writes before reading cannot deadlock us.
    let output = std::thread::scope(|s| {
        s.spawn(move || {
            let _ = child_stdin.write_all(stdin);
        });
        child.wait_with_output()
    })
    .map_err(|e| Error::internal(format!("failed to run plugin {}: {e}", plugin.display())))?;
    if !output.stderr.is_empty() {
        let _ = io::stderr().write_all(&output.stderr);
    }
    if output.status.success() {
        return Ok(output.stdout);
    }
    Err(plugin_error(&output.status, &output.stdout, &output.stderr))
}

/// Go's `RawExec.pluginErr`, with code 999 where Go leaves the code at 0.
fn plugin_error(status: &std::process::ExitStatus, stdout: &[u8], stderr: &[u8]) -> Error {
    if stdout.is_empty() {
        if stderr.is_empty() {
            return Error::internal(format!("netplugin failed with no error message: {status}"));
        }
        return Error::internal(format!("netplugin failed: {}", go_quote(&String::from_utf8_lossy(stderr))));
    }
    match json::parse(stdout).ok().as_ref().and_then(Error::from_json) {
        Some(e) => e,
        None => Error::internal(format!(
            "netplugin failed but error parsing its diagnostic message {}",
            go_quote(&String::from_utf8_lossy(stdout))
        )),
    }
}

/// Parse a plugin's ADD output, taking the config's version when it names none.
pub fn parse_result(netconf_version: &str, stdout: &[u8]) -> Result<AnyResult> {
    let value = json::parse(stdout).map_err(|e| Error::decoding(format!("failed to unmarshal raw result: {e}")))?;
    let named = value.get("cniVersion").and_then(|v| v.as_str()).filter(|v| !v.is_empty());
    AnyResult::from_json(named.unwrap_or(netconf_version), &value)
}

/// Our own environment with `CNI_COMMAND` replaced, as a delegate receives it.
pub fn delegate_env(command: skel::Command) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().filter(|(k, _)| k != "CNI_COMMAND").collect();
    env.push(("CNI_COMMAND".into(), command.as_str().into()));
    env
}

/// Run delegate plugin `plugin_type` (found on our `CNI_PATH`) with `netconf` on stdin.
/// ADD returns the parsed result; the other verbs return `None`.
pub fn delegate(command: skel::Command, plugin_type: &str, netconf: &[u8]) -> Result<Option<AnyResult>> {
    let paths = split_path(&std::env::var("CNI_PATH").unwrap_or_default());
    let plugin = find_in_path(plugin_type, &paths)?;
    let stdout = exec_plugin(&plugin, netconf, &delegate_env(command))?;
    if command != skel::Command::Add {
        return Ok(None);
    }
    let conf = json::parse(netconf).map_err(|e| Error::decoding(e.to_string()))?;
    let version = crate::version::decode_conf_version(&conf)?;
    parse_result(&version, &stdout).map(Some)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::error::Code;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn temp_dir(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(&format!("libcni-invoke-{tag}-")).tempdir().unwrap()
    }

    #[test]
    fn find_refuses_names_that_escape_cni_path() {
        let scratch = temp_dir("find");
        let dir = scratch.path().to_path_buf();
        script(&dir, "ok", "exit 0");
        std::fs::create_dir(dir.join("subdir")).unwrap();
        let paths = vec![PathBuf::from("/nonexistent"), dir.clone()];
        assert_eq!(find_in_path("ok", &paths).unwrap(), dir.join("ok"));
        for bad in ["../ok", "/bin/sh", "a/b", "..", "."] {
            let e = find_in_path(bad, &paths).unwrap_err();
            assert_eq!((e.code, e.msg), (Code::INVALID_NETWORK_CONFIG, format!("invalid plugin name: {bad}")));
        }
        let e = find_in_path("subdir", &paths).unwrap_err();
        assert_eq!(e.msg, format!("failed to find plugin \"subdir\" in path [/nonexistent {}]", dir.display()));
        assert_eq!(find_in_path("ok", &[]).unwrap_err().msg, "no paths provided");
        assert_eq!(find_in_path("", &paths).unwrap_err().msg, "no plugin name provided");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn exec_passes_env_and_stdin_and_parses_errors() {
        let scratch = temp_dir("exec");
        let dir = scratch.path().to_path_buf();
        let echo = script(&dir, "echo", r#"echo "$CNI_COMMAND" >&2; cat"#);
        let env = vec![(OsString::from("CNI_COMMAND"), OsString::from("ADD"))];
        assert_eq!(exec_plugin(&echo, b"{\"x\":1}", &env).unwrap(), b"{\"x\":1}");

        let failing = script(&dir, "fail", r#"printf '{"code":11,"msg":"busy","details":"d"}'; exit 1"#);
        assert_eq!(
            exec_plugin(&failing, b"", &env).unwrap_err(),
            Error::new(Code::TRY_AGAIN_LATER, "busy").with_details("d")
        );

        let stderr_only = script(&dir, "stderr", "echo oops >&2; exit 3");
        assert_eq!(exec_plugin(&stderr_only, b"", &env).unwrap_err().msg, "netplugin failed: \"oops\\n\"");

        let silent = script(&dir, "silent", "exit 2");
        assert_eq!(
            exec_plugin(&silent, b"", &env).unwrap_err().msg,
            "netplugin failed with no error message: exit status: 2"
        );

        let garbage = script(&dir, "garbage", "echo not-json; exit 1");
        assert!(exec_plugin(&garbage, b"", &env)
            .unwrap_err()
            .msg
            .starts_with("netplugin failed but error parsing its diagnostic message"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn result_without_version_takes_the_config_version() {
        let r = parse_result("0.3.1", br#"{"ips":[{"version":"4","address":"10.0.0.2/24"}]}"#).unwrap();
        assert_eq!(r.version(), "0.3.1");
        let r = parse_result("0.3.1", br#"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}"#).unwrap();
        assert_eq!(r.version(), "1.0.0");
    }
}
