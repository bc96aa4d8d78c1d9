//! An optional operations log for plugins: one line per event, appended to a file.
//!
//! stdout belongs to the CNI protocol (the result or the error JSON), so this is where a
//! plugin says what it did. Logging never fails a call: an unwritable log is skipped.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::time::{rfc3339, unix_now};
use crate::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    /// Something degraded but the call goes on: also printed on stderr.
    Warn,
    Error,
}

/// Where a plugin logs, if it was configured to.
#[derive(Clone, Debug, Default)]
pub struct Log {
    path: Option<PathBuf>,
    /// Fields on every line: the plugin, the command, the container and so on.
    context: Vec<(&'static str, String)>,
}

impl Log {
    pub fn new(path: Option<PathBuf>) -> Log {
        Log { path, context: Vec::new() }
    }

    pub fn with(mut self, key: &'static str, value: impl Into<String>) -> Log {
        let value = value.into();
        if !value.is_empty() {
            self.context.push((key, value));
        }
        self
    }

    /// `2026-11-23T18:31:43Z INFO msg key=value ...`, values quoted when they need it.
    pub fn line(&self, level: Level, msg: &str, fields: &[(&str, String)]) -> String {
        let mut line = format!(
            "{} {} {}",
            rfc3339(unix_now()),
            match level {
                Level::Info => "INFO",
                Level::Warn => "WARN",
                Level::Error => "ERROR",
            },
            quote(msg)
        );
        let all = self.context.iter().map(|(k, v)| (*k, v)).chain(fields.iter().map(|(k, v)| (*k, v)));
        for (k, v) in all.filter(|(_, v)| !v.is_empty()) {
            let _ = write!(line, " {k}={}", quote(v));
        }
        line.push('\n');
        line
    }

    pub fn write(&self, level: Level, msg: &str, fields: &[(&str, String)]) {
        let Some(path) = &self.path else { return };
        // O_APPEND: concurrent plugin processes' lines never interleave mid-line.
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path);
        if let Ok(mut f) = file {
            let _ = f.write_all(self.line(level, msg, fields).as_bytes());
        }
    }

    /// Log how a verb ended (`ok` with what `describe` says, or the CNI error) and hand the
    /// outcome back: each verb logs in one expression.
    pub fn outcome<T>(
        &self,
        outcome: Result<T>,
        describe: impl FnOnce(&T) -> Vec<(&'static str, String)>,
    ) -> Result<T> {
        match &outcome {
            Ok(value) => self.info("ok", &describe(value)),
            Err(e) => self.error("failed", &[("code", e.code.0.to_string()), ("error", e.to_string())]),
        }
        outcome
    }

    /// Log only a failure (STATUS is polled constantly: success is not news).
    pub fn failure<T>(&self, outcome: Result<T>) -> Result<T> {
        if let Err(e) = &outcome {
            self.error("failed", &[("code", e.code.0.to_string()), ("error", e.to_string())]);
        }
        outcome
    }

    pub fn info(&self, msg: &str, fields: &[(&str, String)]) {
        self.write(Level::Info, msg, fields)
    }

    pub fn warn(&self, msg: &str, fields: &[(&str, String)]) {
        eprint!("{}", self.line(Level::Warn, msg, fields));
        self.write(Level::Warn, msg, fields)
    }

    pub fn error(&self, msg: &str, fields: &[(&str, String)]) {
        self.write(Level::Error, msg, fields)
    }
}

fn quote(v: &str) -> String {
    if !v.is_empty() && v.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '=') {
        v.to_string()
    } else {
        crate::json::go_quote(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_context_and_quote_when_needed() {
        let log = Log::new(None).with("cmd", "ADD").with("container", "c1").with("pod", "");
        let line =
            log.line(Level::Info, "allocated", &[("ips", "10.0.0.2/24,2001:db8::2/64".into()), ("note", "a b".into())]);
        let (stamp, rest) = line.split_once(' ').unwrap();
        assert_eq!(stamp.len(), 20);
        assert_eq!(rest, "INFO allocated cmd=ADD container=c1 ips=10.0.0.2/24,2001:db8::2/64 note=\"a b\"\n");
    }

    #[test]
    fn appends_to_the_file_and_never_fails() {
        let scratch = tempfile::Builder::new().prefix("libcni-log-").tempdir().unwrap();
        let path = scratch.path().join("log");
        let log = Log::new(Some(path.clone())).with("cmd", "DEL");
        log.info("released", &[]);
        log.error("failed", &[("error", "disk full".into())]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().nth(1).unwrap().ends_with("ERROR failed cmd=DEL error=\"disk full\""));
        std::fs::remove_file(&path).unwrap();
        Log::new(Some("/nonexistent/dir/log".into())).info("ignored", &[]);
    }
}
