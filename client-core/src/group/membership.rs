//! Group membership: create a group, add and remove members (a new
//! generation each time), apply a received state, leave.

use sotto_proto::client::{GroupLeave, GroupState, Payload, payload};

use super::GROUP_PREFIX;
use super::{
    Generation, Group, GroupId, GroupInfo, OUTBOUND_PREFIX, Rotation, json, key, new_secret,
};
use crate::engine::{Dropped, Engine, EngineError, Received, Status, corrupt, random_id};
use crate::{Batch, EPOCH_SECS, Epoch, Tree, records};

impl Engine {
    /// Creates a group with me as its admin and `members` (contacts) in it,
    /// and queues its state to each of them over Olm.
    pub fn create_group(
        &mut self,
        name: &str,
        members: &[String],
        rotation: Rotation,
        now_ms: u64,
    ) -> Result<GroupInfo, EngineError> {
        let me = self.device.handle.clone();
        if self.groups.values().any(|g| g.name == name && !g.left) {
            return Err(EngineError::GroupNameTaken(name.to_owned()));
        }
        if name.trim().is_empty() || name.len() > 64 {
            return Err(EngineError::GroupChange(
                "a group name is 1 to 64 characters".into(),
            ));
        }
        let mut all = vec![me.clone()];
        for member in members {
            if !self.contacts.contains_key(member) {
                return Err(EngineError::UnknownContact(member.clone()));
            }
            if !all.contains(member) {
                all.push(member.clone());
            }
        }
        let group = Group {
            id: random_id(),
            name: name.to_owned(),
            admins: vec![me],
            current: Generation {
                number: 1,
                secret: new_secret(),
                members: all,
                since_epoch: Epoch::from_unix_secs(now_ms / 1000, EPOCH_SECS).get(),
            },
            previous: None,
            rotate_messages: rotation.messages.max(1),
            rotate_secs: rotation.secs.max(1),
            left: false,
            timer_admins_only: false,
        };
        let info = group.info();
        self.publish_group(group, &[], now_ms)?;
        Ok(info)
    }

    /// Adds `handles` (contacts) to a group I administer: a new generation
    /// with a new secret, so they read only what is sent from now on.
    pub fn add_group_members(
        &mut self,
        group: &str,
        handles: &[String],
        now_ms: u64,
    ) -> Result<GroupInfo, EngineError> {
        let mut next = self.next_generation(group, now_ms)?;
        let mut added = false;
        for handle in handles {
            if !self.contacts.contains_key(handle) {
                return Err(EngineError::UnknownContact(handle.clone()));
            }
            if !next.current.has(handle) {
                next.current.members.push(handle.clone());
                added = true;
            }
        }
        if !added {
            return Err(EngineError::GroupChange(format!(
                "everyone named is already in \"{}\"",
                next.name
            )));
        }
        let info = next.info();
        self.publish_group(next, &[], now_ms)?;
        Ok(info)
    }

    /// Removes `handles` from a group I administer: a new generation whose
    /// secret they never receive, and every member's Megolm session
    /// rotates, so they can neither locate nor read what follows.
    pub fn remove_group_members(
        &mut self,
        group: &str,
        handles: &[String],
        now_ms: u64,
    ) -> Result<GroupInfo, EngineError> {
        let mut next = self.next_generation(group, now_ms)?;
        let me = self.device.handle.clone();
        let mut removed = Vec::new();
        for handle in handles {
            if *handle == me {
                return Err(EngineError::GroupChange(
                    "an admin cannot remove themselves from their group".into(),
                ));
            }
            if next.current.has(handle) {
                next.current.members.retain(|m| m != handle);
                next.admins.retain(|m| m != handle);
                removed.push(handle.clone());
            }
        }
        if removed.is_empty() {
            return Err(EngineError::GroupChange(format!(
                "nobody named is in \"{}\"",
                next.name
            )));
        }
        let info = next.info();
        self.publish_group(next, &removed, now_ms)?;
        Ok(info)
    }

    /// `handles` left the team (revoked, DESIGN §6). In every group of
    /// mine they are in: where I am an admin, a new generation without
    /// them (its secret never goes to them, and they are told nothing);
    /// elsewhere they leave my local member list until the group's admin
    /// moves it on. My outbound session in each such group rotates, and no
    /// session of mine names them as entitled to its key any more.
    /// Returns the groups that moved to a new generation.
    pub(crate) fn members_revoked(
        &mut self,
        handles: &[String],
        now_ms: u64,
    ) -> Result<Vec<GroupInfo>, EngineError> {
        let me = self.device.handle.clone();
        let gone = |m: &String| handles.contains(m) && *m != me;
        let affected: Vec<GroupId> = self
            .groups
            .values()
            .filter(|g| !g.left && g.current.members.iter().any(gone))
            .map(|g| g.id)
            .collect();
        let mut moved = Vec::new();
        for id in affected {
            let Some(group) = self.groups.get(&id) else {
                continue;
            };
            // A new generation goes to every remaining member over Olm:
            // if one of them is not a contact (their entry did not verify),
            // it cannot be sent, and the group is treated as one I do not
            // administer until they are back.
            let reachable = group
                .current
                .members
                .iter()
                .filter(|m| !gone(m) && **m != me)
                .all(|m| self.contacts.get(m).is_some_and(|d| !d.is_empty()));
            if group.admins.contains(&me) && reachable {
                let mut next = self.next_generation(&hex::encode(id), now_ms)?;
                next.current.members.retain(|m| !gone(m));
                next.admins.retain(|m| !gone(m));
                moved.push(next.info());
                self.publish_group(next, &[], now_ms)?;
            } else {
                let mut local = group.clone();
                local.current.members.retain(|m| !gone(m));
                local.admins.retain(|m| !gone(m));
                let mut batch = Batch::new();
                batch.delete(Tree::Sessions, key(OUTBOUND_PREFIX, &[&id]));
                batch.put(Tree::Meta, key(GROUP_PREFIX, &[&id]), &json(&local)?);
                self.store.apply(batch)?;
                self.groups.insert(id, local);
            }
        }
        self.forget_entitlements(handles)?;
        self.store.flush()?;
        Ok(moved)
    }

    /// Admin of the group: whether only admins may set its
    /// disappearing-message timer. Travels as a new generation of the
    /// group's state (like a membership change), which every member's
    /// devices then enforce on receive.
    pub fn set_group_timer_admins_only(
        &mut self,
        group: &str,
        on: bool,
        now_ms: u64,
    ) -> Result<GroupInfo, EngineError> {
        let mut next = self.next_generation(group, now_ms)?;
        next.timer_admins_only = on;
        let info = next.info();
        self.publish_group(next, &[], now_ms)?;
        Ok(info)
    }

    /// Whether `sender` may set the timer of `conversation`: always in a
    /// 1:1 conversation and in a group that lets any member; else only a
    /// group admin (as the group's state I hold names them).
    pub(crate) fn may_set_timer(&self, conversation: &str, sender: &str) -> bool {
        let Some(id) = conversation
            .strip_prefix("group/")
            .and_then(|hex_id| hex::decode(hex_id).ok())
            .and_then(|id| GroupId::try_from(id.as_slice()).ok())
        else {
            return true;
        };
        match self.groups.get(&id) {
            Some(group) => !group.timer_admins_only || group.admins.iter().any(|a| a == sender),
            None => true,
        }
    }

    /// The group's next generation, with a fresh secret; checks that I may
    /// make it.
    fn next_generation(&self, group: &str, now_ms: u64) -> Result<Group, EngineError> {
        let info = self.find_group(group)?;
        let group = self.group_by_hex(&info.id)?;
        if group.left {
            return Err(EngineError::NotInGroup(group.name.clone()));
        }
        if !group.admins.contains(&self.device.handle) {
            return Err(EngineError::NotGroupAdmin(group.name.clone()));
        }
        let mut next = group.clone();
        next.previous = Some(group.current.clone());
        next.current = Generation {
            number: group.current.number + 1,
            secret: new_secret(),
            members: group.current.members.clone(),
            since_epoch: Epoch::from_unix_secs(now_ms / 1000, EPOCH_SECS).get(),
        };
        Ok(next)
    }

    /// Stores `group` and queues its state to every member (and, without
    /// the secret, to each of `removed`, so their device shows that they
    /// left). My outbound session is dropped: the next message starts a
    /// new one.
    fn publish_group(
        &mut self,
        group: Group,
        removed: &[String],
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let me = self.device.handle.clone();
        let state = group.state();
        let payload = |state: GroupState| Payload {
            sent_at: now_ms,
            body: Some(payload::Body::GroupState(state)),
            ..Payload::default()
        };
        for member in group.current.members.iter().filter(|m| **m != me) {
            self.queue(member, payload(state.clone()), None)?;
        }
        // My other devices follow the group too.
        self.queue(&me, payload(state.clone()), None)?;
        for member in removed {
            let without_secret = GroupState {
                secret: Default::default(),
                ..state.clone()
            };
            self.queue(member, payload(without_secret), None)?;
        }
        let mut batch = Batch::new();
        batch.delete(Tree::Sessions, key(OUTBOUND_PREFIX, &[&group.id]));
        batch.put(Tree::Meta, key(GROUP_PREFIX, &[&group.id]), &json(&group)?);
        self.store.apply(batch)?;
        self.store.flush()?;
        self.groups.insert(group.id, group);
        Ok(())
    }

    /// A group state from `peer` (over Olm, so `peer` is authenticated).
    /// One taken from another member also goes to my other devices: the
    /// sender may not know them yet (a device linked just before), and
    /// a state from my own device is taken as mine.
    pub(crate) fn on_group_state(
        &mut self,
        peer: &str,
        state: GroupState,
        epoch: Epoch,
        sent_at: u64,
        batch: &mut Batch,
    ) -> Result<Received, EngineError> {
        let forward = (peer != self.device.handle).then(|| Payload {
            sent_at,
            body: Some(payload::Body::GroupState(state.clone())),
            ..Payload::default()
        });
        let received = self.take_group_state(peer, state, epoch, batch)?;
        if let (Received::Group, Some(forward)) = (&received, forward) {
            let me = self.device.handle.clone();
            self.queue(&me, forward, None)?;
        }
        Ok(received)
    }

    fn take_group_state(
        &mut self,
        peer: &str,
        state: GroupState,
        epoch: Epoch,
        batch: &mut Batch,
    ) -> Result<Received, EngineError> {
        let Ok(id) = GroupId::try_from(state.group_id.as_ref()) else {
            return Ok(self.drop_blob(Dropped::Group));
        };
        let me = self.device.handle.clone();
        let mine = state.members.contains(&me) && state.secret.len() == 32;
        let generation = |secret: &[u8]| Generation {
            number: state.generation,
            secret: secret.try_into().unwrap_or([0; 32]),
            members: state.members.clone(),
            since_epoch: epoch.get(),
        };
        let group = match self.groups.get(&id).cloned() {
            None => {
                // One of my own devices speaks for me in every group.
                let sender_may = peer == me
                    || (state.admins.iter().any(|a| a == peer)
                        && state.members.iter().any(|m| m == peer));
                if !sender_may || state.generation == 0 || !mine {
                    return Ok(self.drop_blob(Dropped::Group));
                }
                Group {
                    id,
                    name: state.name.clone(),
                    admins: state.admins.clone(),
                    current: generation(&state.secret),
                    previous: None,
                    rotate_messages: state.rotate_messages.max(1),
                    rotate_secs: state.rotate_secs.max(1),
                    left: false,
                    timer_admins_only: state.timer_admins_only,
                }
            }
            Some(known) => {
                if peer != me && !known.admins.iter().any(|a| a == peer) {
                    return Ok(self.drop_blob(Dropped::Group));
                }
                if state.generation <= known.current.number {
                    return Ok(Received::Duplicate);
                }
                let mut next = known.clone();
                next.admins = state.admins.clone();
                next.name = state.name.clone();
                next.timer_admins_only = state.timer_admins_only;
                if mine {
                    next.previous = Some(known.current.clone());
                    next.current = generation(&state.secret);
                } else {
                    next.current = generation(&[0; 32]);
                    self.leave(&mut next, batch)?;
                }
                next
            }
        };
        batch.delete(Tree::Sessions, key(OUTBOUND_PREFIX, &[&id]));
        batch.put(Tree::Meta, key(GROUP_PREFIX, &[&id]), &json(&group)?);
        self.groups.insert(id, group);
        self.groups_changed = true;
        Ok(Received::Group)
    }

    /// Marks `group` left: keeps the history, forgets the secrets, and
    /// drops (as unsent) what I had queued for it.
    fn leave(&self, group: &mut Group, batch: &mut Batch) -> Result<(), EngineError> {
        group.left = true;
        group.previous = None;
        group.current.secret = [0; 32];
        let hex_id = hex::encode(group.id);
        for (key, value) in self.store.scan_prefix(Tree::Outbox, &[])? {
            let queued = records::decode_outbox(&value).map_err(corrupt)?;
            if queued.group.as_deref() == Some(hex_id.as_str()) {
                batch.delete(Tree::Outbox, key);
                self.update_status(&queued.message_id, Status::Unsent, batch)?;
            }
        }
        Ok(())
    }

    /// Leaves a group I am in but do not administer: my device stops
    /// reading and sending at once, and each admin's device removes me
    /// (a new generation I never receive) when it hears of it.
    pub fn leave_group(&mut self, group: &str, now_ms: u64) -> Result<GroupInfo, EngineError> {
        let info = self.find_group(group)?;
        let mut left = self.group_by_hex(&info.id)?.clone();
        if left.left {
            return Err(EngineError::NotInGroup(left.name.clone()));
        }
        let me = self.device.handle.clone();
        if left.admins.contains(&me) {
            return Err(EngineError::GroupChange(format!(
                "you administer \"{}\"; remove its other members instead of leaving it",
                left.name
            )));
        }
        let admins: Vec<String> = left
            .admins
            .iter()
            .filter(|a| self.contacts.contains_key(*a))
            .cloned()
            .collect();
        for admin in &admins {
            let payload = Payload {
                sent_at: now_ms,
                body: Some(payload::Body::GroupLeave(GroupLeave {
                    group_id: left.id.to_vec().into(),
                })),
                ..Payload::default()
            };
            self.queue(admin, payload, None)?;
        }
        let mut batch = Batch::new();
        self.leave(&mut left, &mut batch)?;
        batch.delete(Tree::Sessions, key(OUTBOUND_PREFIX, &[&left.id]));
        batch.put(Tree::Meta, key(GROUP_PREFIX, &[&left.id]), &json(&left)?);
        self.store.apply(batch)?;
        self.store.flush()?;
        let info = left.info();
        self.groups.insert(left.id, left);
        Ok(info)
    }

    /// `peer` left a group I administer: remove them, as `group remove`
    /// would.
    pub(crate) fn on_group_leave(
        &mut self,
        peer: &str,
        leave: GroupLeave,
        now_ms: u64,
    ) -> Result<Received, EngineError> {
        let Some(group) = GroupId::try_from(leave.group_id.as_ref())
            .ok()
            .and_then(|id| self.groups.get(&id))
        else {
            return Ok(self.drop_blob(Dropped::Group));
        };
        let mine = !group.left && group.admins.contains(&self.device.handle);
        if !mine || !group.current.has(peer) {
            return Ok(self.drop_blob(Dropped::Group));
        }
        let id = hex::encode(group.id);
        self.remove_group_members(&id, &[peer.to_owned()], now_ms)?;
        Ok(Received::Group)
    }
}
