//! A member's devices, the engine's side (DESIGN "Devices"): link secrets
//! and link requests, the confirmation code, history handed to a new
//! device, and the member state one device of mine sends another.
//!
//! Linking, step by step:
//! 1. An approved device makes a one-time link secret `s`
//!    ([`Engine::new_link_secret`]) and prints it in a link code with its
//!    own card.
//! 2. The new device sends a [`LinkRequest`] over Olm to that device: its
//!    card and relay revocation secret, MACed with `s`. Olm authenticates
//!    the sending device key; the MAC proves the sender saw the code.
//! 3. The new device shows the confirmation code — derived from `s` and
//!    both device keys ([`confirmation_code`]) — and the member types it
//!    into the approving device, which finds the request with that code
//!    ([`Engine::take_link_request`]). Only then does the team layer sign
//!    the new device into the member's device list and send it the member
//!    state.
//!
//! Everything about a member's own devices lives here:
//!
//! - `mod.rs`: link codes — the confirmation code, the link MAC, a
//!   [`PendingDevice`] waiting for approval.
//! - `linking`: the engine's side (no I/O): link secrets and requests,
//!   history handed to a new device, member state between my devices.
//! - `inbox`: rotating this device's request inbox (on a schedule and
//!   with every directory key).
//! - `commands`: the [`App`](crate::App)'s side: `sotto device add`,
//!   `join`, `approve`, `list`, `remove`, and the relay and directory
//!   calls they make.
//!
//! This device's own keys are `crate::device`; a peer's device list is
//! kept by `crate::engine` (contacts).

mod commands;
mod inbox;
mod linking;

pub use commands::{Approved, DeviceInfo, DeviceLinkCode, LINK_VALID_SECS};
pub use inbox::{REQUEST_INBOX_GRACE_SECS, REQUEST_INBOX_ROTATE_SECS};

use hkdf::Hkdf;
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sotto_proto::client::SignedCard;
use zeroize::Zeroizing;

use crate::card::Card;

/// HMAC tag of a link request.
pub const LINK_REQUEST_TAG: &[u8] = b"sotto/link-request/v1";
/// HKDF info of the confirmation code.
pub const LINK_CONFIRM_INFO: &[u8] = b"sotto/link-confirm/v1";

const LINK_SECRET_PREFIX: &[u8] = b"link-secret/";

const LINK_REQUEST_PREFIX: &[u8] = b"link-request/";
const HISTORY_SEEN_PREFIX: &[u8] = b"hist/";
/// How long a link request waits for approval before it is dropped.
pub const LINK_REQUEST_TTL_SECS: u64 = 24 * 3600;
/// Room left in a history chunk for the payload around the items.
const CHUNK_HEADROOM: usize = 1024;

/// The code both devices show: 8 digits from `s` and both device keys.
pub fn confirmation_code(secret: &[u8; 32], existing: &[u8; 32], new: &[u8; 32]) -> String {
    let mut out = [0u8; 8];
    Hkdf::<Sha256>::new(None, secret)
        .expand_multi_info(&[LINK_CONFIRM_INFO, existing, new], &mut out)
        .expect("invariant: 8 bytes is a valid HKDF-SHA256 output length");
    let value = u64::from_be_bytes(out) % 100_000_000;
    format!("{:04}-{:04}", value / 10_000, value % 10_000)
}

/// Reduces a typed confirmation code to its digits.
pub fn normalize_code(code: &str) -> String {
    code.chars().filter(char::is_ascii_digit).collect()
}

/// The MAC over a link request, ready to finalize or verify (in constant
/// time).
fn link_hmac(secret: &[u8; 32], card: &[u8], revocation: &[u8], name: &str) -> hmac::Hmac<Sha256> {
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .expect("invariant: HMAC accepts any key length");
    mac.update(LINK_REQUEST_TAG);
    mac.update(&(card.len() as u32).to_be_bytes());
    mac.update(card);
    mac.update(revocation);
    mac.update(name.as_bytes());
    mac
}

/// The MAC over a link request.
pub(crate) fn link_mac(secret: &[u8; 32], card: &[u8], revocation: &[u8], name: &str) -> [u8; 32] {
    link_hmac(secret, card, revocation, name)
        .finalize()
        .into_bytes()
        .into()
}

/// A link request waiting for the member's approval.
#[derive(Serialize, Deserialize)]
struct LinkRequestRecord {
    signed_card: Vec<u8>,
    revocation_secret: Vec<u8>,
    code: String,
    received_ms: u64,
    #[serde(default)]
    name: String,
}

impl Drop for LinkRequestRecord {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.revocation_secret);
    }
}

/// A new device waiting for approval, as `sotto devices --pending` shows
/// it.
pub struct PendingDevice {
    /// Its card.
    pub card: Card,
    /// The signed card, to put in the device list.
    pub signed: SignedCard,
    /// The confirmation code it shows.
    pub code: String,
    /// Its relay revocation secret (the member's devices hold it).
    pub revocation_secret: Zeroizing<Vec<u8>>,
    /// When its request arrived (sender clock, unix ms).
    pub received_ms: u64,
    /// What the member called it.
    pub name: String,
}

/// A link secret `s` and the identity key of the device that printed its
/// code.
type LinkSecretOf = ([u8; 32], [u8; 32]);
