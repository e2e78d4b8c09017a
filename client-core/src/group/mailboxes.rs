//! The group mailboxes: which to read per epoch (with the grace period
//! of the previous generation) and the read cursor of each.

use sotto_proto::MailboxId;

use super::{GRACE_EPOCHS, GroupId};
use crate::engine::{Engine, EngineError};
use crate::{BlindedInbox, Epoch, Tree};

impl Engine {
    /// The group inboxes to read for the epochs `from..=to`: each group's
    /// current generation, and the previous one for a grace period.
    pub(crate) fn group_inboxes(&self, from: Epoch, to: Epoch) -> Vec<BlindedInbox> {
        let mut map = self
            .group_mailboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only the latest list's mailboxes are looked up (the map stays small
        // in a long `listen`).
        map.clear();
        let mut inboxes = Vec::new();
        for group in self.groups.values().filter(|g| !g.left) {
            let previous = group
                .previous
                .as_ref()
                .filter(|_| to.get() <= group.current.since_epoch + GRACE_EPOCHS);
            for generation in std::iter::once(&group.current).chain(previous) {
                let inbox = generation.inbox();
                for epoch in Epoch::range(from, to) {
                    let blinded = inbox.blind(epoch);
                    map.insert(blinded.mailbox_id(), (group.id, generation.number));
                    inboxes.push(blinded);
                }
            }
        }
        inboxes
    }

    /// Whether a group's secret changed since the last call: its new
    /// mailboxes are not in the inbox list handed out before.
    pub fn take_groups_changed(&mut self) -> bool {
        std::mem::take(&mut self.groups_changed)
    }

    /// Whether `mailbox` is a group mailbox (never acked: read with a
    /// cursor).
    pub fn is_group_mailbox(&self, mailbox: &MailboxId) -> bool {
        self.group_of(mailbox).is_some()
    }

    pub(super) fn group_of(&self, mailbox: &MailboxId) -> Option<(GroupId, u64)> {
        self.group_mailboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(mailbox)
            .copied()
    }

    /// The relay seq up to which a group mailbox was read.
    pub fn group_cursor(&self, mailbox: &MailboxId) -> Result<u64, EngineError> {
        Ok(crate::engine::be64_or_zero(
            self.store.get(Tree::Cursors, mailbox.as_bytes())?,
        ))
    }

    /// Records that a group mailbox was read up to `seq` (applied, not
    /// flushed).
    pub fn set_group_cursor(&self, mailbox: &MailboxId, seq: u64) -> Result<(), EngineError> {
        if seq > self.group_cursor(mailbox)? {
            self.store
                .put(Tree::Cursors, mailbox.as_bytes(), &seq.to_be_bytes())?;
        }
        Ok(())
    }

    /// The group's mailbox at `epoch` under its current generation, as a
    /// sender computes it (for tests that check what a removed member can
    /// compute).
    pub fn group_mailbox(&self, group: &str, epoch: Epoch) -> Result<MailboxId, EngineError> {
        let info = self.find_group(group)?;
        let group = self.group_by_hex(&info.id)?;
        Ok(group.current.inbox().public().mailbox(epoch))
    }
}
