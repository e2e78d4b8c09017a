//! Rotating this device's request inbox (DESIGN §4). Its key is in the
//! device card the directory publishes, so whoever read the directory can
//! compute the mailbox first contacts are put in, every epoch, for as long
//! as the key lives. It rotates on a schedule and whenever the team
//! directory key does (a revocation: the revoked member read the old
//! directory and cannot read the new one); the old key is still read for
//! a grace period, for first messages sent with the card seen before.

use super::super::engine::{Engine, EngineError};
use crate::InboxKey;

/// A request inbox key is replaced after this long (7 days).
pub const REQUEST_INBOX_ROTATE_SECS: u64 = 7 * 24 * 3600;
/// The replaced key is still read this long after (7 days): a member who
/// resolved the old card then sends with the new one at their next send.
pub const REQUEST_INBOX_GRACE_SECS: u64 = 7 * 24 * 3600;

impl Engine {
    /// Whether my request inbox key is due for rotation at `now_secs`.
    pub fn request_inbox_due(&self, now_secs: u64) -> bool {
        now_secs
            >= self
                .device
                .request_inbox_since
                .saturating_add(REQUEST_INBOX_ROTATE_SECS)
    }

    /// A fresh request inbox key from `now_secs` on (my card changes: the
    /// team layer publishes it); the old one is still read for
    /// [`REQUEST_INBOX_GRACE_SECS`].
    pub fn rotate_request_inbox(&mut self, now_secs: u64) -> Result<(), EngineError> {
        self.device
            .rotate_request_inbox(now_secs, REQUEST_INBOX_GRACE_SECS);
        self.device.save(self.store.as_ref())?;
        self.store.flush()?;
        Ok(())
    }

    /// The request inbox keys read at `now_secs`.
    pub(crate) fn request_inbox_keys(&self, now_secs: u64) -> Vec<&InboxKey> {
        self.device.request_inboxes(now_secs)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use super::*;
    use crate::{EPOCH_SECS, Epoch, MemoryStore};

    #[test]
    fn a_rotated_request_inbox_is_still_read_for_the_grace_period_only() {
        let store: Arc<dyn crate::Store> = Arc::new(MemoryStore::new().unwrap());
        let start = 1_000_000;
        let mut engine = Engine::create(store.clone(), "ann", start).unwrap();
        assert!(!engine.request_inbox_due(start));
        let due = start + REQUEST_INBOX_ROTATE_SECS;
        assert!(engine.request_inbox_due(due));
        let old = engine.own_card().inbox_key;
        let blinded = |engine: &Engine, now: u64| -> Vec<_> {
            let epoch = Epoch::from_unix_secs(now, EPOCH_SECS);
            engine
                .request_inbox_keys(now)
                .iter()
                .map(|key| key.blind(epoch).mailbox_id())
                .collect()
        };
        let old_mailbox = blinded(&engine, due)[0];

        engine.rotate_request_inbox(due).unwrap();
        assert_ne!(engine.own_card().inbox_key, old, "the card names a new key");
        assert!(!engine.request_inbox_due(due));
        let during = blinded(&engine, due);
        assert_eq!(during.len(), 2);
        assert!(during.contains(&old_mailbox), "the old inbox is still read");
        // The rotation survives a restart.
        let reopened = Engine::open(store).unwrap().unwrap();
        assert_eq!(reopened.own_card().inbox_key, engine.own_card().inbox_key);
        assert_eq!(blinded(&reopened, due).len(), 2);
        let after = due + REQUEST_INBOX_GRACE_SECS;
        assert_eq!(blinded(&reopened, after).len(), 1, "grace over");
        assert!(engine.request_inbox_due(after));
    }
}
