//! Messaging by handle: make sure of a contact, send, sync, listen,
//! read the history.

use super::{App, AppError, Sent};
use crate::client::{Cycle, SyncReport};
use crate::engine::{Message, MessageId};
use crate::net::RelayConnection;
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
    ///
    /// The whole command uses one connection (one access token): the
    /// roster, the member's device list and the put all travel on it.
    pub async fn send(&mut self, handle: &str, text: &str) -> Result<Sent, AppError> {
        self.send_reply(handle, text, None).await
    }

    /// [`App::send`], as a reply to the message `reply_to` of this
    /// conversation when set.
    pub async fn send_reply(
        &mut self,
        handle: &str,
        text: &str,
        reply_to: Option<&MessageId>,
    ) -> Result<Sent, AppError> {
        self.require_approved()?;
        if handle == self.membership.handle {
            return Err(AppError::Myself);
        }
        let known = self.client.engine().contact_card(handle).is_some();
        let conn = match self.client.connect().await.map_err(AppError::from) {
            Ok(conn) => Some(conn),
            // Offline, a known contact's message waits in the outbox.
            Err(error) if known && error.is_network() => None,
            Err(error) => return Err(error),
        };
        let outcome = self
            .send_on(conn.as_ref(), known, handle, text, reply_to)
            .await;
        if let Some(conn) = conn {
            conn.close().await;
        }
        outcome
    }

    /// [`App::send`] on `conn` (`None`: the relay could not be reached).
    async fn send_on(
        &mut self,
        conn: Option<&RelayConnection>,
        known: bool,
        handle: &str,
        text: &str,
        reply_to: Option<&MessageId>,
    ) -> Result<Sent, AppError> {
        if let (Some(conn), false) = (conn, known) {
            let added = self
                .membership
                .add_member_contact(conn, self.client.engine_mut(), handle)
                .await;
            added?;
            self.membership.save(self.store.as_ref())?;
        }
        // The roster decides who is in the team: a removed member may not
        // send, and nobody sends to one. Offline, the roster last seen
        // stands (the relay refuses a revoked member's device anyway).
        let reachable = match conn {
            None => false,
            // A new contact's device list was read just now.
            Some(conn) => match self.roster_check(conn, handle, known).await {
                Err(error) if error.is_network() => false,
                other => {
                    other?;
                    true
                }
            },
        };
        let now = (self.clock)();
        let id = match reply_to {
            Some(reply_to) => self
                .client
                .engine_mut()
                .queue_reply(handle, text, reply_to, now)?,
            None => self.client.engine_mut().queue_text(handle, text, now)?,
        };
        let delivered = match conn {
            Some(conn) if reachable => match self.client.deliver_on(conn).await {
                Ok(_) => true,
                Err(error) => {
                    let error = AppError::from(error);
                    if !error.is_network() {
                        return Err(error);
                    }
                    false
                }
            },
            // Just failed to reach the relay: do not wait for it twice.
            _ => false,
        };
        Ok(Sent { id, delivered })
    }

    /// Reads the roster on `conn` and checks that both ends are members;
    /// with `refresh`, also re-reads `handle`'s device list.
    pub(super) async fn roster_check(
        &mut self,
        conn: &RelayConnection,
        handle: &str,
        refresh: bool,
    ) -> Result<(), AppError> {
        let roster = self.membership.roster(conn).await?;
        self.membership.save(self.store.as_ref())?;
        if !roster.handles.contains(&self.membership.handle) {
            return Err(TeamError::Revoked.into());
        }
        if !roster.handles.iter().any(|h| h == handle) {
            if roster.version > 0 && self.client.engine().contact_card(handle).is_some() {
                let departed = [handle.to_owned()];
                self.client
                    .engine_mut()
                    .members_revoked(&departed, (self.clock)())?;
            }
            self.client.engine_mut().remove_contact(handle)?;
            return Err(TeamError::NotAMember(handle.to_owned()).into());
        }
        if !refresh {
            return Ok(());
        }
        // The member's current devices, as their user key signed them: a
        // forged or rolled-back list is refused here, before anything is
        // encrypted to it.
        let refreshed = self
            .membership
            .refresh_member(conn, self.client.engine_mut(), handle)
            .await;
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
            // Uploads an earlier run left unfinished go on, so their
            // messages leave with this sync (issue 21).
            if let Err(error) = self.resume_uploads().await {
                tracing::warn!("an interrupted upload could not go on yet: {error}");
            }
        }
        let report = self.client.sync().await?;
        self.apply_team(awaiting).await?;
        // Disappearing messages whose time ran out go, new ones included.
        self.purge_expired()?;
        Ok(report)
    }

    /// Applies what the messages just taken brought for the team: my own
    /// member state, a new directory key (`awaiting`: this device waited
    /// for approval before them).
    async fn apply_team(&mut self, awaiting: bool) -> Result<(), AppError> {
        self.client
            .engine()
            .prune_link_secrets(Self::now_secs(&self.clock))?;
        let applied = self.apply_member_state()?;
        self.file_account_reports().await?;
        self.apply_dir_key().await?;
        self.apply_admin_grants().await?;
        if !awaiting {
            self.rotate_request_inbox_if_due().await?;
        }
        if applied && awaiting {
            // Just approved: find the team's members now, so this device
            // can write to them at once.
            self.refresh_contacts().await?;
        }
        Ok(())
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
    ///
    /// The team is re-read before every cycle of the client's listen (at
    /// every epoch rollover, and whenever a team message — a directory
    /// key, a member's key succession, my own member state — arrives): the
    /// roster, the directory key and every member's device list. A member
    /// revoked meanwhile is dropped from the contacts, so their messages
    /// are refused (unknown sender) and their key requests go unanswered,
    /// without a restart.
    pub async fn listen(
        &mut self,
        mut on_message: impl FnMut(&Message),
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), AppError> {
        tokio::pin!(stop);
        loop {
            let awaiting = self.membership.awaiting_approval().is_some();
            if !awaiting {
                self.refresh_contacts().await?;
            }
            let cycle = self
                .client
                .listen_cycle(&mut on_message, stop.as_mut())
                .await;
            // What the cycle took is stored: apply its team part even if
            // the connection failed.
            let applied = self.apply_team(awaiting).await;
            let cycle = cycle?;
            applied?;
            if cycle == Cycle::Stopped {
                return Ok(());
            }
        }
    }

    /// Local history with `handle`.
    pub fn history(&self, handle: &str) -> Result<Vec<Message>, AppError> {
        Ok(self.client.engine().history(handle)?)
    }

    /// Marks what `handle` sent read; the read receipt (if read receipts
    /// are on) goes with the next delivery ([`crate::Client::mark_read`]).
    pub fn mark_read(&mut self, handle: &str) -> Result<usize, AppError> {
        Ok(self.client.mark_read(handle)?)
    }

    /// The last `limit` messages with `handle` before history position
    /// `before` (`None`: the newest), oldest first, with their positions:
    /// reads only the page.
    pub fn history_page(
        &self,
        handle: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>, AppError> {
        Ok(self.client.engine().history_page(handle, before, limit)?)
    }

    /// A page of a group's history, as [`App::history_page`].
    pub fn group_history_page(
        &self,
        group: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>, AppError> {
        Ok(self
            .client
            .engine()
            .group_history_page(group, before, limit)?)
    }

    /// Marks everything in `group` read (here only: groups get no read
    /// receipts).
    pub fn mark_group_read(&mut self, group: &str) -> Result<usize, AppError> {
        Ok(self.client.engine_mut().mark_group_read(group)?)
    }

    /// My conversations for a side list: every contact, then every group,
    /// each with how many messages I have not been shown (kept across
    /// restarts: the read marks are in the store) and its newest message.
    /// Reads only past each read mark and one message per conversation.
    pub fn conversations(&self) -> Result<Vec<Conversation>, AppError> {
        let engine = self.client.engine();
        let mut list = Vec::new();
        for handle in engine.contacts() {
            list.push(Conversation {
                unread: engine.unread(&handle)?,
                last: engine.history_page(&handle, None, 1)?.pop().map(|(_, m)| m),
                name: handle,
                group: None,
            });
        }
        for group in engine.groups() {
            list.push(Conversation {
                unread: engine.group_unread(&group.id)?,
                last: engine
                    .group_history_page(&group.id, None, 1)?
                    .pop()
                    .map(|(_, m)| m),
                name: group.name,
                group: Some(group.id),
            });
        }
        Ok(list)
    }

    /// Whether this profile sends read receipts (default on).
    pub fn read_receipts(&self) -> Result<bool, AppError> {
        Ok(self.client.engine().read_receipts()?)
    }

    /// Turns this profile's read receipts on or off.
    pub fn set_read_receipts(&mut self, on: bool) -> Result<(), AppError> {
        Ok(self.client.engine_mut().set_read_receipts(on)?)
    }

    /// Reacts to, edits or deletes the message with hex ID `id` (from
    /// the history), 1:1 or in a group, here and on every device of its
    /// conversation's members, mine too. Returns the message as it is now,
    /// and whether the change reached the relay (else it stays queued).
    pub async fn change_message(
        &mut self,
        id: &str,
        change: crate::Change,
    ) -> Result<(Message, bool), AppError> {
        self.require_approved()?;
        let id = self.client.engine().resolve_message_id(id)?;
        if let Some(Some(group)) = self.client.engine().message_group(&id)? {
            self.resolve_group_members(&group).await?;
        }
        let message = self
            .client
            .engine_mut()
            .change_message(&id, change, (self.clock)())?;
        let delivered = self.deliver_or_queue().await?;
        Ok((message, delivered))
    }

    /// Sets the disappearing-message timer (seconds, 0: off) with member
    /// `with` or of `group`, for every device of the conversation.
    /// Returns whether it reached the relay (else it stays queued).
    pub async fn set_timer(
        &mut self,
        with: Option<&str>,
        group: Option<&str>,
        secs: u64,
    ) -> Result<bool, AppError> {
        self.require_approved()?;
        let now = (self.clock)();
        match (with, group) {
            (Some(handle), None) => {
                self.ensure_contact(handle).await?;
                self.client.engine_mut().set_timer(handle, secs, now)?;
            }
            (None, Some(group)) => {
                self.resolve_group_members(group).await?;
                self.client.engine_mut().set_group_timer(group, secs, now)?;
            }
            _ => {
                return Err(
                    crate::EngineError::GroupChange("name one member or one group".into()).into(),
                );
            }
        }
        self.deliver_or_queue().await
    }

    /// Deletes every message whose disappearing timer ran out, from the
    /// store. Returns how many.
    pub fn purge_expired(&mut self) -> Result<usize, AppError> {
        let now = (self.clock)();
        Ok(self.client.engine_mut().purge_expired(now)?)
    }

    /// The full ID of the message whose hex ID starts with `id`.
    pub fn resolve_message_id(&self, id: &str) -> Result<MessageId, AppError> {
        Ok(self.client.engine().resolve_message_id(id)?)
    }

    /// The history conversation `with` a member or of a `group` (neither:
    /// every conversation).
    fn scope(&self, with: Option<&str>, group: Option<&str>) -> Result<Option<String>, AppError> {
        Ok(match (with, group) {
            (Some(handle), _) => Some(handle.to_owned()),
            (None, Some(group)) => Some(self.client.engine().group_conversation_of(group)?),
            (None, None) => None,
        })
    }

    /// Searches the local history (see [`crate::Query`]): newest first, at
    /// most `limit` messages.
    pub fn search(
        &self,
        query: &str,
        with: Option<&str>,
        group: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Message>, AppError> {
        let scope = self.scope(with, group)?;
        Ok(self
            .client
            .engine()
            .search(&crate::Query::new(query), scope.as_deref(), limit)?)
    }

    /// The local history to export: one conversation, or all, from
    /// `since_ms` on, oldest first. Messages only; no key material.
    pub fn export(
        &self,
        with: Option<&str>,
        group: Option<&str>,
        since_ms: u64,
    ) -> Result<Vec<Message>, AppError> {
        let scope = self.scope(with, group)?;
        Ok(self
            .client
            .engine()
            .messages_since(scope.as_deref(), since_ms)?)
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

/// One conversation of [`App::conversations`].
#[derive(Clone, Debug)]
pub struct Conversation {
    /// The member's handle, or the group's name.
    pub name: String,
    /// For a group, its hex ID.
    pub group: Option<String>,
    /// Messages from others not shown yet.
    pub unread: usize,
    /// The newest message, if any.
    pub last: Option<Message>,
}
