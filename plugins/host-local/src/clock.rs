//! Node time: how long this node has been running, as one store counts it, in
//! microseconds. It orders and ages holds, never the wall clock.
//!
//! Edge devices without a real-time clock boot in 1970 or at their image's build date,
//! and NTP later jumps the clock, forwards or back. Node time is the running boot's
//! `CLOCK_BOOTTIME` plus that boot's *base*: the node time at which the boot started,
//! which the store keeps per boot (`.hostlocal/clock`). A new boot's base lies after every
//! stamp in the store, so node time only moves forward, across reboots and power cuts.
//! Time the node spends switched off is not counted: a hold neither expires while the
//! node is off nor because the clock jumped. What a power cut hides (the running time
//! after the store's last write) is not counted either: a hold then expires later than
//! `holdDuration`, never earlier.

use crate::store::{LeaseState, PodRecord};

/// The kernel's ID for this boot: a sandbox recorded under another boot is dead.
/// `HOST_LOCAL_BOOT_ID` overrides it, for tests that simulate a reboot without one.
pub fn running_boot_id() -> String {
    if let Some(id) = std::env::var("HOST_LOCAL_BOOT_ID").ok().filter(|v| !v.is_empty()) {
        return id;
    }
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The boots a store has seen, and this call's instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeClock {
    /// `(boot id, base)`, oldest first; the last is the running boot.
    boots: Vec<(String, u64)>,
    now: u64,
}

/// Boots kept in the clock file: older ones only make expiry of very old holds later.
const KEPT_BOOTS: usize = 64;
const HEADER: &str = "host-local-clock v1";

impl NodeClock {
    /// The clock of a store whose file says `boots`, for a call in `boot_id` at
    /// `boottime` (µs since that boot started); `None` if the file does not know this boot.
    pub fn running(boots: Vec<(String, u64)>, boot_id: &str, boottime: u64) -> Option<NodeClock> {
        let (last, base) = boots.last()?;
        // Saturating: a planted file must never make a call panic.
        let now = (last == boot_id).then_some(base.saturating_add(boottime))?;
        Some(NodeClock { now, boots })
    }

    /// Start the running boot after every `stamp` the store holds: `latest_stamp` is the
    /// largest of them (0 for none).
    pub fn start_boot(mut boots: Vec<(String, u64)>, boot_id: &str, boottime: u64, latest_stamp: u64) -> NodeClock {
        let after = boots.last().map_or(0, |(_, base)| *base).max(latest_stamp);
        boots.push((boot_id.to_string(), after.saturating_add(1)));
        let excess = boots.len().saturating_sub(KEPT_BOOTS);
        boots.drain(..excess);
        NodeClock::running(boots, boot_id, boottime).expect("the boot was just added")
    }

    /// This call's node time.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The running boot.
    pub fn boot_id(&self) -> &str {
        self.boots.last().map_or("", |(boot, _)| boot)
    }

    /// Since when, in node time, the lease described by `pod` has been free to reclaim:
    /// a hold since it was released; a sandbox of an earlier boot that was never deleted
    /// since that boot ended (at the latest when the next one started). `None` for a live
    /// sandbox of the running boot.
    pub fn reclaimable_since(&self, pod: &PodRecord) -> Option<u64> {
        // Records written before node time existed carry 0: they are as old as the clock.
        let origin = self.boots.first().map_or(0, |(_, base)| *base);
        match pod.state {
            LeaseState::Held => Some(pod.changed_at.max(origin)),
            LeaseState::Active if pod.boot_id != self.boot_id() => {
                Some(self.boots.iter().map(|(_, base)| *base).find(|base| *base > pod.changed_at).unwrap_or(self.now))
            }
            LeaseState::Active => None,
        }
    }

    /// The clock file's content.
    pub fn render(&self) -> String {
        let mut text = format!("{HEADER}\n");
        for (boot, base) in &self.boots {
            text.push_str(&format!("{boot} {base}\n"));
        }
        let sum = crate::index::fnv1a(text.as_bytes());
        text + &format!("end {sum:016x}\n")
    }

    /// The boots a clock file lists; empty for anything that is not a whole file we wrote
    /// (a torn write, or garbage): the store then starts the running boot afresh.
    pub fn parse(bytes: &[u8]) -> Vec<(String, u64)> {
        Self::parse_whole(bytes).unwrap_or_default()
    }

    fn parse_whole(bytes: &[u8]) -> Option<Vec<(String, u64)>> {
        let text = std::str::from_utf8(bytes).ok()?;
        let body_end = text.strip_suffix('\n')?.rfind('\n')? + 1;
        let sum = text[body_end..].strip_prefix("end ")?.strip_suffix('\n')?;
        if sum != format!("{:016x}", crate::index::fnv1a(&bytes[..body_end])) {
            return None;
        }
        let mut lines = text[..body_end].lines();
        if lines.next()? != HEADER {
            return None;
        }
        let mut boots: Vec<(String, u64)> = Vec::new();
        for line in lines {
            let (boot, base) = line.split_once(' ')?;
            let base: u64 = base.parse().ok()?;
            if boot.is_empty() || boot.contains(char::is_whitespace) || boots.last().is_some_and(|(_, b)| *b >= base) {
                return None;
            }
            boots.push((boot.to_string(), base));
        }
        Some(boots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Owner;

    fn record(state: LeaseState, boot: &str, changed_at: u64) -> PodRecord {
        PodRecord {
            owner: Owner::new("c", "eth0"),
            namespace: "ns".into(),
            name: "p".into(),
            uid: String::new(),
            boot_id: boot.into(),
            state,
            since: 0,
            added_at: changed_at,
            changed_at,
        }
    }

    #[test]
    fn node_time_moves_forward_across_boots_whatever_the_boottime() {
        let first = NodeClock::start_boot(Vec::new(), "b1", 5_000_000, 0);
        assert_eq!(first.now(), 1 + 5_000_000);
        // Three days later a stamp was written; then a reboot, 2 s of uptime.
        let stamp = 1 + 259_200_000_000;
        let second = NodeClock::start_boot(first.boots.clone(), "b2", 2_000_000, stamp);
        assert!(second.now() > stamp);
        assert_eq!(NodeClock::running(second.boots.clone(), "b2", 3_000_000).unwrap().now(), second.now() + 1_000_000);
        assert_eq!(NodeClock::running(second.boots.clone(), "b1", 3_000_000), None, "b1 is not the running boot");
    }

    #[test]
    fn a_sandbox_of_an_earlier_boot_is_free_from_the_start_of_the_next_boot() {
        let b1 = NodeClock::start_boot(Vec::new(), "b1", 0, 0);
        let b2 = NodeClock::start_boot(b1.boots.clone(), "b2", 0, 1_000);
        let b3 = NodeClock::start_boot(b2.boots.clone(), "b3", 7, 2_000);
        let b2_start = b2.boots[1].1;
        assert_eq!(b3.reclaimable_since(&record(LeaseState::Active, "b1", 500)), Some(b2_start));
        assert_eq!(b3.reclaimable_since(&record(LeaseState::Active, "b3", b3.now())), None);
        assert_eq!(b3.reclaimable_since(&record(LeaseState::Held, "b1", 900)), Some(900));
        // A boot the file lost (a power cut before it was written) ended before this one.
        let b3_start = b3.boots[2].1;
        assert_eq!(b3.reclaimable_since(&record(LeaseState::Active, "lost", 1_500)), Some(b3_start));
        // Records from before node time: as old as the clock, never older.
        assert_eq!(b3.reclaimable_since(&record(LeaseState::Held, "b0", 0)), Some(1));
    }

    #[test]
    fn the_file_round_trips_and_a_torn_or_altered_file_is_ignored() {
        let mut clock = NodeClock::start_boot(Vec::new(), "b1", 0, 0);
        for i in 2..80 {
            clock = NodeClock::start_boot(clock.boots.clone(), &format!("b{i}"), 0, i * 1_000);
        }
        assert_eq!(clock.boots.len(), KEPT_BOOTS);
        let text = clock.render();
        assert_eq!(NodeClock::parse(text.as_bytes()), clock.boots);
        for cut in 0..text.len() {
            assert_eq!(NodeClock::parse(&text.as_bytes()[..cut]), Vec::new(), "cut at {cut}");
        }
        let altered = text.replacen("b2", "b9", 1);
        assert_eq!(NodeClock::parse(altered.as_bytes()), Vec::new());
    }
}
