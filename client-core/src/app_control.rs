//! What a process that owns the profile for long (`sotto daemon`, `sotto
//! listen`, `sotto chat`) needs beyond the command line's calls.

use crate::engine::{corrupt, split_status_record};
use crate::{App, AppError, MessageId, Status, Tree};

impl App {
    /// The delivery status of one of my messages, from its status record
    /// (a point read, not the history): `None` for an ID that is not one
    /// of my messages, or one from a home so old that its status lives in
    /// the history entry only.
    pub fn message_status(&mut self, id: &MessageId) -> Result<Option<Status>, AppError> {
        let engine = self.client().engine();
        let key = [b"out".as_slice(), id].concat();
        let Some(record) = engine.store.get(Tree::Seen, &key)? else {
            return Ok(None);
        };
        let (_, status) = split_status_record(&record).map_err(corrupt)?;
        Ok(status)
    }
}
