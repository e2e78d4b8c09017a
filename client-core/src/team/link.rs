//! Device-link codes: what `sotto device add` prints for a new device of
//! the same member — the team and relay, the one-time link secret `s`, the
//! card of the device that printed it (the new device's request goes to
//! it), and, unless the relay forbids self-service, a registration token.
//!
//! A link code grants no trust by itself: the new device is trusted only
//! once the member types its confirmation code into the device that
//! printed the link code.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sotto_proto::Message as _;
use sotto_proto::client::{DeviceLink, SignedCard};
use zeroize::Zeroizing;

use super::invite::{InviteError, validate_handle};
use crate::card::Card;

/// Prefix that makes a link code recognisable.
pub const LINK_PREFIX: &str = "sotto-link:";
const LINK_VERSION: u32 = 1;

/// A verified link code, as the new device reads it.
pub struct ParsedLink {
    /// Team name.
    pub team_name: String,
    /// The member's handle.
    pub handle: String,
    /// Relay `host:port`.
    pub relay_addr: String,
    /// Pinned relay certificate fingerprint.
    pub relay_fingerprint: [u8; 32],
    /// The relay's token issuer key.
    pub issuer_key: [u8; 32],
    /// `K_dir`.
    pub dir_key: [u8; 32],
    /// Its version.
    pub dir_version: u64,
    /// The team key `T`.
    pub team_key: [u8; 32],
    /// The one-time link secret `s`.
    pub secret: Zeroizing<[u8; 32]>,
    /// The device that printed the code (the request goes to it).
    pub device: Card,
    /// Its signed card.
    pub signed_device: SignedCard,
    /// Relay access, if the relay allows self-service.
    pub registration_token: Option<Zeroizing<[u8; 32]>>,
    /// Unix seconds after which the code no longer works.
    pub expires_at: u64,
}

/// What goes into a link code.
pub struct LinkParams<'a> {
    /// Team name.
    pub team_name: &'a str,
    /// The member's handle.
    pub handle: &'a str,
    /// Relay `host:port`.
    pub relay_addr: &'a str,
    /// Relay certificate fingerprint.
    pub relay_fingerprint: [u8; 32],
    /// The relay's token issuer key.
    pub issuer_key: [u8; 32],
    /// `K_dir` and its version.
    pub dir_key: [u8; 32],
    /// Its version.
    pub dir_version: u64,
    /// `T`.
    pub team_key: [u8; 32],
    /// `s`.
    pub secret: [u8; 32],
    /// The printing device's card.
    pub device: SignedCard,
    /// A registration token for the new device, if self-service is on.
    pub registration_token: Option<[u8; 32]>,
    /// Expiry, unix seconds.
    pub expires_at: u64,
}

/// Encodes a link code.
pub fn link_code(params: &LinkParams<'_>) -> String {
    let link = DeviceLink {
        version: LINK_VERSION,
        team_name: params.team_name.to_owned(),
        handle: params.handle.to_owned(),
        relay_addr: params.relay_addr.to_owned(),
        relay_fingerprint: params.relay_fingerprint.to_vec().into(),
        issuer_key: params.issuer_key.to_vec().into(),
        dir_key: params.dir_key.to_vec().into(),
        team_key: params.team_key.to_vec().into(),
        secret: params.secret.to_vec().into(),
        device: Some(params.device.clone()),
        registration_token: params
            .registration_token
            .map(|t| t.to_vec())
            .unwrap_or_default()
            .into(),
        expires_at: params.expires_at,
        dir_version: params.dir_version,
    };
    let encoded = Zeroizing::new(link.encode_to_vec());
    format!(
        "{LINK_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(encoded.as_slice())
    )
}

fn key32(bytes: &[u8], what: &'static str) -> Result<[u8; 32], InviteError> {
    bytes.try_into().map_err(|_| InviteError::Malformed(what))
}

/// Parses and checks a link code at `now_secs`.
pub fn parse_link(code: &str, now_secs: u64) -> Result<ParsedLink, InviteError> {
    let body = code
        .trim()
        .strip_prefix(LINK_PREFIX)
        .ok_or(InviteError::NotALink)?;
    let bytes = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(body.trim())
            .map_err(|_| InviteError::Malformed("not base64"))?,
    );
    let link = crate::canonical::decode::<DeviceLink>(&bytes)
        .ok_or(InviteError::Malformed("does not decode"))?;
    if link.version != LINK_VERSION {
        return Err(InviteError::UnsupportedVersion(link.version));
    }
    validate_handle(&link.handle)?;
    let signed = link
        .device
        .clone()
        .ok_or(InviteError::Malformed("no device"))?;
    let device = Card::verify(&signed).map_err(|_| InviteError::Malformed("device card"))?;
    if device.handle != link.handle {
        return Err(InviteError::Malformed("device card for another handle"));
    }
    if now_secs > link.expires_at {
        return Err(InviteError::LinkExpired);
    }
    let registration_token = match link.registration_token.len() {
        0 => None,
        _ => Some(Zeroizing::new(key32(
            &link.registration_token,
            "registration token",
        )?)),
    };
    Ok(ParsedLink {
        team_name: link.team_name,
        handle: link.handle,
        relay_addr: link.relay_addr,
        relay_fingerprint: key32(&link.relay_fingerprint, "relay fingerprint")?,
        issuer_key: key32(&link.issuer_key, "issuer key")?,
        dir_key: key32(&link.dir_key, "directory key")?,
        dir_version: link.dir_version,
        team_key: key32(&link.team_key, "team key")?,
        secret: Zeroizing::new(key32(&link.secret, "link secret")?),
        device,
        signed_device: signed,
        registration_token,
        expires_at: link.expires_at,
    })
}
