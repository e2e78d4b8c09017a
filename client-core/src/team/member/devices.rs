//! My own devices as the team directory lists them: the signed device
//! list, user-key successions, names, and the member state one of my
//! devices hands another.

use ed25519_dalek::SigningKey;
use sotto_proto::Message as _;
use sotto_proto::client::{
    AdminInvite, DeviceName, DeviceSecret, MemberState, SignedCard, SignedInviteCert, Succession,
};
use zeroize::Zeroize as _;
#[cfg(feature = "test-support")]
use zeroize::Zeroizing;

use super::{Membership, TeamError, corrupt};
use crate::Engine;
use crate::card::Card;

impl Membership {
    /// My approved devices' signed cards (this device's alone in a home
    /// from before multi-device).
    pub fn device_cards(&self, engine: &Engine) -> Result<Vec<SignedCard>, TeamError> {
        if self.devices.is_empty() {
            return Ok(vec![engine.signed_card()]);
        }
        // This device's card as it is now (its request inbox key rotates),
        // whatever the list last published said.
        let me = engine.own_card().identity_key;
        self.devices
            .iter()
            .map(|bytes| {
                let signed = SignedCard::decode(bytes.as_slice()).map_err(corrupt)?;
                match Card::verify(&signed) {
                    Ok(card) if card.identity_key == me => Ok(engine.signed_card()),
                    _ => Ok(signed),
                }
            })
            .collect()
    }

    /// Whether the device list last read or published names an older card
    /// of this device (its request inbox rotated since): my entry is due
    /// for publication.
    pub fn own_card_stale(&self, engine: &Engine) -> bool {
        let me = engine.own_card().identity_key;
        let current = engine.signed_card().encode_to_vec();
        self.devices.iter().any(|bytes| {
            SignedCard::decode(bytes.as_slice())
                .ok()
                .and_then(|signed| Card::verify(&signed).ok())
                .is_some_and(|card| card.identity_key == me)
                && *bytes != current
        })
    }

    /// My approved devices, verified.
    pub fn own_devices(&self, engine: &Engine) -> Result<Vec<(Card, SignedCard)>, TeamError> {
        self.device_cards(engine)?
            .into_iter()
            .map(|signed| {
                Card::verify(&signed)
                    .map(|card| (card, signed))
                    .map_err(corrupt)
            })
            .collect()
    }

    pub(super) fn successions(&self) -> Result<Vec<Succession>, TeamError> {
        self.successions
            .iter()
            .map(|bytes| Succession::decode(bytes.as_slice()).map_err(corrupt))
            .collect()
    }

    /// My user key chain, oldest first (the last is current).
    pub fn user_chain(&self) -> Vec<[u8; 32]> {
        let mut chain = vec![self.root_user_key.unwrap_or_else(|| self.user_key())];
        for succession in self.successions().unwrap_or_default() {
            if let Some((_, new)) = crate::team::verify_succession(&succession) {
                chain.push(new);
            }
        }
        chain
    }

    /// My current user key `U`.
    pub fn user_key(&self) -> [u8; 32] {
        *SigningKey::from_bytes(&self.user_seed)
            .verifying_key()
            .as_bytes()
    }

    /// The confirmation code, while this device waits for approval.
    pub fn awaiting_approval(&self) -> Option<&str> {
        self.awaiting_approval.as_deref()
    }

    /// Names my device `identity`, added at `added_at` (unix seconds).
    pub fn name_device(&mut self, identity: &[u8; 32], name: &str, added_at: u64) {
        self.device_names
            .insert(hex::encode(identity), (name.to_owned(), added_at));
    }

    /// The name and addition time of my device `identity`.
    pub fn device_name(&self, identity: &[u8; 32]) -> Option<(String, u64)> {
        self.device_names.get(&hex::encode(identity)).cloned()
    }

    /// Records my device `identity`'s relay revocation secret.
    pub fn set_revocation_secret(&mut self, identity: &[u8; 32], secret: [u8; 32]) {
        self.revocation_secrets
            .insert(hex::encode(identity), secret);
    }

    /// The relay revocation secret of my device `identity`, if I hold it.
    pub fn revocation_secret(&self, identity: &[u8; 32]) -> Option<[u8; 32]> {
        self.revocation_secrets.get(&hex::encode(identity)).copied()
    }

    /// Signs a new device into my device list (published by the caller).
    pub fn add_device(
        &mut self,
        engine: &Engine,
        signed: &SignedCard,
        revocation_secret: Option<[u8; 32]>,
    ) -> Result<(), TeamError> {
        let mut devices = self.device_cards(engine)?;
        let card = Card::verify(signed).map_err(corrupt)?;
        if !devices
            .iter()
            .any(|d| Card::verify(d).is_ok_and(|c| c.identity_key == card.identity_key))
        {
            devices.push(signed.clone());
        }
        self.devices = devices.iter().map(|d| d.encode_to_vec()).collect();
        if let Some(secret) = revocation_secret {
            self.set_revocation_secret(&card.identity_key.to_bytes(), secret);
        }
        Ok(())
    }

    /// Removes my device `identity` and moves to a new user key `U'`: the
    /// old `U` signs the succession, `U'` will sign the new list, and the
    /// removed device never learns `U'`. Returns the succession (to
    /// announce) and the removed device's revocation secret, if held.
    pub fn remove_device(
        &mut self,
        engine: &Engine,
        identity: &[u8; 32],
    ) -> Result<(Succession, Option<[u8; 32]>), TeamError> {
        let devices: Vec<SignedCard> = self
            .device_cards(engine)?
            .into_iter()
            .filter(|d| Card::verify(d).is_ok_and(|c| c.identity_key.to_bytes() != *identity))
            .collect();
        let old = SigningKey::from_bytes(&self.user_seed);
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("invariant: the OS random number generator works");
        let new = SigningKey::from_bytes(&seed);
        let succession = crate::team::sign_succession(&old, &new.verifying_key());
        if self.root_user_key.is_none() {
            self.root_user_key = Some(*old.verifying_key().as_bytes());
        }
        if self.slot_seed.is_none() {
            self.slot_seed = Some(self.user_seed);
        }
        self.successions.push(succession.encode_to_vec());
        self.user_seed = seed;
        seed.zeroize();
        self.devices = devices.iter().map(|d| d.encode_to_vec()).collect();
        let secret = self.revocation_secrets.remove(&hex::encode(identity));
        Ok((succession, secret))
    }

    /// A successor of my current user key that none of my devices will
    /// use (see `App::announce_forged_succession`).
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn forge_succession(&self) -> Succession {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).expect("invariant: the OS random number generator works");
        crate::team::sign_succession(
            &SigningKey::from_bytes(&self.user_seed),
            &SigningKey::from_bytes(&seed).verifying_key(),
        )
    }

    /// The state one device of mine sends another: everything it needs to
    /// act as me. `history_chunks` says how many history parts follow.
    pub fn member_state(
        &self,
        engine: &Engine,
        history_chunks: u32,
    ) -> Result<MemberState, TeamError> {
        Ok(MemberState {
            user_seed: self.user_seed.to_vec().into(),
            invite_seed: self.invite_seed.to_vec().into(),
            cert: self.cert.clone().into(),
            successions: self.successions()?,
            devices_version: self.entry_version,
            devices: self.device_cards(engine)?,
            revocation_secrets: self
                .revocation_secrets
                .iter()
                .filter_map(|(identity, secret)| {
                    Some(DeviceSecret {
                        identity_key: hex::decode(identity).ok()?.into(),
                        secret: secret.to_vec().into(),
                    })
                })
                .collect(),
            dir_key: self.dir_key.to_vec().into(),
            dir_version: self.dir_version,
            entry_version: self.entry_version,
            team_seed: self
                .team_seed
                .map(|s| s.to_vec())
                .unwrap_or_default()
                .into(),
            relay_admin_seed: self
                .relay_admin_seed
                .map(|s| s.to_vec())
                .unwrap_or_default()
                .into(),
            // The first invite of each member first (that is the one a
            // receiving device files as its invite), then every other
            // registration recorded for it.
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
            history_chunks,
            names: self
                .device_names
                .iter()
                .filter_map(|(identity, (name, added_at))| {
                    Some(DeviceName {
                        identity_key: hex::decode(identity).ok()?.into(),
                        name: name.clone(),
                        added_at: *added_at,
                    })
                })
                .collect(),
        })
    }

    /// Takes a member state one of my devices sent (the engine accepts it
    /// only from my approved devices). Refused if its user key neither is
    /// mine nor follows mine by signed successions, or if this device is
    /// not in its device list. Returns whether anything changed.
    pub fn apply_member_state(
        &mut self,
        engine: &Engine,
        state: &MemberState,
    ) -> Result<bool, TeamError> {
        let key32 = |bytes: &[u8], what: &str| {
            <[u8; 32]>::try_from(bytes).map_err(|_| corrupt(format!("member state: {what}")))
        };
        let user_seed = key32(&state.user_seed, "user key")?;
        let invite_seed = key32(&state.invite_seed, "invite key")?;
        let new_key = *SigningKey::from_bytes(&user_seed)
            .verifying_key()
            .as_bytes();
        let cert = SignedInviteCert::decode(state.cert.as_ref()).map_err(corrupt)?;
        let invite_cert =
            sotto_proto::client::InviteCert::decode(cert.cert.as_ref()).map_err(corrupt)?;
        if invite_cert.handle != self.handle
            || invite_cert.invite_key.as_ref()
                != SigningKey::from_bytes(&invite_seed)
                    .verifying_key()
                    .as_bytes()
        {
            return Err(corrupt("member state: a certificate for another key"));
        }
        let mut chain = Vec::new();
        for succession in &state.successions {
            let (old, new) = crate::team::verify_succession(succession)
                .ok_or_else(|| corrupt("member state: an unsigned succession"))?;
            if chain.is_empty() {
                chain.push(old);
            }
            if chain.last() != Some(&old) {
                return Err(corrupt("member state: a broken succession chain"));
            }
            chain.push(new);
        }
        if chain.is_empty() {
            chain.push(new_key);
        }
        if chain.last() != Some(&new_key) {
            return Err(corrupt(
                "member state: the user key is not the chain's last",
            ));
        }
        let fresh = self.awaiting_approval.is_some();
        // Unless I am new, my current key must be on the chain.
        if !fresh && !chain.contains(&self.user_key()) {
            return Err(TeamError::UserKeyConflict(self.handle.clone()));
        }
        let me = engine.own_card().identity_key;
        let listed = state
            .devices
            .iter()
            .any(|d| Card::verify(d).is_ok_and(|c| c.identity_key == me));
        if !listed {
            return Err(TeamError::DeviceRemoved);
        }
        if !fresh && new_key == self.user_key() && state.entry_version < self.entry_version {
            return Ok(false);
        }
        self.user_seed = user_seed;
        self.invite_seed = invite_seed;
        self.cert = cert.encode_to_vec();
        self.root_user_key = (chain.len() > 1).then(|| chain[0]);
        self.successions = state
            .successions
            .iter()
            .map(|s| s.encode_to_vec())
            .collect();
        self.devices = state.devices.iter().map(|d| d.encode_to_vec()).collect();
        for secret in &state.revocation_secrets {
            if let (Ok(identity), Ok(value)) = (
                <[u8; 32]>::try_from(secret.identity_key.as_ref()),
                <[u8; 32]>::try_from(secret.secret.as_ref()),
            ) {
                self.set_revocation_secret(&identity, value);
            }
        }
        if state.dir_version >= self.dir_version {
            self.dir_key = key32(&state.dir_key, "directory key")?;
            self.dir_version = state.dir_version;
        }
        self.entry_version = self.entry_version.max(state.entry_version);
        if !state.team_seed.is_empty() {
            self.team_seed = Some(key32(&state.team_seed, "team key")?);
        }
        if !state.relay_admin_seed.is_empty() {
            self.relay_admin_seed = Some(key32(&state.relay_admin_seed, "relay admin key")?);
        }
        for invite in &state.invites {
            if let Ok(hash) = <[u8; 32]>::try_from(invite.registration_token_hash.as_ref()) {
                if self.invites.get(&invite.handle).is_some_and(|h| *h != hash) {
                    self.record_registration(&invite.handle, hash);
                } else {
                    self.invites.insert(invite.handle.clone(), hash);
                }
            }
        }
        for named in &state.names {
            self.device_names.insert(
                hex::encode(&named.identity_key),
                (named.name.chars().take(64).collect(), named.added_at),
            );
        }
        // The sender published the entry: the slot is the current key's.
        self.slot_owned = true;
        self.slot_seed = None;
        self.awaiting_approval = None;
        Ok(true)
    }
}
