//! The CNI library under our plugins and cnitool.
//!
//! - [`types`]: one result type per wire layout (0.1/0.2, 0.3/0.4, 1.x) and Go's conversions.
//! - [`skel`]: the plugin entry point (env validation, version gating, error JSON, panic hook).
//! - [`args`]: `CNI_ARGS` parsing with Go's rules.
//! - [`invoke`]: finding and executing delegate plugins.
//! - [`conf`] and [`runtime`]: network config lists, and running them like Go's libcni,
//!   with a result cache that Go tools can read.

pub mod args;
pub mod base64;
pub mod conf;
pub mod error;
pub mod invoke;
pub mod ip;
pub mod json;
pub mod log;
pub mod runtime;
pub mod skel;
pub mod time;
pub mod types;
pub mod validate;
pub mod version;

pub use error::{Code, Context, Error, Failures, Result};
