//! Messaging by handle: make sure of a contact, send, sync, listen,
//! read the history.

use super::{App, AppError, Sent};
use crate::client::SyncReport;
use crate::engine::Message;
use crate::team::TeamError;

impl App {
    /// Makes `handle` a contact, resolving and verifying their device in
    /// the directory, unless it already is one.
    pub async fn ensure_contact(&mut self, handle: &str) -> Result<(), AppError> {
        self.require_approved()?;
        if handle == self.membership.handle {
            return Err(AppError::Myself);
        }
        if self.client.engine().contact_card(handle).is_none() {
            let conn = self.client.connect().await?;
            let added = self
                .membership
                .add_member_contact(&conn, self.client.engine_mut(), handle)
                .await;
            conn.close().await;
            added?;
            self.membership.save(self.store.as_ref())?;
        }
        Ok(())
    }

    /// Sends `text` to `handle` (resolving them in the directory on first
    /// use). The message is durable locally before any network I/O: if the
    /// relay cannot be reached it stays queued ([`Sent::delivered`] is
    /// false) and the next sync or send delivers it. A first message to
    /// someone not yet a contact needs the relay, to look them up.
    pub async fn send(&mut self, handle: &str, text: &str) -> Result<Sent, AppError> {
        self.require_approved()?;
        self.ensure_contact(handle).await?;
        // The roster decides who is in the team: a removed member may not
        // send, and nobody sends to one. Offline, the roster last seen
        // stands (the relay refuses a revoked member's device anyway).
        let reachable = match self.roster_check(handle).await {
            Err(error) if error.is_network() => false,
            other => {
                other?;
                true
            }
        };
        let id = self
            .client
            .engine_mut()
            .queue_text(handle, text, (self.clock)())?;
        if !reachable {
            // Just failed to reach the relay: do not wait for it twice.
            return Ok(Sent {
                id,
                delivered: false,
            });
        }
        let delivered = match self.client.deliver().await {
            Ok(_) => true,
            Err(error) => {
                let error = AppError::from(error);
                if !error.is_network() {
                    return Err(error);
                }
                false
            }
        };
        Ok(Sent { id, delivered })
    }

    async fn roster_check(&mut self, handle: &str) -> Result<(), AppError> {
        let conn = self.client.connect().await?;
        let roster = self.membership.roster(&conn).await;
        conn.close().await;
        let roster = roster?;
        self.membership.save(self.store.as_ref())?;
        if !roster.handles.contains(&self.membership.handle) {
            return Err(TeamError::Revoked.into());
        }
        if !roster.handles.iter().any(|h| h == handle) {
            self.client.engine_mut().remove_contact(handle)?;
            return Err(TeamError::NotAMember(handle.to_owned()).into());
        }
        // The member's current devices, as their user key signed them: a
        // forged or rolled-back list is refused here, before anything is
        // encrypted to it.
        let conn = self.client.connect().await?;
        let refreshed = self
            .membership
            .refresh_member(&conn, self.client.engine_mut(), handle)
            .await;
        conn.close().await;
        self.membership.save(self.store.as_ref())?;
        if let Err(error) = refreshed {
            if self.membership.is_compromised(handle) {
                self.client.engine_mut().remove_contact(handle)?;
            }
            return Err(error.into());
        }
        Ok(())
    }

    /// Fetches everything pending; members no longer on the roster are
    /// dropped from the contacts first.
    pub async fn sync(&mut self) -> Result<SyncReport, AppError> {
        let awaiting = self.membership.awaiting_approval().is_some();
        if !awaiting {
            self.refresh_contacts().await?;
        }
        let report = self.client.sync().await?;
        self.client
            .engine()
            .prune_link_secrets(Self::now_secs(&self.clock))?;
        let applied = self.apply_member_state()?;
        self.apply_dir_key().await?;
        if applied && awaiting {
            // Just approved: find the team's members now, so this device
            // can write to them at once.
            self.refresh_contacts().await?;
        }
        Ok(report)
    }

    /// Notices for the user since the last call: a member's key changed, a
    /// directory entry was refused, a device of mine was removed.
    pub fn take_notices(&mut self) -> Result<Vec<String>, AppError> {
        let notices = self.membership.take_notices();
        if !notices.is_empty() {
            self.membership.save(self.store.as_ref())?;
        }
        Ok(notices)
    }

    /// Stays connected and hands each message to `on_message` until `stop`.
    pub async fn listen(
        &mut self,
        on_message: impl FnMut(&Message),
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), AppError> {
        self.refresh_contacts().await?;
        Ok(self.client.listen(on_message, stop).await?)
    }

    /// Local history with `handle`.
    pub fn history(&self, handle: &str) -> Result<Vec<Message>, AppError> {
        Ok(self.client.engine().history(handle)?)
    }

    /// Delivers the outbox; a network failure leaves it queued (false).
    pub(crate) async fn deliver_or_queue(&mut self) -> Result<bool, AppError> {
        match self.client.deliver().await {
            Ok(_) => Ok(true),
            Err(error) => {
                let error = AppError::from(error);
                if error.is_network() {
                    Ok(false)
                } else {
                    Err(error)
                }
            }
        }
    }
}
