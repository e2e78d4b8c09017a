//! The team's admins (DESIGN §6 "Admins"): name another admin, remove
//! one, list them, read the admin log; and the log entry every admin
//! action leaves.

use super::{App, AppError};
use crate::net::RelayConnection;
use crate::team::{AdminLogLine, TeamError};

impl App {
    /// The team's admins, as the roster names them.
    pub async fn admins(&mut self) -> Result<Vec<String>, AppError> {
        let conn = self.client.connect().await?;
        let roster = self.membership.roster(&conn).await;
        conn.close().await;
        let roster = roster?;
        self.membership.save(self.store.as_ref())?;
        Ok(roster.admins())
    }

    /// Admin: names `handle` (a joined member) admin. The roster, signed
    /// by `T`, lists them from now on, and every device of theirs gets
    /// `T`, the relay admin credential and the recorded relay accounts
    /// over Olm (applied at their next sync).
    pub async fn admin_add(&mut self, handle: &str) -> Result<(), AppError> {
        self.membership.team_secrets()?;
        self.catch_up_with_admins().await?;
        if handle == self.membership.handle {
            return Err(TeamError::AlreadyAdmin(handle.to_owned()).into());
        }
        // Their devices must be contacts to receive the grant.
        self.ensure_contact(handle).await?;
        let conn = self.client.connect().await?;
        let outcome = async {
            let roster = self.membership.roster(&conn).await?;
            if !roster.handles.iter().any(|h| h == handle) {
                return Err(TeamError::NotAMember(handle.to_owned()));
            }
            let mut admins = self.membership.admins();
            if admins.iter().any(|a| a == handle) {
                return Err(TeamError::AlreadyAdmin(handle.to_owned()));
            }
            admins.push(handle.to_owned());
            self.membership
                .publish_roster_with(&conn, &roster.handles, &admins)
                .await
        }
        .await;
        if let Err(error) = outcome {
            conn.close().await;
            return Err(error.into());
        }
        self.log_action(&conn, "admin-add", handle, None).await;
        conn.close().await;
        self.membership.save(self.store.as_ref())?;
        let grant = self.membership.admin_grant()?;
        self.client
            .engine_mut()
            .queue_admin_grant(handle, grant, (self.clock)())?;
        self.deliver_or_queue().await?;
        Ok(())
    }

    /// Admin: `handle` is no longer an admin (they stay a member). Their
    /// devices delete `T` and the relay admin credential when they read
    /// the new roster. The last admin cannot be removed.
    pub async fn admin_remove(&mut self, handle: &str) -> Result<(), AppError> {
        self.membership.team_secrets()?;
        self.catch_up_with_admins().await?;
        let conn = self.client.connect().await?;
        let outcome = async {
            let roster = self.membership.roster(&conn).await?;
            let admins = self.membership.admins();
            if !admins.iter().any(|a| a == handle) {
                return Err(TeamError::NotAnAdmin(handle.to_owned()));
            }
            if admins.len() == 1 {
                return Err(TeamError::LastAdmin(handle.to_owned()));
            }
            let remaining: Vec<String> = admins.into_iter().filter(|a| a != handle).collect();
            self.membership
                .publish_roster_with(&conn, &roster.handles, &remaining)
                .await
        }
        .await;
        if let Err(error) = outcome {
            conn.close().await;
            return Err(error.into());
        }
        self.log_action(&conn, "admin-remove", handle, None).await;
        if handle == self.membership.handle {
            // Stepping down: this device follows the roster at once.
            let _ = self.membership.roster(&conn).await;
        }
        conn.close().await;
        self.membership.save(self.store.as_ref())?;
        Ok(())
    }

    /// Admin: the admin log, newest first; every entry verified (decrypted
    /// under the admins' log key, signed by a user key of the admin it
    /// names, at its own index) or refused with the reason.
    pub async fn admin_log(&mut self) -> Result<Vec<AdminLogLine>, AppError> {
        self.membership.team_secrets()?;
        let conn = self.client.connect().await?;
        let outcome = async {
            // The admins' user keys as their entries stand now, so an
            // entry signed after a key succession verifies. (A device
            // whose member is no longer admin steps down here: it reads
            // nothing.)
            let roster = self.membership.roster(&conn).await?;
            self.membership.team_secrets()?;
            for admin in roster.admins() {
                if admin != self.membership.handle {
                    let _ = self
                        .membership
                        .refresh_member(&conn, self.client.engine_mut(), &admin)
                        .await;
                }
            }
            self.membership.read_log(&conn).await
        }
        .await;
        conn.close().await;
        let mut lines = outcome?;
        self.membership.save(self.store.as_ref())?;
        lines.reverse();
        Ok(lines)
    }

    /// Admin, before changing the team, when there are other admins: a
    /// sync first, so a directory key another admin's revocation rotated
    /// (and the roster under it) is taken before this device publishes a
    /// roster or rotates the key again. Without it, a device still on the
    /// old key would publish into the abandoned roster slot and hand out a
    /// second key of the same version. (Messages the sync brings are in
    /// the history, as after any sync.)
    pub(crate) async fn catch_up_with_admins(&mut self) -> Result<(), AppError> {
        if self.membership.is_admin() && self.membership.admins().len() > 1 {
            self.sync().await?;
        }
        Ok(())
    }

    /// Appends an admin action to the admin log on `conn`. The action was
    /// done already: a log that cannot be written is a notice (with what
    /// was not logged), not a failure of the action.
    pub(crate) async fn log_action(
        &mut self,
        conn: &RelayConnection,
        action: &str,
        subject: &str,
        registration_token_hash: Option<[u8; 32]>,
    ) {
        let now = Self::now_secs(&self.clock);
        if let Err(error) = self
            .membership
            .append_log(conn, now, action, subject, registration_token_hash)
            .await
        {
            self.membership.push_notice(format!(
                "the admin log could not record \"{action} {subject}\": {error}"
            ));
        }
    }

    /// As [`App::log_action`] on a connection of its own.
    pub(crate) async fn log_action_now(
        &mut self,
        action: &str,
        subject: &str,
        registration_token_hash: Option<[u8; 32]>,
    ) -> Result<(), AppError> {
        let conn = self.client.connect().await?;
        self.log_action(&conn, action, subject, registration_token_hash)
            .await;
        conn.close().await;
        self.membership.save(self.store.as_ref())?;
        Ok(())
    }

    /// Admin: files the relay registrations the admin log records for
    /// `handle` (invites and accounts other admins recorded), so a revoke
    /// ends them all.
    pub(crate) async fn registrations_from_log(
        &mut self,
        conn: &RelayConnection,
        handle: &str,
    ) -> Result<(), AppError> {
        for line in self.membership.read_log(conn).await? {
            if let AdminLogLine::Valid(action) = line
                && action.subject == handle
                && let Some(hash) = action.registration_token_hash
            {
                self.membership.record_registration(handle, hash);
            }
        }
        Ok(())
    }

    /// Takes the admin grants received: this device becomes an admin
    /// device if the newest roster names the sender and me admin.
    pub(crate) async fn apply_admin_grants(&mut self) -> Result<(), AppError> {
        let grants = self.client.engine().take_admin_grants()?;
        if grants.is_empty() {
            return Ok(());
        }
        let conn = self.client.connect().await?;
        let roster = self.membership.roster(&conn).await;
        conn.close().await;
        roster?;
        for (sender, grant) in grants {
            match self.membership.apply_admin_grant(&sender, &grant) {
                Ok(true) => self.membership.push_notice(format!(
                    "{sender} made you a team admin: this device now holds the team key"
                )),
                Ok(false) => {}
                Err(error) => self
                    .membership
                    .push_notice(format!("an admin grant from {sender} was refused: {error}")),
            }
        }
        self.membership.save(self.store.as_ref())?;
        Ok(())
    }

    /// Writes `value` into the admin log's next slot as it stands (what a
    /// relay or a former admin who altered the log would leave), for tests.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub async fn write_raw_admin_log(&mut self, value: &[u8]) -> Result<u64, AppError> {
        self.write_raw_admin_log_n(value, 1).await
    }

    /// As [`App::write_raw_admin_log`], `copies` times on one connection;
    /// returns the first index.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub async fn write_raw_admin_log_n(
        &mut self,
        value: &[u8],
        copies: u32,
    ) -> Result<u64, AppError> {
        let conn = self.client.connect().await?;
        let mut first = None;
        for _ in 0..copies {
            match self.membership.write_raw_log_entry(&conn, value).await {
                Ok(index) => {
                    first.get_or_insert(index);
                }
                Err(error) => {
                    conn.close().await;
                    return Err(error.into());
                }
            }
        }
        conn.close().await;
        first.ok_or_else(|| TeamError::Corrupt("no copies written".into()).into())
    }

    /// This device's team membership, for tests that check what its keys
    /// can open.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn membership(&self) -> &crate::team::Membership {
        &self.membership
    }
}
