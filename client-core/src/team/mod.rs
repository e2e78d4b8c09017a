//! Teams (DESIGN §6): the team key `T`, invite codes, and the encrypted
//! directory that lets members find each other by handle while the relay
//! sees only opaque, bucket-sized slots.
//!
//! - `invite`: invite certificates (`T` signs {team, handle, invite key,
//!   expiry}) and the `sotto-invite:` code a new member pastes.
//! - `directory`: slot IDs (`HMAC-SHA256(K_dir, "user/" || handle)`), slot
//!   value encryption under a key derived from `K_dir`, directory entries
//!   with the chain `T` → invite cert → user key `U` → device list → device
//!   cards, and the `T`-signed roster. Verification refuses anything that
//!   does not chain, naming the handle.
//! - `admin_log`: the admin-only log of admin actions, in slots whose IDs
//!   and keys derive from `T`, each entry signed by the acting admin.
//! - `link`: the `sotto-link:` code a new device of a member pastes.
//! - `member/`: a device's [`Membership`] in its team — how it is made and
//!   stored, its own devices, what it trusts of other members' entries,
//!   and the directory reads and writes it does through a relay (its
//!   `mod.rs` maps the files).
//!
//! Slot owner keys are never long-term identity keys: a member's slot is
//! pre-claimed by the admin with the invite key, and at join passes to a
//! key derived from the member's user key (so a copy of the invite code
//! cannot rewrite it later); the roster slot is owned by a key derived from
//! `T`'s secret. The relay stores no key it could recognise elsewhere.

mod admin_log;
mod directory;
mod invite;
mod link;
mod member;

pub use admin_log::{AdminAction, AdminLog, AdminLogError, AdminLogLine, sign_log_entry};
pub use directory::{
    Directory, DirectoryError, MAX_SUCCESSIONS, TeamSecrets, TokenIssuer, VerifiedEntry,
    VerifiedRoster, build_entry, build_entry_with, sign_succession, verify_dir_key,
    verify_succession,
};
pub use invite::{
    INVITE_PREFIX, InviteError, InviteParams, IssuedInvite, ParsedInvite, issue_invite,
    parse_invite,
};
pub use link::{LINK_PREFIX, LinkParams, ParsedLink, link_code, parse_link};
pub use member::{KnownUser, Membership, TeamError, Trust};

/// Domain separation strings of the team layer.
pub mod tags {
    /// `T` signs invite certificates with this prefix.
    pub const INVITE_CERT: &[u8] = b"sotto/invite-cert/v1";
    /// The invite key vouches for the user key `U`.
    pub const USER_KEY: &[u8] = b"sotto/user/v1";
    /// `U` signs device lists.
    pub const DEVICE_LIST: &[u8] = b"sotto/devices/v1";
    /// A user key names its successor (a device was removed).
    pub const SUCCESSION: &[u8] = b"sotto/user-succession/v1";
    /// `T` signs a new directory key.
    pub const DIR_KEY: &[u8] = b"sotto/dir-key/v1";
    /// `T` signs rosters.
    pub const ROSTER: &[u8] = b"sotto/roster/v1";
    /// The acting admin's user key signs admin log entries with this
    /// prefix.
    pub const ADMIN_LOG_ENTRY: &[u8] = b"sotto/admin-log-entry/v1";
    /// Slot IDs of member entries: `HMAC(K_dir, "user/" || handle)`.
    pub const USER_SLOT: &[u8] = b"user/";
    /// The roster's slot ID: `HMAC(K_dir, "roster")`.
    pub const ROSTER_SLOT: &[u8] = b"roster";
    /// HKDF info for the slot value key.
    pub const DIR_VALUE: &[u8] = b"sotto/dir-value/v1";
    /// HKDF info for the roster slot's owner key.
    pub const ROSTER_OWNER: &[u8] = b"sotto/roster-owner/v1";
    /// HKDF info for the key a member's slot passes to at join (derived
    /// from the member's user key, which the invite code does not carry).
    pub const SLOT_OWNER: &[u8] = b"sotto/slot-owner/v1";
}
