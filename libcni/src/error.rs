//! The CNI error: a spec code, a message and optional details.

use std::{fmt, io};

use serde::Serialize;
use serde_json::Value;

use crate::json;

/// A CNI error code (SPEC §5 "Error", plus Go's 8 and 999).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Code(pub u32);

impl Code {
    pub const INCOMPATIBLE_VERSION: Code = Code(1);
    pub const UNSUPPORTED_FIELD: Code = Code(2);
    pub const UNKNOWN_CONTAINER: Code = Code(3);
    pub const INVALID_ENVIRONMENT: Code = Code(4);
    pub const IO_FAILURE: Code = Code(5);
    pub const DECODING_FAILURE: Code = Code(6);
    pub const INVALID_NETWORK_CONFIG: Code = Code(7);
    pub const INVALID_NETNS: Code = Code(8);
    pub const TRY_AGAIN_LATER: Code = Code(11);
    pub const PLUGIN_NOT_AVAILABLE: Code = Code(50);
    pub const LIMITED_CONNECTIVITY: Code = Code(51);
    pub const INTERNAL: Code = Code(999);
}

/// An error as CNI plugins print it and runtimes read it back: `{"code": …, "msg": …,
/// "details": …}` in Go's field order, `details` omitted when empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Error {
    pub code: Code,
    pub msg: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Error { code, msg: msg.into(), details: String::new() }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(Code::INTERNAL, msg)
    }

    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(Code::INVALID_NETWORK_CONFIG, msg)
    }

    pub fn env(msg: impl Into<String>) -> Self {
        Self::new(Code::INVALID_ENVIRONMENT, msg)
    }

    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(Code::IO_FAILURE, msg)
    }

    pub fn decoding(msg: impl Into<String>) -> Self {
        Self::new(Code::DECODING_FAILURE, msg)
    }

    /// Prefix the message with context, keeping the code (like Go's `fmt.Errorf("…: %w")`).
    pub fn context(mut self, prefix: impl fmt::Display) -> Self {
        self.msg = format!("{prefix}: {}", self.msg);
        self
    }

    /// What a Go plugin prints: `json.MarshalIndent` with four spaces, no trailing newline.
    pub fn to_wire(&self) -> String {
        json::to_go_pretty(self)
    }

    /// Parse a plugin's error output; `None` if it is not an error object.
    pub fn from_json(v: &Value) -> Option<Error> {
        let obj = v.as_object()?;
        let code = json::get_ci(obj, "code").and_then(Value::as_u64).unwrap_or(0);
        let text = |k| json::get_ci(obj, k).and_then(Value::as_str).unwrap_or("").to_string();
        Some(Error { code: Code(code.min(u32::MAX as u64) as u32), msg: text("msg"), details: text("details") })
    }
}

/// Context for a failure on its way up, netavark-style: `fs::read(p).ctx("read", p.display())?`.
/// An I/O error becomes code 5; one of ours keeps its code. Both are formatted only on failure.
pub trait Context<T> {
    /// `"{what} {path}: {error}"`.
    fn ctx(self, what: &str, path: impl fmt::Display) -> Result<T>;
    /// `"{prefix()}: {error}"`.
    fn with_context<D: fmt::Display>(self, prefix: impl FnOnce() -> D) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn ctx(self, what: &str, path: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::io(format!("{what} {path}: {e}")))
    }

    fn with_context<D: fmt::Display>(self, prefix: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::io(format!("{}: {e}", prefix())))
    }
}

impl<T> Context<T> for Result<T> {
    fn ctx(self, what: &str, path: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.context(format_args!("{what} {path}")))
    }

    fn with_context<D: fmt::Display>(self, prefix: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.context(prefix()))
    }
}

/// The failures of a call that goes on past each one (GC tries every stale attachment or
/// lease), each with its own code and context, reported together at the end.
#[derive(Debug, Default)]
pub struct Failures(Vec<Error>);

impl Failures {
    pub fn push(&mut self, e: Error) {
        self.0.push(e);
    }

    /// `Ok` if nothing failed; else one error with `code`, whose message is `heading`
    /// followed by every failure, joined by `separator`.
    pub fn into_result(self, code: Code, heading: &str, separator: &str) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let each: Vec<String> = self.0.iter().map(Error::to_string).collect();
        Err(Error::new(code, format!("{heading}{}", each.join(separator))))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Go's types.Error.Error(): "msg; details" when details are present.
        if self.details.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}; {}", self.msg, self.details)
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_matches_go() {
        let e = Error::new(Code::INTERNAL, "no <IP> & more");
        assert_eq!(e.to_wire(), "{\n    \"code\": 999,\n    \"msg\": \"no \\u003cIP\\u003e \\u0026 more\"\n}");
        let e = Error::env("invalid characters in containerID").with_details("a b");
        assert_eq!(
            e.to_wire(),
            "{\n    \"code\": 4,\n    \"msg\": \"invalid characters in containerID\",\n    \"details\": \"a b\"\n}"
        );
    }

    #[test]
    fn parses_plugin_error_output() {
        let v: Value = serde_json::from_str(r#"{"code":7,"msg":"bad","details":"d"}"#).unwrap();
        assert_eq!(Error::from_json(&v), Some(Error::config("bad").with_details("d")));
        assert_eq!(Error::from_json(&Value::from(3)), None);
    }

    #[test]
    fn failures_are_reported_together_each_with_its_context() {
        assert_eq!(Failures::default().into_result(Code::IO_FAILURE, "failed: ", "; "), Ok(()));
        let mut failures = Failures::default();
        failures.push(Error::io("disk full").context("10.0.0.2"));
        failures.push(Error::internal("bad").with_details("d").context("10.0.0.3"));
        assert_eq!(
            failures.into_result(Code::IO_FAILURE, "failed to release some leases: ", "; "),
            Err(Error::io("failed to release some leases: 10.0.0.2: disk full; 10.0.0.3: bad; d"))
        );
    }
}
