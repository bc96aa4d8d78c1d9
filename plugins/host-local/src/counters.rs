//! Event counters a store keeps for `host-local metrics`: holds reclaimed, ADDs refused
//! because a range set was full, and crash debris cleaned.
//!
//! They live in `.hostlocal/counters`, replaced atomically and synced when they change
//! (rare events: never on the path of an ordinary ADD), so a power cut loses at most the
//! update in flight. A file that is missing or not whole starts them again from zero with a
//! new `created` time, which `metrics` exports: a reset is visible, never silent.

use std::collections::BTreeMap;

/// What is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Counter {
    /// A full range set: the oldest hold went to another pod.
    HoldsReclaimed,
    /// An ADD refused because its range set had no address left.
    AddsRefused,
    /// Files only a crash leaves, removed: empty leases, unreadable pod records, old temp files.
    DebrisCleaned,
}

impl Counter {
    pub const ALL: [Counter; 3] = [Counter::HoldsReclaimed, Counter::AddsRefused, Counter::DebrisCleaned];

    pub fn name(self) -> &'static str {
        match self {
            Counter::HoldsReclaimed => "holds_reclaimed",
            Counter::AddsRefused => "adds_refused",
            Counter::DebrisCleaned => "debris_cleaned",
        }
    }

    /// Whether it is counted per range set (else per network).
    pub fn per_range_set(self) -> bool {
        self != Counter::DebrisCleaned
    }
}

/// A store's counters: values by counter and range set (`None` for per-network counters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Wall clock (Unix seconds) when counting started.
    pub created: u64,
    pub values: BTreeMap<(Counter, Option<usize>), u64>,
}

const HEADER: &str = "host-local-counters v1";

impl Counters {
    pub fn add(&mut self, counter: Counter, range_set: Option<usize>, by: u64) {
        let value = self.values.entry((counter, range_set)).or_default();
        *value = value.saturating_add(by);
    }

    pub fn get(&self, counter: Counter, range_set: Option<usize>) -> u64 {
        self.values.get(&(counter, range_set)).copied().unwrap_or(0)
    }

    pub fn render(&self) -> String {
        let mut text = format!("{HEADER} {}\n", self.created);
        for ((counter, set), value) in &self.values {
            let set = set.map_or("-".to_string(), |s| s.to_string());
            text.push_str(&format!("{} {set} {value}\n", counter.name()));
        }
        crate::index::seal(text)
    }

    /// The counters a file holds; `None` for anything that is not a whole file we wrote.
    pub fn parse(bytes: &[u8]) -> Option<Counters> {
        let mut lines = crate::index::unseal(bytes)?.lines();
        let created = lines.next()?.strip_prefix(HEADER)?.strip_prefix(' ')?.parse().ok()?;
        let mut counters = Counters { created, values: BTreeMap::new() };
        for line in lines {
            let mut fields = line.split(' ');
            let (name, set, value) = (fields.next()?, fields.next()?, fields.next()?);
            let counter = Counter::ALL.into_iter().find(|c| c.name() == name)?;
            let set = match set {
                "-" => None,
                n => Some(n.parse().ok()?),
            };
            if fields.next().is_some() || set.is_some() != counter.per_range_set() {
                return None;
            }
            counters.values.insert((counter, set), value.parse().ok()?);
        }
        Some(counters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip_and_a_torn_or_altered_file_is_rejected() {
        let mut c = Counters { created: 1_795_000_000, ..Default::default() };
        c.add(Counter::HoldsReclaimed, Some(0), 3);
        c.add(Counter::AddsRefused, Some(1), 2);
        c.add(Counter::DebrisCleaned, None, 7);
        c.add(Counter::DebrisCleaned, None, 1);
        let text = c.render();
        assert_eq!(Counters::parse(text.as_bytes()), Some(c.clone()));
        assert_eq!(c.get(Counter::DebrisCleaned, None), 8);
        for cut in 0..text.len() {
            assert_eq!(Counters::parse(&text.as_bytes()[..cut]), None, "cut at {cut}");
        }
        assert_eq!(Counters::parse(text.replacen(" 3\n", " 9\n", 1).as_bytes()), None);
    }
}
