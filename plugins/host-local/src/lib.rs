//! host-local: upstream's host-local IPAM, drop-in compatible on disk, with durable
//! writes, a lease index, and sticky pod IPs across sandboxes.

pub mod admin;
pub mod allocator;
pub mod clock;
pub mod config;
pub mod counters;
pub mod disk;
pub mod dns;
pub mod index;
pub mod metrics;
pub mod plugin;
pub mod range;
pub mod store;
