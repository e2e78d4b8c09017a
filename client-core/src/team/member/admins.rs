//! The team's admins (DESIGN §6 "Admins"): who the roster names admin,
//! what an admin's device holds and hands to a new admin's devices, and
//! the admin log's reads and appends.

use ed25519_dalek::SigningKey;
use sotto_proto::client::{AdminGrant, AdminInvite, AdminLogEntry};
use zeroize::Zeroize as _;

use super::{Membership, TeamError, corrupt};
use crate::RelayConnection;
use crate::team::directory::VerifiedRoster;
use crate::team::{AdminLog, AdminLogLine, sign_log_entry};

/// The most log entries read (a log longer than this shows its oldest
/// ones only; at one entry per admin action that is years of a team).
const MAX_LOG_ENTRIES: u64 = 100_000;

/// Log slots read per round trip.
const LOG_READ_BATCH: u64 = 32;

impl Membership {
    /// The team's admins as the newest roster named them. On an admin's
    /// device of a team whose roster predates several admins: this member.
    pub fn admins(&self) -> Vec<String> {
        if !self.team_admins.is_empty() {
            return self.team_admins.clone();
        }
        if let Some(admin) = &self.team_admin {
            return vec![admin.clone()];
        }
        if self.is_admin() {
            return vec![self.handle.clone()];
        }
        Vec::new()
    }

    /// Follows the admins a verified roster names. A device of a member
    /// the roster no longer names admin deletes the admin secrets it holds
    /// (an honest device steps down at once; what a dishonest former admin
    /// kept is THREAT_MODEL's "former admin").
    pub(super) fn follow_admins(&mut self, roster: &VerifiedRoster) {
        let admins = roster.admins();
        if roster.version == 0 || admins.is_empty() {
            return;
        }
        if self.is_admin() && !admins.contains(&self.handle) {
            self.drop_admin_secrets();
            self.notice(
                "you are no longer a team admin: this device deleted the team key and the relay admin credential".into(),
            );
        }
        self.team_admins = admins;
    }

    fn drop_admin_secrets(&mut self) {
        if let Some(seed) = &mut self.team_seed {
            seed.zeroize();
        }
        if let Some(seed) = &mut self.relay_admin_seed {
            seed.zeroize();
        }
        self.team_seed = None;
        self.relay_admin_seed = None;
        self.invites.clear();
        self.registrations.clear();
        self.log_next = 0;
    }

    /// Admin: what a new admin's devices need — `T`, the relay admin
    /// credential, and the relay registrations recorded per member.
    pub fn admin_grant(&self) -> Result<AdminGrant, TeamError> {
        let team_seed = self.team_seed.ok_or(TeamError::NotAdmin)?;
        let relay_admin_seed = self.relay_admin_seed.ok_or(TeamError::NotAdmin)?;
        Ok(AdminGrant {
            team_seed: team_seed.to_vec().into(),
            relay_admin_seed: relay_admin_seed.to_vec().into(),
            invites: self
                .invites
                .iter()
                .chain(
                    self.registrations
                        .iter()
                        .flat_map(|(handle, hashes)| hashes.iter().map(move |h| (handle, h))),
                )
                .map(|(handle, hash)| AdminInvite {
                    handle: handle.clone(),
                    registration_token_hash: hash.to_vec().into(),
                })
                .collect(),
        })
    }

    /// Takes an admin grant from `sender`, if the newest roster (read
    /// just before) names both `sender` and me admin and the grant's team
    /// key is this team's `T`. Returns whether this device became an
    /// admin device.
    pub fn apply_admin_grant(
        &mut self,
        sender: &str,
        grant: &AdminGrant,
    ) -> Result<bool, TeamError> {
        let admins = self.admins();
        if !admins.iter().any(|a| a == sender) || !admins.contains(&self.handle) {
            return Ok(false);
        }
        let key32 = |bytes: &[u8], what: &str| {
            <[u8; 32]>::try_from(bytes).map_err(|_| corrupt(format!("admin grant: {what}")))
        };
        let team_seed = key32(&grant.team_seed, "team key")?;
        let relay_admin_seed = key32(&grant.relay_admin_seed, "relay admin key")?;
        if SigningKey::from_bytes(&team_seed)
            .verifying_key()
            .as_bytes()
            != &self.team_key
        {
            return Err(corrupt("admin grant: the key of another team"));
        }
        self.team_seed = Some(team_seed);
        self.relay_admin_seed = Some(relay_admin_seed);
        for invite in &grant.invites {
            if let Ok(hash) = <[u8; 32]>::try_from(invite.registration_token_hash.as_ref()) {
                if self.invites.contains_key(&invite.handle) {
                    self.record_registration(&invite.handle, hash);
                } else {
                    self.invites.insert(invite.handle.clone(), hash);
                }
            }
        }
        Ok(true)
    }

    /// Whether `key` is one of `handle`'s user keys as this device knows
    /// them (mine: my chain; another member's: the chain last verified).
    fn is_user_key_of(&self, handle: &str, key: &[u8; 32]) -> bool {
        if handle == self.handle {
            return self.user_chain().contains(key);
        }
        self.known
            .get(handle)
            .is_some_and(|known| known.chain.contains(key))
    }

    /// Admin: appends `action` on `subject` to the admin log, signed by my
    /// user key; returns its index. Takes the first free slot (another
    /// admin who took it first moves this entry to the next one).
    pub async fn append_log(
        &mut self,
        conn: &RelayConnection,
        at: u64,
        action: &str,
        subject: &str,
        registration_token_hash: Option<[u8; 32]>,
    ) -> Result<u64, TeamError> {
        let log = AdminLog::new(&self.team_secrets()?);
        let user_key = SigningKey::from_bytes(&self.user_seed);
        let mut index = first_free(conn, &log, self.log_next).await?;
        loop {
            let slot = log.slot(index);
            let entry = AdminLogEntry {
                at,
                actor: self.handle.clone(),
                action: action.to_owned(),
                subject: subject.to_owned(),
                registration_token_hash: registration_token_hash
                    .map(|h| h.to_vec())
                    .unwrap_or_default()
                    .into(),
                index,
            };
            let value = log.seal(&slot, &sign_log_entry(&user_key, &entry))?;
            match conn
                .slot_put(&slot, 1, value.into_bytes(), &log.owner())
                .await
            {
                Ok(()) => {
                    self.log_next = index + 1;
                    return Ok(index);
                }
                // Taken meanwhile by another admin: the next one.
                Err(_) if conn.slot_get(&slot).await?.is_some() && index < MAX_LOG_ENTRIES => {
                    index += 1;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Admin: reads the whole admin log, oldest first; each entry verified
    /// or refused with the reason.
    pub async fn read_log(
        &mut self,
        conn: &RelayConnection,
    ) -> Result<Vec<AdminLogLine>, TeamError> {
        let log = AdminLog::new(&self.team_secrets()?);
        let mut lines = Vec::new();
        let mut index = 0;
        // Pipelined batches: one round trip per batch, not per entry.
        'read: while index < MAX_LOG_ENTRIES {
            let batch: Vec<u64> = (index..(index + LOG_READ_BATCH).min(MAX_LOG_ENTRIES)).collect();
            let slots: Vec<_> = batch.iter().map(|i| log.slot(*i)).collect();
            let values =
                futures::future::join_all(slots.iter().map(|slot| conn.slot_get(slot))).await;
            for (i, value) in batch.into_iter().zip(values) {
                let Some((_, value)) = value? else {
                    break 'read;
                };
                lines.push(log.open(i, &value, |actor, key| self.is_user_key_of(actor, key)));
                index = i + 1;
            }
        }
        self.log_next = self.log_next.max(index);
        Ok(lines)
    }

    /// Admin: writes `value` as the admin log's next entry as it stands
    /// (what a relay or a member who altered a slot would leave there),
    /// for tests of what `read_log` refuses.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub async fn write_raw_log_entry(
        &mut self,
        conn: &RelayConnection,
        value: &[u8],
    ) -> Result<u64, TeamError> {
        let log = AdminLog::new(&self.team_secrets()?);
        let index = first_free(conn, &log, self.log_next).await?;
        conn.slot_put(&log.slot(index), 1, value.to_vec().into(), &log.owner())
            .await?;
        self.log_next = index + 1;
        Ok(index)
    }

    /// The admin log's keys, for tests that seal entries of their own.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn admin_log_keys(&self) -> Result<AdminLog, TeamError> {
        Ok(AdminLog::new(&self.team_secrets()?))
    }
}

/// The first free log slot at or after `from` (every slot before a used
/// one is used: entries are written in order). Doubling, then bisection:
/// a few round trips however long the log is.
async fn first_free(conn: &RelayConnection, log: &AdminLog, from: u64) -> Result<u64, TeamError> {
    let used = |index: u64| async move {
        Ok::<bool, TeamError>(conn.slot_get(&log.slot(index)).await?.is_some())
    };
    let mut from = from;
    if !used(from).await? {
        // A hint past the end (another device's) is not trusted blindly.
        if from == 0 || used(from - 1).await? {
            return Ok(from);
        }
        from = 0;
        if !used(0).await? {
            return Ok(0);
        }
    }
    let mut low = from; // used
    let mut step = 1;
    let mut high = from + step;
    while used(high).await? {
        low = high;
        step *= 2;
        high = low.saturating_add(step).min(MAX_LOG_ENTRIES);
        if low >= MAX_LOG_ENTRIES {
            return Err(corrupt("the admin log is full"));
        }
    }
    // low used, high free.
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if used(middle).await? {
            low = middle;
        } else {
            high = middle;
        }
    }
    Ok(high)
}
