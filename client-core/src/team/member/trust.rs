//! What I accept of a member's directory entry ([`Trust`]): the entry must
//! chain to a user key I know or its successor, a device list never goes
//! back, and two successors of one key mark the member compromised.

use sotto_proto::client::Succession;
use sotto_proto::{Message as _, SlotId};

use super::{KnownUser, Membership, TeamError, Trust, corrupt};
use crate::team::directory::{Directory, VerifiedEntry, VerifiedRoster};
use crate::{Engine, RelayConnection};

impl Membership {
    /// Checks a verified entry against what I know of its member (DESIGN
    /// "Devices"): the first sight is taken; afterwards the user key may
    /// only move along signed successions, the device list only to a
    /// higher version, and a new user key without succession only with a
    /// new invite (the admin's `--replace`). Two successors of one key
    /// mark the member compromised until such a re-invite.
    pub fn check_known(
        &mut self,
        entry: &VerifiedEntry,
        announced: &[Succession],
    ) -> Result<Trust, TeamError> {
        let handle = entry.handle.clone();
        let first_sight = |entry: &VerifiedEntry| {
            let mut fresh = KnownUser {
                invite_key: entry.invite_key,
                chain: entry.chain.clone(),
                devices_version: entry.devices_version,
                ..KnownUser::default()
            };
            for pair in entry.chain.windows(2) {
                fresh.seen.insert(hex::encode(pair[0]), pair[1]);
            }
            fresh
        };
        let mut known = match self.known.get(&handle) {
            None => {
                self.known.insert(handle, first_sight(entry));
                return Ok(Trust::Same);
            }
            Some(known) => known.clone(),
        };
        if known.invite_key != entry.invite_key {
            // A re-invite: a new user key altogether.
            self.known.insert(handle.clone(), first_sight(entry));
            self.notice(format!(
                "{handle}'s key changed (the admin re-invited them): verify them again with `sotto verify {handle}`"
            ));
            return Ok(Trust::Replaced);
        }
        // Every succession seen, in entries or announced over Olm.
        let mut conflict = known.compromised;
        // Announcements count for the keys of this chain only: ones about
        // the keys of a member's earlier life (before a re-invite) are
        // history.
        let relevant = |old: &[u8; 32]| known.chain.contains(old) || entry.chain.contains(old);
        let announced: Vec<([u8; 32], [u8; 32])> = announced
            .iter()
            .filter_map(crate::team::verify_succession)
            .filter(|(old, _)| relevant(old))
            .collect();
        let links = entry
            .chain
            .windows(2)
            .map(|pair| (pair[0], pair[1]))
            .chain(announced);
        for (old, new) in links {
            match known.seen.get(&hex::encode(old)) {
                Some(seen) if *seen != new => conflict = true,
                Some(_) => {}
                None => {
                    known.seen.insert(hex::encode(old), new);
                }
            }
        }
        if conflict {
            known.compromised = true;
            self.known.insert(handle.clone(), known);
            self.notice(format!(
                "{handle}'s user key has two different successors: one of their devices may be compromised; sotto trusts neither until the admin re-invites {handle}"
            ));
            return Err(TeamError::UserKeyConflict(handle));
        }
        let trust = if entry.chain == known.chain {
            if entry.devices_version < known.devices_version {
                self.known.insert(handle.clone(), known);
                return Err(TeamError::Rollback(handle));
            }
            Trust::Same
        } else if entry.chain.starts_with(&known.chain) {
            let old = known.chain.last().copied().unwrap_or(entry.chain[0]);
            Trust::Succeeded { old }
        } else if known.chain.starts_with(&entry.chain) {
            // Signed by a key that was already succeeded: a removed
            // device's list, or a replay.
            self.known.insert(handle.clone(), known);
            return Err(TeamError::Rollback(handle));
        } else {
            self.known.insert(handle.clone(), known);
            return Err(TeamError::UnknownUserKey(handle));
        };
        known.chain = entry.chain.clone();
        known.devices_version = entry.devices_version;
        self.known.insert(handle, known);
        Ok(trust)
    }

    /// Resolves `handle` and makes its devices (as its user key signed
    /// them) the ones `engine` encrypts to. For my own handle: my other
    /// devices.
    pub async fn refresh_member(
        &mut self,
        conn: &RelayConnection,
        engine: &mut Engine,
        handle: &str,
    ) -> Result<(), TeamError> {
        let entry = self.resolve(conn, handle).await?;
        self.apply_entry(engine, entry)
    }

    /// As [`Membership::refresh_member`] for every member of `roster` at
    /// once: the entries are read in one pipelined batch (one round trip,
    /// not one per member), then checked and applied one by one. Returns
    /// each member's outcome.
    pub async fn refresh_members(
        &mut self,
        conn: &RelayConnection,
        engine: &mut Engine,
        roster: &VerifiedRoster,
    ) -> Result<Vec<(String, Result<(), TeamError>)>, TeamError> {
        let directory = self.directory()?;
        let slots: Vec<SlotId> = roster
            .handles
            .iter()
            .map(|h| directory.user_slot(h))
            .collect();
        let values = futures::future::join_all(slots.iter().map(|slot| conn.slot_get(slot))).await;
        let mut outcomes = Vec::new();
        for ((handle, slot), value) in roster.handles.iter().zip(&slots).zip(values) {
            let value = value?;
            // The entry this device last applied, unchanged: nothing to
            // verify again (a relay that serves an old version can only
            // withhold news, which it always could). Successions announced
            // over Olm are checked against the entry every time.
            let stamp = value
                .as_ref()
                .map(|(version, _)| format!("{}/{version}", hex::encode(slot.as_bytes())));
            let unchanged = stamp.is_some()
                && self.applied.get(handle) == stamp.as_ref()
                && (*handle == self.handle || engine.contact_card(handle).is_some())
                && engine
                    .announced_successions(handle)
                    .map_err(|e| corrupt(e.to_string()))?
                    .is_empty();
            if unchanged {
                outcomes.push((handle.clone(), Ok(())));
                continue;
            }
            let outcome = Self::verify_slot(&directory, handle, slot, value)
                .and_then(|entry| self.apply_entry(engine, entry));
            match (&outcome, stamp) {
                (Ok(()), Some(stamp)) => {
                    self.applied.insert(handle.clone(), stamp);
                }
                _ => {
                    self.applied.remove(handle);
                }
            }
            outcomes.push((handle.clone(), outcome));
        }
        Ok(outcomes)
    }

    /// A member entry read from `slot`, verified.
    pub(super) fn verify_slot(
        directory: &Directory,
        handle: &str,
        slot: &SlotId,
        value: Option<(u64, bytes::Bytes)>,
    ) -> Result<VerifiedEntry, TeamError> {
        let Some((_, value)) = value else {
            return Err(TeamError::NotJoined(handle.to_owned()));
        };
        let entry = directory.open_value(slot, &value)?;
        if entry.is_empty() {
            return Err(TeamError::NotJoined(handle.to_owned()));
        }
        Ok(directory.verify_entry(handle, &entry)?)
    }

    /// Checks a verified entry against what I know of its member and, if
    /// it passes, makes its devices the ones `engine` encrypts to.
    fn apply_entry(&mut self, engine: &mut Engine, entry: VerifiedEntry) -> Result<(), TeamError> {
        let handle = entry.handle.clone();
        let handle = handle.as_str();
        if handle == self.handle {
            return self.refresh_own(engine, entry);
        }
        let announced = engine
            .announced_successions(handle)
            .map_err(|e| corrupt(e.to_string()))?;
        let trust = self.check_known(&entry, &announced)?;
        let user_key = *entry.user_key.as_bytes();
        if let Trust::Succeeded { old } = trust {
            engine
                .carry_verification(handle, &old, &user_key)
                .map_err(|e| corrupt(e.to_string()))?;
        }
        let change = engine
            .set_devices(handle, Some(user_key), entry.devices)
            .map_err(|e| corrupt(e.to_string()))?;
        if !change.removed.is_empty() {
            engine
                .rotate_sessions_shared_with(handle)
                .map_err(|e| corrupt(e.to_string()))?;
        }
        Ok(())
    }

    /// A member's known state is compromised (two successors): stop
    /// encrypting to any of its devices.
    pub fn is_compromised(&self, handle: &str) -> bool {
        self.known.get(handle).is_some_and(|k| k.compromised)
    }

    /// My own entry, as published (by me or another device of mine).
    fn refresh_own(&mut self, engine: &mut Engine, entry: VerifiedEntry) -> Result<(), TeamError> {
        let mine = self.user_chain();
        let me = engine.own_card().identity_key;
        let listed = entry.devices.iter().any(|(c, _)| c.identity_key == me);
        if entry.chain == mine {
            if entry.devices_version >= self.entry_version {
                if !listed {
                    return Err(TeamError::DeviceRemoved);
                }
                self.entry_version = entry.devices_version;
                self.devices = entry
                    .devices
                    .iter()
                    .map(|(_, s)| s.encode_to_vec())
                    .collect();
            }
        } else if entry.chain.starts_with(&mine) {
            // Another device of mine moved to a new user key: it sends it
            // to me over Olm, unless I am the device it removed.
            if !listed {
                return Err(TeamError::DeviceRemoved);
            }
            return Ok(());
        } else if !mine.starts_with(&entry.chain) {
            let handle = self.handle.clone();
            self.notice(format!(
                "your directory entry is signed by a user key your devices did not make: a removed device of yours may be compromised; ask the admin to re-invite you (`sotto invite {handle} --replace`)"
            ));
            return Err(TeamError::UserKeyConflict(handle));
        }
        let user_key = self.user_key();
        let devices = self.own_devices(engine)?;
        let change = engine
            .set_devices(&self.handle, Some(user_key), devices)
            .map_err(|e| corrupt(e.to_string()))?;
        if !change.removed.is_empty() {
            engine
                .rotate_sessions_shared_with(&self.handle)
                .map_err(|e| corrupt(e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::team::directory::tests::{device_card, invite};
    use crate::team::{DirectoryError, TeamSecrets, build_entry_with, parse_invite};
    use ed25519_dalek::SigningKey;
    use sotto_proto::client::SignedCard;

    struct Fixture {
        team: TeamSecrets,
        invite: crate::team::IssuedInvite,
        card: SignedCard,
        /// Bob's view of the team.
        bob: Membership,
    }

    fn fixture() -> Fixture {
        let team = TeamSecrets::generate();
        let alice = invite(&team, "alice");
        let card = device_card("alice");
        let bob = Membership::from_invite(&parse_invite(&invite(&team, "bob").code, 0).unwrap());
        Fixture {
            team,
            invite: alice,
            card,
            bob,
        }
    }

    impl Fixture {
        /// Alice's entry with user keys `keys` (each succeeding the one
        /// before), the list signed by `signer` (the last key if `None`).
        fn entry(
            &self,
            keys: &[&SigningKey],
            signer: Option<&SigningKey>,
            version: u64,
        ) -> Result<VerifiedEntry, DirectoryError> {
            let successions: Vec<Succession> = keys
                .windows(2)
                .map(|pair| crate::team::sign_succession(pair[0], &pair[1].verifying_key()))
                .collect();
            let last = keys.last().unwrap();
            let bytes = build_entry_with(
                &self.invite.cert,
                "alice",
                &self.invite.invite_key,
                &keys[0].verifying_key(),
                &successions,
                signer.unwrap_or(last),
                version,
                std::slice::from_ref(&self.card),
            );
            self.team.directory().verify_entry("alice", &bytes)
        }
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn device_lists_must_come_from_the_user_key_and_never_go_back() {
        let mut f = fixture();
        let (u, u2) = (key(1), key(2));
        let first = f.entry(&[&u], None, 5).unwrap();
        assert_eq!(f.bob.check_known(&first, &[]).unwrap(), Trust::Same);

        // Signed by the team key alone: refused before any trust check.
        let team_key = f.team.team.clone();
        assert!(matches!(
            f.entry(&[&u], Some(&team_key), 6),
            Err(DirectoryError::Forged { .. })
        ));
        // A lower version of the same user key: a rollback.
        let stale = f.entry(&[&u], None, 4).unwrap();
        assert!(matches!(
            f.bob.check_known(&stale, &[]),
            Err(TeamError::Rollback(h)) if h == "alice"
        ));
        // A succession moves the key on; the old key's lists (a removed
        // device's) are refused from then on, whatever their version.
        let next = f.entry(&[&u, &u2], None, 6).unwrap();
        assert_eq!(
            f.bob.check_known(&next, &[]).unwrap(),
            Trust::Succeeded {
                old: *u.verifying_key().as_bytes()
            }
        );
        let removed = f.entry(&[&u], None, 99).unwrap();
        assert!(matches!(
            f.bob.check_known(&removed, &[]),
            Err(TeamError::Rollback(_))
        ));
        // A new key with no succession under the same invite (a removed
        // device holds the invite key too): refused.
        let unknown = f.entry(&[&key(9)], None, 100).unwrap();
        assert!(matches!(
            f.bob.check_known(&unknown, &[]),
            Err(TeamError::UnknownUserKey(_))
        ));
    }

    #[test]
    fn two_successors_of_one_key_are_a_compromise_until_a_reinvite() {
        let mut f = fixture();
        let (u, u2, rogue) = (key(1), key(2), key(3));
        f.bob
            .check_known(&f.entry(&[&u], None, 1).unwrap(), &[])
            .unwrap();
        let announced = crate::team::sign_succession(&u, &rogue.verifying_key());
        let entry = f.entry(&[&u, &u2], None, 2).unwrap();
        assert!(matches!(
            f.bob.check_known(&entry, &[announced]),
            Err(TeamError::UserKeyConflict(h)) if h == "alice"
        ));
        assert!(f.bob.is_compromised("alice"));
        // Even the entry alone is refused now.
        assert!(f.bob.check_known(&entry, &[]).is_err());
        assert!(
            f.bob
                .take_notices()
                .iter()
                .any(|n| n.contains("two different successors"))
        );
        // The admin's re-invite (a new certificate) starts afresh, with a
        // "key changed" notice.
        f.invite = invite(&f.team, "alice");
        let fresh = f.entry(&[&key(4)], None, 1).unwrap();
        assert_eq!(f.bob.check_known(&fresh, &[]).unwrap(), Trust::Replaced);
        assert!(!f.bob.is_compromised("alice"));
        // The old life's two successors, still on record, do not count
        // against the new one.
        let stale = [
            crate::team::sign_succession(&u, &rogue.verifying_key()),
            crate::team::sign_succession(&u, &u2.verifying_key()),
        ];
        assert_eq!(f.bob.check_known(&fresh, &stale).unwrap(), Trust::Same);
        assert!(
            f.bob
                .take_notices()
                .iter()
                .any(|n| n.contains("alice's key changed"))
        );
    }
}
