//! The group commands: create, add, remove, leave, send, list, history.

use super::{App, AppError, Sent};
use crate::engine::Message;

impl App {
    /// Creates a group named `name` with me as its admin and `handles` as
    /// members (resolved in the directory); its state goes to each of them
    /// over Olm. Queued if the relay is down.
    pub async fn group_create(
        &mut self,
        name: &str,
        handles: &[String],
        rotation: crate::Rotation,
    ) -> Result<crate::GroupInfo, AppError> {
        for handle in handles {
            self.ensure_contact(handle).await?;
        }
        let info =
            self.client
                .engine_mut()
                .create_group(name, handles, rotation, (self.clock)())?;
        self.deliver_or_queue().await?;
        Ok(info)
    }

    /// Admin of the group: whether only admins may set its
    /// disappearing-message timer (members' devices ignore anyone else's).
    pub async fn group_set_timer_admins_only(
        &mut self,
        group: &str,
        on: bool,
    ) -> Result<crate::GroupInfo, AppError> {
        self.resolve_group_members(group).await?;
        let info =
            self.client
                .engine_mut()
                .set_group_timer_admins_only(group, on, (self.clock)())?;
        self.deliver_or_queue().await?;
        Ok(info)
    }

    /// Admin of the group: adds `handles`; they see only what is sent from
    /// now on.
    pub async fn group_add(
        &mut self,
        group: &str,
        handles: &[String],
    ) -> Result<crate::GroupInfo, AppError> {
        for handle in handles {
            self.ensure_contact(handle).await?;
        }
        self.resolve_group_members(group).await?;
        let info = self
            .client
            .engine_mut()
            .add_group_members(group, handles, (self.clock)())?;
        self.deliver_or_queue().await?;
        Ok(info)
    }

    /// Admin of the group: removes `handles`; the group secret and every
    /// member's Megolm session rotate, so they can neither locate nor read
    /// anything sent after this.
    pub async fn group_remove(
        &mut self,
        group: &str,
        handles: &[String],
    ) -> Result<crate::GroupInfo, AppError> {
        self.resolve_group_members(group).await?;
        let info = self
            .client
            .engine_mut()
            .remove_group_members(group, handles, (self.clock)())?;
        self.deliver_or_queue().await?;
        Ok(info)
    }

    /// Leaves a group I do not administer: this device stops at once, and
    /// the admin's device removes me when it next syncs.
    pub async fn group_leave(&mut self, group: &str) -> Result<crate::GroupInfo, AppError> {
        let info = self
            .client
            .engine_mut()
            .leave_group(group, (self.clock)())?;
        self.deliver_or_queue().await?;
        Ok(info)
    }

    /// Sends `text` to a group: one put, whatever the group's size (plus,
    /// when my Megolm session is new, its key to each member over Olm).
    pub async fn group_send(&mut self, group: &str, text: &str) -> Result<Sent, AppError> {
        self.group_send_reply(group, text, None).await
    }

    /// [`App::group_send`], as a reply to the message `reply_to` of the
    /// group when set.
    pub async fn group_send_reply(
        &mut self,
        group: &str,
        text: &str,
        reply_to: Option<&crate::MessageId>,
    ) -> Result<Sent, AppError> {
        self.require_approved()?;
        self.resolve_group_members(group).await?;
        let now = (self.clock)();
        let engine = self.client.engine_mut();
        let id = match reply_to {
            Some(reply_to) => engine.queue_group_reply(group, text, reply_to, now)?,
            None => engine.queue_group_text(group, text, now)?,
        };
        let delivered = self.deliver_or_queue().await?;
        Ok(Sent { id, delivered })
    }

    /// My groups.
    pub fn groups(&self) -> Vec<crate::GroupInfo> {
        self.client.engine().groups()
    }

    /// The disappearing-message timer of `group` (0: off).
    pub fn group_timer(&self, group: &str) -> Result<u64, AppError> {
        Ok(self.client.engine().group_timer(group)?)
    }

    /// A group's local history.
    pub fn group_history(&self, group: &str) -> Result<Vec<Message>, AppError> {
        Ok(self.client.engine().group_history(group)?)
    }

    /// Makes every member of `group` a contact, as far as the directory
    /// allows (an invited member who has not joined yet is skipped: they
    /// ask for the session key when they see a message).
    pub(crate) async fn resolve_group_members(&mut self, group: &str) -> Result<(), AppError> {
        let info = self.client.engine().find_group(group)?;
        let missing: Vec<String> = info
            .members
            .iter()
            .filter(|m| {
                **m != self.membership.handle && self.client.engine().contact_card(m).is_none()
            })
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let conn = match self.client.connect().await {
            Ok(conn) => conn,
            Err(error) => {
                // Offline: send with the contacts I have.
                let error = AppError::from(error);
                return if error.is_network() {
                    Ok(())
                } else {
                    Err(error)
                };
            }
        };
        self.add_contacts(conn, &missing).await
    }
}
