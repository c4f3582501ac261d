//! Coalescing: of several writes of one document in a batch, only those that decide its
//! final state are sent.
//!
//! The bulk writer sends the *n*-th write of a document in the *n*-th request (order per
//! document), so a batch where a key changed eight times costs eight round trips, each
//! with a guarded upsert. Most of those writes are overwritten by the next one anyway: a
//! full replacement (`Replace`) or a tombstone (`Delete`) at version *v* leaves the
//! document in the same state whatever earlier writes of versions below *v* did, because
//! the guard applies it exactly when *v* is newer than the stored version, and those
//! earlier writes can only have raised the stored version to something below *v*.
//!
//! The rule, per document (database, collection, id), walking its writes in batch order:
//!
//! * a **final-state write** (a `Replace` or `Delete` that is not a fill) whose version is
//!   newer than the version of every write of the open run *supersedes* that run: those
//!   writes are not sent, and the run now holds only it;
//! * **barriers** are never superseded and close the run, so nothing before them is
//!   superseded by a write after them: fills (an incremental snapshot row only adds missing
//!   fields and must still add them when the later write turns out stale) and scoped
//!   patches (guarded by their own source's version, not the document's: they may apply
//!   where the later replacement is stale);
//! * anything else (a plain patch, or a replacement not newer than the whole run) joins
//!   the run;
//! * **child writes** (rows embedded in the document, see `cqrs_mongo::children`) are
//!   guarded by their child's own version, and a replacement or tombstone of the parent
//!   keeps the children: they neither join, close nor get superseded by a run.
//!
//! A superseded write reports the outcome of the write that superseded it (applied or
//! stale: with versions below it, it would have been stale exactly when it is). When the
//! superseding write *fails* (the server refused it), the writer sends every write of that
//! document again, uncoalesced, so failures, hold-backs and dead letters are exactly what
//! they would have been without coalescing. One difference remains: an intermediate state
//! the server would have refused on its own (a unique index it alone conflicts with) is
//! never written, so it is not dead-lettered either; the document goes straight to its
//! final state, as a replay of the key would leave it.

use std::collections::HashMap;

use cqrs_core::ReadModelWrite;
use cqrs_mongo::GuardedWrite;

/// Where an input write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kept {
    /// Sent itself, at this index of [`Coalesced::sent`].
    Sent(usize),
    /// Superseded by the write sent at this index.
    By(usize),
}

/// The writes to send and the fate of each input write.
#[derive(Debug)]
pub(super) struct Coalesced {
    /// What to send, in input order.
    pub(super) sent: Vec<GuardedWrite>,
    /// One per input write.
    pub(super) kept: Vec<Kept>,
}

/// What a write is to the rule.
enum Role {
    /// Supersedes an open run of older writes.
    FinalState,
    /// Never superseded; closes the run.
    Barrier,
    /// Joins the run.
    Other,
    /// Stands apart from the runs: neither superseded nor superseding.
    Independent,
}

fn role(w: &GuardedWrite) -> Role {
    if w.fill {
        return Role::Barrier;
    }
    match w.write {
        ReadModelWrite::Replace { .. } | ReadModelWrite::Delete { .. } => Role::FinalState,
        ReadModelWrite::ScopedPatch { .. } => Role::Barrier,
        ReadModelWrite::Patch { .. } => Role::Other,
        ReadModelWrite::Child { .. } => Role::Independent,
    }
}

/// Coalesces `writes`; `key` names the document a write goes to (same key, same document).
pub(super) fn coalesce(
    writes: &[GuardedWrite],
    key: impl Fn(&GuardedWrite) -> String,
) -> Coalesced {
    // Per document: the open run (input indices).
    let mut runs: HashMap<String, Vec<usize>> = HashMap::new();
    // For each input write, the input write that superseded it (directly).
    let mut superseded_by: Vec<Option<usize>> = vec![None; writes.len()];
    for (i, w) in writes.iter().enumerate() {
        let run = runs.entry(key(w)).or_default();
        match role(w) {
            Role::Barrier => run.clear(),
            Role::FinalState => {
                let version = w.write.version();
                if run.iter().all(|&j| writes[j].write.version() < version) {
                    for j in run.drain(..) {
                        superseded_by[j] = Some(i);
                    }
                }
                run.push(i);
            }
            Role::Other => run.push(i),
            Role::Independent => {}
        }
    }
    // Superseders come later than what they supersede, so walking backwards resolves
    // chains (a superseded superseder) to the write that is sent.
    let mut last: Vec<usize> = (0..writes.len()).collect();
    for i in (0..writes.len()).rev() {
        if let Some(by) = superseded_by[i] {
            last[i] = last[by];
        }
    }
    let mut position: Vec<Option<usize>> = vec![None; writes.len()];
    let mut sent = Vec::with_capacity(writes.len());
    for (i, w) in writes.iter().enumerate() {
        if superseded_by[i].is_none() {
            position[i] = Some(sent.len());
            sent.push(w.clone());
        }
    }
    let kept = (0..writes.len())
        .map(|i| match superseded_by[i] {
            None => Kept::Sent(position[i].unwrap_or_default()),
            Some(_) => Kept::By(position[last[i]].unwrap_or_default()),
        })
        .collect();
    Coalesced { sent, kept }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use bson::{Bson, doc};
    use cqrs_core::{SourceVersion, Target};

    fn replace(id: i32, v: u64) -> GuardedWrite {
        GuardedWrite::new(ReadModelWrite::Replace {
            target: Target::collection("c"),
            id: Bson::Int32(id),
            version: SourceVersion::new(v),
            document: doc! { "v": v as i64 },
        })
    }

    fn delete(id: i32, v: u64) -> GuardedWrite {
        GuardedWrite::new(ReadModelWrite::Delete {
            target: Target::collection("c"),
            id: Bson::Int32(id),
            version: SourceVersion::new(v),
        })
    }

    fn patch(id: i32, v: u64) -> GuardedWrite {
        GuardedWrite::new(ReadModelWrite::Patch {
            target: Target::collection("c"),
            id: Bson::Int32(id),
            version: SourceVersion::new(v),
            set: doc! { "p": v as i64 },
            unset: vec![],
        })
    }

    fn scoped(id: i32, v: u64) -> GuardedWrite {
        GuardedWrite::new(ReadModelWrite::ScopedPatch {
            target: Target::collection("c"),
            id: Bson::Int32(id),
            scope: "lines".into(),
            version: SourceVersion::new(v),
            set: doc! { "s": v as i64 },
            unset: vec![],
        })
    }

    fn run(writes: &[GuardedWrite]) -> (Vec<u64>, Vec<Kept>) {
        let c = coalesce(writes, |w| format!("{:?}", w.write.id()));
        let versions = c.sent.iter().map(|w| w.write.version().position).collect();
        (versions, c.kept)
    }

    #[test]
    fn the_last_full_state_of_a_document_supersedes_its_earlier_writes() {
        let writes = [
            replace(1, 10),
            replace(2, 11),
            patch(1, 12),
            replace(1, 13),
            delete(1, 14),
        ];
        let (sent, kept) = run(&writes);
        assert_eq!(sent, vec![11, 14]);
        assert_eq!(
            kept,
            vec![
                Kept::By(1),
                Kept::Sent(0),
                Kept::By(1),
                Kept::By(1),
                Kept::Sent(1)
            ]
        );
    }

    #[test]
    fn a_delete_then_a_newer_insert_sends_the_insert() {
        let (sent, kept) = run(&[delete(1, 10), replace(1, 11)]);
        assert_eq!(sent, vec![11]);
        assert_eq!(kept, vec![Kept::By(0), Kept::Sent(0)]);
    }

    #[test]
    fn patches_alone_are_all_sent() {
        let (sent, _) = run(&[replace(1, 10), patch(1, 11), patch(1, 12)]);
        assert_eq!(sent, vec![10, 11, 12]);
    }

    #[test]
    fn a_write_not_newer_than_the_whole_run_supersedes_nothing() {
        // A replay of an old change after a newer one: both go, the guard decides.
        let (sent, _) = run(&[replace(1, 20), replace(1, 10)]);
        assert_eq!(sent, vec![20, 10]);
        let (sent, _) = run(&[replace(1, 20), replace(1, 20)]);
        assert_eq!(sent, vec![20, 20]);
        // Once the run is all older, the next newer write takes all of it.
        let (sent, _) = run(&[replace(1, 20), replace(1, 10), replace(1, 30)]);
        assert_eq!(sent, vec![30]);
    }

    #[test]
    fn fills_are_never_superseded_and_nothing_is_coalesced_across_them() {
        let fill = replace(1, 0).fill();
        let (sent, kept) = run(&[replace(1, 10), fill, replace(1, 20), replace(1, 30)]);
        assert_eq!(sent, vec![10, 0, 30]);
        assert_eq!(
            kept,
            vec![Kept::Sent(0), Kept::Sent(1), Kept::By(2), Kept::Sent(2)]
        );
        // A fill delete (never built as a fill, still a barrier).
        let (sent, _) = run(&[replace(1, 10), delete(1, 0).fill(), replace(1, 30)]);
        assert_eq!(sent, vec![10, 0, 30]);
    }

    #[test]
    fn child_writes_stand_apart_from_the_parents_runs() {
        let child = |v: u64| {
            GuardedWrite::new(ReadModelWrite::Child {
                target: Target::collection("c"),
                id: Bson::Int32(1),
                field: "lines".into(),
                key: "1".into(),
                version: SourceVersion::new(v),
                change: cqrs_core::ChildChange::Delete,
            })
        };
        // The parent's replacements still coalesce around a child write, which is sent
        // whatever its version: the last replacement keeps it.
        let (sent, kept) = run(&[replace(1, 10), child(30), replace(1, 20)]);
        assert_eq!(sent, vec![30, 20]);
        assert_eq!(kept, vec![Kept::By(1), Kept::Sent(0), Kept::Sent(1)]);
    }

    #[test]
    fn scoped_patches_are_barriers() {
        let (sent, _) = run(&[replace(1, 10), scoped(1, 11), replace(1, 12)]);
        assert_eq!(sent, vec![10, 11, 12]);
    }

    #[test]
    fn documents_are_told_apart_by_collection_and_id() {
        let other = GuardedWrite::new(ReadModelWrite::Replace {
            target: Target::collection("d"),
            id: Bson::Int32(1),
            version: SourceVersion::new(11),
            document: doc! {},
        });
        let writes = [replace(1, 10), other, replace(1, 12)];
        let c = coalesce(&writes, |w| {
            format!("{}\u{0}{:?}", w.write.target().collection, w.write.id())
        });
        assert_eq!(c.sent.len(), 2);
        assert_eq!(c.kept, vec![Kept::By(1), Kept::Sent(0), Kept::Sent(1)]);
    }

    // Through the pipeline and the writer, over the in-memory store.

    use crate::dead_letter::Stage;
    use crate::testing::{self as t, ORDERS, TOPIC, doc_id, fixture, snapshot_read, upsert};

    fn state(f: &crate::testing::Fixture, id: i32) -> Option<(SourceVersion, bool)> {
        f.store
            .with(|s| s.docs.get(&(ORDERS.to_owned(), doc_id(id))).copied())
    }

    #[tokio::test]
    async fn a_batch_sends_one_write_per_document_and_reports_every_change() {
        let f = fixture();
        let batch = [
            upsert(0, 1, 100),
            upsert(1, 2, 105),
            upsert(2, 1, 110),
            upsert(3, 1, 120),
            t::delete(4, 2, 130),
            upsert(5, 3, 140),
            t::delete(6, 3, 150),
        ];
        let stop = tokio_util::sync::CancellationToken::new();
        let report = f.pipeline.process(&batch, &stop).await.unwrap();
        assert_eq!(
            (report.applied, report.stale, report.dead_lettered),
            (7, 0, 0)
        );
        assert_eq!(f.store.with(|s| (s.bulks, s.writes)), (1, 3));
        assert_eq!(state(&f, 1), Some((SourceVersion::new(120), false)));
        assert_eq!(state(&f, 2), Some((SourceVersion::new(130), true)));
        assert_eq!(state(&f, 3), Some((SourceVersion::new(150), true)));
        // Replayed: everything is stale, as each write would have been.
        let again = f.pipeline.process(&batch, &stop).await.unwrap();
        assert_eq!((again.applied, again.stale), (0, 7));
    }

    #[tokio::test]
    async fn a_refused_final_write_sends_the_documents_writes_again_uncoalesced() {
        let f = fixture();
        f.store.with(|s| s.refuse.insert(doc_id(1)));
        let batch = [upsert(0, 1, 100), upsert(1, 1, 110), upsert(2, 1, 120)];
        let stop = tokio_util::sync::CancellationToken::new();
        let report = f.pipeline.process(&batch, &stop).await.unwrap();
        assert_eq!((report.applied, report.dead_lettered), (0, 3));
        // One coalesced request, then the document's three writes on their own.
        assert_eq!(f.store.with(|s| (s.bulks, s.writes)), (2, 4));
        f.letters.with(|l| {
            assert_eq!(l.letter(&format!("{TOPIC}/0/0")).0, Stage::Write);
            let behind = Some(format!("{TOPIC}/0/0"));
            assert_eq!(
                l.letter(&format!("{TOPIC}/0/1")),
                (Stage::HeldBack, behind.clone())
            );
            assert_eq!(l.letter(&format!("{TOPIC}/0/2")), (Stage::HeldBack, behind));
        });
    }

    #[tokio::test]
    async fn a_snapshot_fill_between_changes_is_sent_and_keeps_its_place() {
        let f = fixture();
        // The fill comes between two changes of key 1: the first change is not coalesced
        // over it, the fill still adds to the document the first change made.
        let batch = [upsert(0, 1, 100), snapshot_read(1, 1), upsert(2, 1, 120)];
        let stop = tokio_util::sync::CancellationToken::new();
        let report = f.pipeline.process(&batch, &stop).await.unwrap();
        assert_eq!((report.applied, report.dead_lettered), (3, 0));
        assert_eq!(f.store.with(|s| s.writes), 3);
        assert_eq!(state(&f, 1), Some((SourceVersion::new(120), false)));
        // A fill of a key deleted in the same batch stays a no-op on the tombstone.
        let batch = [upsert(3, 2, 200), t::delete(4, 2, 210), snapshot_read(5, 2)];
        let report = f.pipeline.process(&batch, &stop).await.unwrap();
        assert_eq!((report.applied, report.stale), (2, 1));
        assert_eq!(state(&f, 2), Some((SourceVersion::new(210), true)));
    }
}
