//! Blob IDs (the wire's `seq`): per mailbox, not relay-wide.
//!
//! A blob's ID is `(put minute << 20) + n`: the minute the relay took the
//! put (minutes since the epoch), then a count that only the puts to the
//! *same* mailbox in that minute move. So IDs strictly increase within a
//! mailbox (fetch cursors and FIFO order work as before), while the IDs of
//! different mailboxes say nothing about the order of their puts within a
//! minute, and carry no time finer than the minute (issue 18 item 10). A
//! relay-wide counter, as before, gave the order of every put across
//! mailboxes and the relay's whole traffic volume to anyone who saw two.
//!
//! IDs never repeat within a mailbox, also after every blob of it was
//! acked: the last ID of each mailbox that took a put in the current minute
//! is kept in memory (older ones are below any ID the minute can give).
//! After a restart, mailboxes with stored blobs continue after their
//! newest; for the others the first minute of the run starts at the next
//! minute's IDs, so a put in the minute of a restart cannot reuse an ID
//! handed out before it. The minute never moves back within a run, even if
//! the clock does.

use std::collections::HashMap;
use std::sync::Mutex;

use sotto_proto::MailboxId;

use super::Seq;

/// Bits of an ID below the minute.
const COUNT_BITS: u32 = 20;

/// The first ID of `minute` (never 0: a cursor of 0 means "from the start").
fn first_of(minute: u64) -> Seq {
    minute.saturating_mul(1 << COUNT_BITS).saturating_add(1)
}

#[derive(Default)]
struct Inner {
    /// Highest minute seen in this run.
    minute: u64,
    /// No ID of this run is below it (set by the run's first put).
    floor: Option<Seq>,
    /// Last ID given in each mailbox, kept while it may still matter.
    last: HashMap<MailboxId, Seq>,
}

/// Hands out blob IDs; shared by the backends.
#[derive(Default)]
pub(super) struct BlobIds {
    inner: Mutex<Inner>,
}

impl BlobIds {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update is a few integer ops and one map insert.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records an ID found in storage at open.
    pub(super) fn seen(&self, mailbox: &MailboxId, id: Seq) {
        let mut inner = self.lock();
        let last = inner.last.entry(*mailbox).or_insert(id);
        *last = (*last).max(id);
    }

    /// The next ID in `mailbox` for a put at `now_secs`.
    pub(super) fn next(&self, mailbox: &MailboxId, now_secs: u64) -> Seq {
        let mut inner = self.lock();
        let minute = (now_secs / 60).max(inner.minute);
        let base = first_of(minute);
        if minute > inner.minute {
            inner.minute = minute;
            // A mailbox whose last ID is below this minute's first gets
            // `base` next whether or not it is remembered.
            inner.last.retain(|_, last| *last >= base);
        }
        let floor = *inner
            .floor
            .get_or_insert(first_of(minute.saturating_add(1)));
        let base = base.max(floor);
        let id = inner
            .last
            .get(mailbox)
            .map_or(base, |last| last.saturating_add(1).max(base));
        inner.last.insert(*mailbox, id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(n: u8) -> MailboxId {
        MailboxId::from_bytes([n; 32])
    }

    #[test]
    fn ids_count_per_mailbox_within_a_minute_and_never_repeat() {
        let ids = BlobIds::default();
        let t = 1_000 * 60;
        // The run's first minute starts at the next minute's IDs.
        let a1 = ids.next(&mailbox(1), t);
        assert_eq!(a1, first_of(1_001));
        let b1 = ids.next(&mailbox(2), t + 30);
        assert_eq!(b1, a1, "another mailbox's puts do not move mine");
        assert_eq!(ids.next(&mailbox(1), t + 59), a1 + 1);
        // Next minutes: per mailbox, still increasing.
        let a3 = ids.next(&mailbox(1), t + 60);
        assert_eq!(a3, a1 + 2, "the floor minute's IDs go on");
        let a4 = ids.next(&mailbox(1), t + 125);
        assert_eq!(a4, first_of(1_002));
        assert_eq!(ids.next(&mailbox(2), t + 126), first_of(1_002));
        // The clock going back does not take IDs back.
        assert_eq!(ids.next(&mailbox(1), t), a4 + 1);
        assert_eq!(ids.next(&mailbox(3), t), first_of(1_002));
    }

    #[test]
    fn ids_continue_after_those_found_at_open() {
        let ids = BlobIds::default();
        ids.seen(&mailbox(1), first_of(5_000) + 7);
        assert_eq!(ids.next(&mailbox(1), 4_000 * 60), first_of(5_000) + 8);
        assert_eq!(ids.next(&mailbox(2), 4_000 * 60), first_of(4_001));
    }
}
