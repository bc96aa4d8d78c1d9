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
use std::io::Read;

/// The kernel's ID for this boot: a sandbox recorded under another boot is dead.
/// `HOST_LOCAL_BOOT_ID` overrides it, for tests that simulate a reboot without one.
pub fn running_boot_id() -> String {
    if let Some(id) = std::env::var("HOST_LOCAL_BOOT_ID").ok().filter(|v| !v.is_empty()) {
        return id;
    }
    // A UUID and a newline: one read (read_to_string would stat the file and read three times).
    let mut id = [0u8; 64];
    let read = std::fs::File::open("/proc/sys/kernel/random/boot_id").and_then(|mut f| f.read(&mut id));
    read.ok().and_then(|n| std::str::from_utf8(&id[..n]).ok()).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// What the clock file keeps: the boots the store has seen, and when it started counting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Saved {
    /// Node time when the file was created: records from before node time count from here.
    pub origin: u64,
    /// `(boot id, base)`, oldest first; the last is the running boot.
    pub boots: Vec<(String, u64)>,
}

/// The boots a store has seen, and this call's instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeClock {
    saved: Saved,
    now: u64,
}

/// Boots kept in the clock file: older ones only make expiry of very old holds later.
const KEPT_BOOTS: usize = 64;
/// No boot runs longer: a stamp further past the last boot's start is not ours (a planted
/// or corrupt record) and must not move node time.
const MAX_BOOT_LENGTH: u64 = 10 * 365 * 24 * 3600 * 1_000_000;
const HEADER: &str = "host-local-clock v1";

impl NodeClock {
    /// The clock of a store whose file says `saved`, for a call in `boot_id` at `boottime`
    /// (µs since that boot started); `None` if the file does not know this boot.
    pub fn running(saved: Saved, boot_id: &str, boottime: u64) -> Option<NodeClock> {
        let (last, base) = saved.boots.last()?;
        // Saturating: a planted file must never make a call panic.
        let now = (last == boot_id).then_some(base.saturating_add(boottime))?;
        Some(NodeClock { saved, now })
    }

    /// Start the running boot after every stamp the store holds: `stamps` are the records'
    /// (written in the running boot?, stamp). If records of the running boot exist, the
    /// clock was lost during this boot: node time goes on from the newest stamp, without
    /// counting the uptime again (holds then expire late, never early).
    pub fn start_boot(
        saved: Option<Saved>,
        boot_id: &str,
        boottime: u64,
        stamps: impl Iterator<Item = (bool, u64)>,
    ) -> NodeClock {
        let known = saved.is_some();
        let mut saved = saved.unwrap_or_default();
        let last_base = saved.boots.last().map_or(0, |(_, base)| *base);
        let plausible = last_base.saturating_add(MAX_BOOT_LENGTH);
        let (mut latest, mut latest_here) = (0, None::<u64>);
        for (here, stamp) in stamps.filter(|(_, stamp)| *stamp <= plausible) {
            latest = latest.max(stamp);
            if here {
                latest_here = Some(latest_here.unwrap_or(0).max(stamp));
            }
        }
        let after = last_base.max(latest).saturating_add(1);
        let base = match latest_here {
            Some(newest) => newest.saturating_add(1).saturating_sub(boottime).max(last_base.saturating_add(1)),
            None => after,
        };
        saved.boots.push((boot_id.to_string(), base));
        let excess = saved.boots.len().saturating_sub(KEPT_BOOTS);
        saved.boots.drain(..excess);
        if !known {
            saved.origin = base.saturating_add(boottime);
        }
        NodeClock::running(saved, boot_id, boottime).expect("the boot was just added")
    }

    /// This call's node time.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The running boot.
    pub fn boot_id(&self) -> &str {
        self.saved.boots.last().map_or("", |(boot, _)| boot)
    }

    /// Since when, in node time, the lease described by `pod` has been free to reclaim:
    /// a hold since it was released; a sandbox of an earlier boot that was never deleted
    /// since that boot ended (at the latest when the next one started). `None` for a live
    /// sandbox of the running boot. Never before the clock's origin: records from before
    /// node time (or from before a lost clock file) count from there.
    pub fn reclaimable_since(&self, pod: &PodRecord) -> Option<u64> {
        let since = match pod.state {
            LeaseState::Held => pod.changed_at,
            LeaseState::Active if pod.boot_id != self.boot_id() => {
                let mut bases = self.saved.boots.iter().map(|(_, base)| *base);
                bases.find(|base| *base > pod.changed_at).unwrap_or(self.now)
            }
            LeaseState::Active => return None,
        };
        Some(since.max(self.saved.origin))
    }

    /// The clock file's content.
    pub fn render(&self) -> String {
        let mut text = format!("{HEADER} {}\n", self.saved.origin);
        for (boot, base) in &self.saved.boots {
            text.push_str(&format!("{boot} {base}\n"));
        }
        crate::index::seal(text)
    }

    /// What a clock file holds; `None` for anything that is not a whole file we wrote (a
    /// torn write, or garbage): the store then starts a new clock.
    pub fn parse(bytes: &[u8]) -> Option<Saved> {
        let mut lines = crate::index::unseal(bytes)?.lines();
        let origin = lines.next()?.strip_prefix(HEADER)?.strip_prefix(' ')?.parse().ok()?;
        let mut boots: Vec<(String, u64)> = Vec::new();
        for line in lines {
            let (boot, base) = line.split_once(' ')?;
            let base: u64 = base.parse().ok()?;
            if boot.is_empty() || boot.contains(char::is_whitespace) || boots.last().is_some_and(|(_, b)| *b >= base) {
                return None;
            }
            boots.push((boot.to_string(), base));
        }
        Some(Saved { origin, boots })
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

    fn stamps(list: &[(bool, u64)]) -> impl Iterator<Item = (bool, u64)> + '_ {
        list.iter().copied()
    }

    fn boot(prev: &NodeClock, id: &str, boottime: u64, list: &[(bool, u64)]) -> NodeClock {
        NodeClock::start_boot(Some(prev.saved.clone()), id, boottime, stamps(list))
    }

    #[test]
    fn node_time_moves_forward_across_boots_whatever_the_boottime() {
        let first = NodeClock::start_boot(None, "b1", 5_000_000, stamps(&[]));
        assert_eq!(first.now(), 1 + 5_000_000);
        // Three days later a stamp was written; then a reboot, 2 s of uptime.
        let stamp = 1 + 259_200_000_000;
        let second = boot(&first, "b2", 2_000_000, &[(false, stamp)]);
        assert_eq!(second.now(), stamp + 1 + 2_000_000);
        assert_eq!(NodeClock::running(second.saved.clone(), "b2", 3_000_000).unwrap().now(), second.now() + 1_000_000);
        assert_eq!(NodeClock::running(second.saved.clone(), "b1", 3_000_000), None, "b1 is not the running boot");
    }

    #[test]
    fn a_clock_lost_during_a_boot_does_not_count_the_uptime_again() {
        // Three days up; a hold was written a second ago; then the clock file is lost.
        let uptime = 259_200_000_000;
        let b1 = NodeClock::start_boot(None, "b1", 5, stamps(&[]));
        let held = b1.now() + uptime - 1_000_000;
        let again = NodeClock::start_boot(None, "b1", uptime, stamps(&[(true, held)]));
        // It goes on from the newest stamp of this boot (not from it plus the uptime again).
        assert!(again.now() > held && again.now() <= held + 1_000_001, "{} vs {held}", again.now());
        // A hold written before the clock existed counts from the new clock's origin.
        assert_eq!(again.reclaimable_since(&record(LeaseState::Held, "b0", 0)), Some(again.now()));
    }

    #[test]
    fn a_stamp_no_boot_could_reach_does_not_move_node_time() {
        let b1 = NodeClock::start_boot(None, "b1", 0, stamps(&[]));
        let b2 = boot(&b1, "b2", 7, &[(false, 1 << 62), (false, u64::MAX), (false, 1_000)]);
        assert_eq!(b2.now(), 1_001 + 7);
    }

    #[test]
    fn a_sandbox_of_an_earlier_boot_is_free_from_the_start_of_the_next_boot() {
        let b1 = NodeClock::start_boot(None, "b1", 0, stamps(&[]));
        let b2 = boot(&b1, "b2", 0, &[(false, 1_000)]);
        let b3 = boot(&b2, "b3", 7, &[(false, 2_000)]);
        let b2_start = b2.saved.boots[1].1;
        assert_eq!(b3.reclaimable_since(&record(LeaseState::Active, "b1", 500)), Some(b2_start));
        assert_eq!(b3.reclaimable_since(&record(LeaseState::Active, "b3", b3.now())), None);
        assert_eq!(b3.reclaimable_since(&record(LeaseState::Held, "b1", 900)), Some(900));
        // A boot the file lost (a power cut before it was written) ended before this one.
        let b3_start = b3.saved.boots[2].1;
        assert_eq!(b3.reclaimable_since(&record(LeaseState::Active, "lost", 1_500)), Some(b3_start));
        // Records from before node time: as old as the clock, never older.
        assert_eq!(b3.reclaimable_since(&record(LeaseState::Held, "b0", 0)), Some(b1.now()));
    }

    #[test]
    fn the_file_round_trips_and_a_torn_or_altered_file_is_ignored() {
        let mut clock = NodeClock::start_boot(None, "b1", 0, stamps(&[]));
        for i in 2..80 {
            clock = boot(&clock, &format!("b{i}"), 0, &[(false, i * 1_000)]);
        }
        assert_eq!(clock.saved.boots.len(), KEPT_BOOTS);
        let text = clock.render();
        assert_eq!(NodeClock::parse(text.as_bytes()), Some(clock.saved.clone()));
        for cut in 0..text.len() {
            assert_eq!(NodeClock::parse(&text.as_bytes()[..cut]), None, "cut at {cut}");
        }
        let altered = text.replacen("b2", "b9", 1);
        assert_eq!(NodeClock::parse(altered.as_bytes()), None);
    }
}
