//! The parked keys: which keys are held back, and behind which dead letter. Pure state,
//! fed by what the records say (a full refresh, a recheck of some keys) and by what this
//! process parked itself, so that its decisions are tested without MongoDB.
//!
//! The one subtle rule (commit 7fd42f9): a refresh whose query ran before a dead letter
//! written here was stored (or before MongoDB returned it) does not see that record, and
//! must not release its key, or the key's next change would be applied on top of the
//! dead-lettered one. Keys parked here stay *unconfirmed* until a refresh reads their
//! record back, for at most [`UNCONFIRMED_FOR`]; after that the records decide alone, so
//! that a dead letter resolved before any refresh saw it cannot hold its key forever.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::KeyRef;

/// How long a key parked here stays parked without a refresh reading its record back.
pub(crate) const UNCONFIRMED_FOR: Duration = Duration::from_secs(60);

/// The dead letter a parked key waits behind: its id and where it sits in its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blocker {
    pub(crate) id: String,
    pub(crate) offset: i64,
}

impl Blocker {
    /// Keeps the later of two blockers (messages of one key share a partition).
    pub(crate) fn latest(self, other: Blocker) -> Blocker {
        if other.offset > self.offset {
            other
        } else {
            self
        }
    }
}

/// Merges `blocker` into the entry of `key`, keeping the latest.
pub(crate) fn merge(keys: &mut HashMap<KeyRef, Blocker>, key: KeyRef, blocker: Blocker) {
    let merged = match keys.remove(&key) {
        Some(known) => known.latest(blocker),
        None => blocker,
    };
    keys.insert(key, merged);
}

/// Keys held back, each with the dead letter its next messages wait behind (the latest
/// pending one of the key), as the records say plus what this process parked and no
/// refresh has read back yet.
#[derive(Debug, Default)]
pub(crate) struct Parked {
    keys: HashMap<KeyRef, Blocker>,
    unconfirmed: HashMap<KeyRef, (Blocker, Instant)>,
}

impl Parked {
    /// The dead letter holding `key` back, if any.
    pub(crate) fn blocker(&self, key: &KeyRef) -> Option<&Blocker> {
        self.keys.get(key)
    }

    /// Keys parked.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// A dead letter of `key` was just recorded by this process.
    pub(crate) fn park(&mut self, key: KeyRef, blocker: Blocker, now: Instant) {
        merge(&mut self.keys, key.clone(), blocker);
        if let Some(merged) = self.keys.get(&key) {
            self.unconfirmed.insert(key, (merged.clone(), now));
        }
    }

    /// A full reload: `found` is every pending record's key (latest blocker each), as read
    /// by a query that may have started before some of this process's own parkings.
    pub(crate) fn refreshed(&mut self, mut found: HashMap<KeyRef, Blocker>, now: Instant) {
        self.unconfirmed.retain(|key, (_, at)| {
            !found.contains_key(key) && now.saturating_duration_since(*at) < UNCONFIRMED_FOR
        });
        for (key, (blocker, _)) in &self.unconfirmed {
            merge(&mut found, key.clone(), blocker.clone());
        }
        self.keys = found;
    }

    /// The records asked again about `asked` (queried after this process parked them):
    /// `still` holds those still pending. Returns the keys released.
    pub(crate) fn rechecked(
        &mut self,
        asked: &[KeyRef],
        still: &HashMap<KeyRef, Blocker>,
    ) -> Vec<KeyRef> {
        let mut released = Vec::new();
        for key in asked {
            match still.get(key) {
                Some(blocker) => {
                    self.keys.insert(key.clone(), blocker.clone());
                }
                None => {
                    self.release(key);
                    released.push(key.clone());
                }
            }
        }
        released
    }

    /// `key` flows again (its records were resolved).
    pub(crate) fn release(&mut self, key: &KeyRef) {
        self.keys.remove(key);
        self.unconfirmed.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> KeyRef {
        KeyRef {
            topic: "t".into(),
            key: k.into(),
        }
    }

    fn blocker(offset: i64) -> Blocker {
        Blocker {
            id: format!("t/0/{offset}"),
            offset,
        }
    }

    #[test]
    fn a_refresh_that_did_not_see_a_fresh_dead_letter_keeps_its_key_parked() {
        // The 7fd42f9 race: the refresh's query ran, then this process parked `a`, then the
        // refresh applied its (older) result.
        let mut parked = Parked::default();
        let t0 = Instant::now();
        parked.park(key("a"), blocker(5), t0);
        parked.refreshed(HashMap::new(), t0 + Duration::from_secs(1));
        assert_eq!(parked.blocker(&key("a")), Some(&blocker(5)));
    }

    #[test]
    fn a_refresh_that_read_the_record_back_confirms_it_and_later_ones_decide_alone() {
        let mut parked = Parked::default();
        let t0 = Instant::now();
        parked.park(key("a"), blocker(5), t0);
        let found = HashMap::from([(key("a"), blocker(5))]);
        parked.refreshed(found, t0);
        // Confirmed: a later refresh without the record (an operator skipped it) releases.
        parked.refreshed(HashMap::new(), t0 + Duration::from_secs(1));
        assert_eq!(parked.blocker(&key("a")), None);
    }

    #[test]
    fn an_unconfirmed_key_is_released_by_the_records_after_a_minute() {
        let mut parked = Parked::default();
        let t0 = Instant::now();
        parked.park(key("a"), blocker(5), t0);
        parked.refreshed(
            HashMap::new(),
            t0 + UNCONFIRMED_FOR - Duration::from_secs(1),
        );
        assert!(parked.blocker(&key("a")).is_some());
        parked.refreshed(HashMap::new(), t0 + UNCONFIRMED_FOR);
        assert_eq!(parked.blocker(&key("a")), None);
    }

    #[test]
    fn the_latest_blocker_of_a_key_wins_from_any_side() {
        let mut parked = Parked::default();
        let t0 = Instant::now();
        parked.park(key("a"), blocker(9), t0);
        parked.park(key("a"), blocker(3), t0);
        assert_eq!(parked.blocker(&key("a")), Some(&blocker(9)));
        let found = HashMap::from([(key("a"), blocker(12))]);
        parked.refreshed(found, t0);
        assert_eq!(parked.blocker(&key("a")), Some(&blocker(12)));
        assert_eq!(parked.len(), 1);
    }

    #[test]
    fn a_recheck_releases_resolved_keys_and_updates_the_others() {
        let mut parked = Parked::default();
        let t0 = Instant::now();
        parked.park(key("a"), blocker(1), t0);
        parked.park(key("b"), blocker(2), t0);
        let still = HashMap::from([(key("b"), blocker(7))]);
        let released = parked.rechecked(&[key("a"), key("b")], &still);
        assert_eq!(released, vec![key("a")]);
        assert_eq!(parked.blocker(&key("a")), None);
        assert_eq!(parked.blocker(&key("b")), Some(&blocker(7)));
        // A released key is no longer unconfirmed: a refresh does not bring it back.
        parked.refreshed(HashMap::new(), t0);
        assert_eq!(parked.blocker(&key("a")), None);
    }
}
