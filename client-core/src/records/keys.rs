//! Store keys written by one layer and read by another (the engine reads
//! what the device layer writes), kept below both.

/// Where the engine keeps a member state received from one of my devices
/// until the team layer applies it.
pub(crate) const MEMBER_STATE: &[u8] = b"team/member-state";
/// Successions other members' devices announced, by member, for the team
/// layer.
pub(crate) const SUCCESSION_PREFIX: &[u8] = b"succession/";

/// When a device of mine was last heard from.
pub(crate) const LAST_SEEN_PREFIX: &[u8] = b"device-seen/";
/// Relay accounts members' devices reported to the admin (by
/// registration token hash), until the team layer files them.
pub(crate) const ACCOUNT_REPORT_PREFIX: &[u8] = b"team/account-report/";
