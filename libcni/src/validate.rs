//! Validation of container IDs, network names and interface names (Go's `pkg/utils`).
//!
//! The network name becomes a directory under dataDir and the container ID is written
//! into lease files, so these checks are also what keeps paths inside the store.

use crate::error::{Code, Error, Result};

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`
fn is_valid_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

pub fn container_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::new(Code::UNKNOWN_CONTAINER, "missing containerID"));
    }
    if !is_valid_name(id) {
        return Err(Error::env("invalid characters in containerID").with_details(id));
    }
    Ok(())
}

pub fn network_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::config("missing network name:"));
    }
    if !is_valid_name(name) {
        return Err(Error::config("invalid characters found in network name").with_details(name));
    }
    Ok(())
}

const MAX_INTERFACE_NAME_LENGTH: usize = 15;

pub fn interface_name(ifname: &str) -> Result<()> {
    if ifname.is_empty() {
        return Err(Error::env("interface name is empty"));
    }
    if ifname.len() > MAX_INTERFACE_NAME_LENGTH {
        return Err(Error::env("interface name is too long")
            .with_details(format!("interface name should be less than {} characters", MAX_INTERFACE_NAME_LENGTH + 1)));
    }
    if ifname == "." || ifname == ".." {
        return Err(Error::env("interface name is . or .."));
    }
    if ifname.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(Error::env("interface name contains / or : or whitespace characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        for ok in ["c1", "cnitool-0123abcd", "a.b_c-d", "10.31.0.2", "X"] {
            assert_eq!(container_id(ok), Ok(()), "{ok}");
        }
        assert_eq!(container_id("").unwrap_err().code, Code::UNKNOWN_CONTAINER);
        for bad in ["-a", "_a", ".a", "a b", "a/b", "../x", "a\n", "   dummy\n "] {
            let e = container_id(bad).unwrap_err();
            assert_eq!(
                (e.code, e.msg.as_str(), e.details.as_str()),
                (Code::INVALID_ENVIRONMENT, "invalid characters in containerID", bad)
            );
        }
    }

    #[test]
    fn network_names() {
        assert_eq!(network_name("mynet0.1.0"), Ok(()));
        for bad in ["../etc", "a/b", ".hidden", "..", "a b", "net\u{e9}"] {
            let e = network_name(bad).unwrap_err();
            assert_eq!(
                (e.code, e.msg.as_str()),
                (Code::INVALID_NETWORK_CONFIG, "invalid characters found in network name"),
                "{bad}"
            );
        }
    }

    #[test]
    fn interface_names() {
        let cases: &[(&str, Option<&str>)] = &[
            ("eth0", None),
            ("net1", None),
            ("123456789012345", None),
            ("", Some("interface name is empty")),
            ("1234567890123456", Some("interface name is too long")),
            (".", Some("interface name is . or ..")),
            ("..", Some("interface name is . or ..")),
            ("a/b", Some("interface name contains / or : or whitespace characters")),
            ("a:b", Some("interface name contains / or : or whitespace characters")),
            ("a b", Some("interface name contains / or : or whitespace characters")),
            ("a\tb", Some("interface name contains / or : or whitespace characters")),
        ];
        for (name, want) in cases {
            let got = interface_name(name).err().map(|e| {
                assert_eq!(e.code, Code::INVALID_ENVIRONMENT);
                e.msg
            });
            assert_eq!(got.as_deref(), *want, "{name:?}");
        }
    }
}
