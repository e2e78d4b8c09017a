//! Invite codes: one string (and a QR code) that carries everything a new
//! member's device needs to join — the relay and its pinned certificate,
//! the directory key, a team-signed certificate for the handle, the invite
//! key that owns the member's directory slot, and a single-use relay
//! registration token.
//!
//! Whoever holds the code can join as that handle, once, before it
//! expires: it must travel like a password (in person, or over a channel
//! the admin trusts).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use sotto_proto::Message as _;
use sotto_proto::client::{Invite, InviteCert, SignedInviteCert};
use zeroize::Zeroizing;

use super::directory::{Directory, TeamSecrets};
use super::tags;

/// Prefix that makes an invite code recognisable.
pub const INVITE_PREFIX: &str = "sotto-invite:";
const INVITE_VERSION: u32 = 1;

/// An invite code could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    /// Not an invite code at all.
    #[error("this is not a sotto invite code (it should start with \"{INVITE_PREFIX}\")")]
    NotAnInvite,
    /// Not a device-link code.
    #[error(
        "this is not a sotto device-link code (it should start with \"sotto-link:\"); run `sotto device add` on one of your devices"
    )]
    NotALink,
    /// A link code too old.
    #[error("the device-link code expired; run `sotto device add` again")]
    LinkExpired,
    /// A device invite without a link code.
    #[error(
        "this is a device invite: it gives relay access only. Run `sotto device add` on one of your devices and join with `sotto join CODE --link LINK_CODE`"
    )]
    LinkNeeded,
    /// Damaged in transit.
    #[error("the invite code is damaged ({0}); ask your admin to send it again")]
    Malformed(&'static str),
    /// Its certificate is not signed by the team key it names.
    #[error("the invite code's certificate does not verify; it was altered")]
    BadCertificate,
    /// Too late.
    #[error("the invite for \"{handle}\" expired; ask your admin for a new one")]
    Expired {
        /// The invited handle.
        handle: String,
    },
    /// A newer format.
    #[error("the invite code has version {0}, which this sotto does not understand; update sotto")]
    UnsupportedVersion(u32),
    /// The handle is not acceptable.
    #[error(
        "\"{0}\" is not a valid handle: use 1 to 32 lowercase letters, digits, '.', '-' or '_'"
    )]
    BadHandle(String),
}

/// Checks a handle: 1 to 32 of `a-z 0-9 . - _`.
pub(crate) fn validate_handle(handle: &str) -> Result<(), InviteError> {
    let ok = (1..=32).contains(&handle.len())
        && handle
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(InviteError::BadHandle(handle.to_owned()))
    }
}

/// An invite as the admin keeps it.
pub struct IssuedInvite {
    /// The `sotto-invite:` code to hand over.
    pub code: String,
    /// The invited handle.
    pub handle: String,
    /// The invite key: it owns the member's directory slot (the admin uses
    /// it to pre-claim the slot).
    pub invite_key: SigningKey,
    /// The team-signed certificate.
    pub cert: SignedInviteCert,
    /// SHA-256 of the registration token, which names the member's relay
    /// account for revocation.
    pub registration_token_hash: [u8; 32],
}

/// A verified invite, as the joining device reads it.
pub struct ParsedInvite {
    /// Team name.
    pub team_name: String,
    /// The handle the invite is for.
    pub handle: String,
    /// Relay `host:port`.
    pub relay_addr: String,
    /// Pinned relay certificate fingerprint.
    pub relay_fingerprint: [u8; 32],
    /// The directory (K_dir and T).
    pub directory: Directory,
    /// The team-signed certificate.
    pub cert: SignedInviteCert,
    /// The invite key (owns the member's slot).
    pub invite_key: SigningKey,
    /// Single-use relay registration token.
    pub registration_token: Zeroizing<Vec<u8>>,
    /// The relay's token issuer key, as the team pinned it.
    pub issuer_key: [u8; 32],
    /// Expiry, unix seconds.
    pub expires_at: u64,
    /// A device invite (`sotto invite HANDLE --device`): relay access for
    /// one more device of a joined member, and nothing else. Its
    /// `invite_key` is a throwaway: the code carries no invite secret.
    pub device: bool,
}

impl ParsedInvite {
    /// The invite code again, in its one canonical form: a code that
    /// parses gives back exactly this (less surrounding whitespace).
    pub fn code(&self) -> String {
        let invite = Invite {
            version: INVITE_VERSION,
            team_name: self.team_name.clone(),
            relay_addr: self.relay_addr.clone(),
            relay_fingerprint: self.relay_fingerprint.to_vec().into(),
            dir_key: self.directory.dir_key().to_vec().into(),
            cert: Some(self.cert.clone()),
            invite_secret: if self.device {
                Default::default()
            } else {
                self.invite_key.to_bytes().to_vec().into()
            },
            registration_token: self.registration_token.to_vec().into(),
            issuer_key: self.issuer_key.to_vec().into(),
            device: self.device,
        };
        let encoded = Zeroizing::new(invite.encode_to_vec());
        format!(
            "{INVITE_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(encoded.as_slice())
        )
    }
}

/// The parameters of one invite.
pub struct InviteParams<'a> {
    /// Team name shown to the new member.
    pub team_name: &'a str,
    /// The handle the member will have.
    pub handle: &'a str,
    /// Unix seconds after which the code no longer works.
    pub expires_at: u64,
    /// Relay `host:port`.
    pub relay_addr: &'a str,
    /// Relay certificate fingerprint.
    pub relay_fingerprint: [u8; 32],
    /// A fresh single-use registration token from the relay.
    pub registration_token: &'a [u8],
    /// The relay's token issuer key.
    pub issuer_key: [u8; 32],
    /// A device invite: relay access only (see [`ParsedInvite::device`]).
    pub device: bool,
}

/// Mints an invite: a fresh invite key, a certificate signed by `T`, the
/// code.
pub fn issue_invite(
    team: &TeamSecrets,
    params: &InviteParams<'_>,
) -> Result<IssuedInvite, InviteError> {
    validate_handle(params.handle)?;
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).expect("invariant: the OS random number generator works");
    let invite_key = SigningKey::from_bytes(&seed);
    let cert = InviteCert {
        team_key: team.team.verifying_key().as_bytes().to_vec().into(),
        handle: params.handle.to_owned(),
        invite_key: invite_key.verifying_key().as_bytes().to_vec().into(),
        expires_at: params.expires_at,
    }
    .encode_to_vec();
    let signature = team.team.sign(&[tags::INVITE_CERT, &cert].concat());
    let cert = SignedInviteCert {
        cert: cert.into(),
        signature: signature.to_bytes().to_vec().into(),
    };
    let invite = Invite {
        version: INVITE_VERSION,
        team_name: params.team_name.to_owned(),
        relay_addr: params.relay_addr.to_owned(),
        relay_fingerprint: params.relay_fingerprint.to_vec().into(),
        dir_key: team.dir_key.to_vec().into(),
        cert: Some(cert.clone()),
        invite_secret: if params.device {
            Default::default()
        } else {
            seed.to_vec().into()
        },
        registration_token: params.registration_token.to_vec().into(),
        issuer_key: params.issuer_key.to_vec().into(),
        device: params.device,
    };
    let encoded = Zeroizing::new(invite.encode_to_vec());
    Ok(IssuedInvite {
        code: format!(
            "{INVITE_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(encoded.as_slice())
        ),
        handle: params.handle.to_owned(),
        invite_key,
        cert,
        // The relay's own hash of the token (domain-separated), which names
        // the member's account in a revocation.
        registration_token_hash: sotto_proto::registration_token_hash(params.registration_token),
    })
}

fn key32(bytes: &[u8], what: &'static str) -> Result<[u8; 32], InviteError> {
    bytes.try_into().map_err(|_| InviteError::Malformed(what))
}

/// Parses and checks an invite code at `now_secs`.
pub fn parse_invite(code: &str, now_secs: u64) -> Result<ParsedInvite, InviteError> {
    let body = code
        .trim()
        .strip_prefix(INVITE_PREFIX)
        .ok_or(InviteError::NotAnInvite)?;
    let bytes = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(body.trim())
            .map_err(|_| InviteError::Malformed("not base64"))?,
    );
    let invite = crate::canonical::decode::<Invite>(&bytes)
        .ok_or(InviteError::Malformed("does not decode"))?;
    if invite.version != INVITE_VERSION {
        return Err(InviteError::UnsupportedVersion(invite.version));
    }
    let signed_cert = invite
        .cert
        .clone()
        .ok_or(InviteError::Malformed("no certificate"))?;
    let cert = crate::canonical::decode::<InviteCert>(&signed_cert.cert)
        .ok_or(InviteError::Malformed("certificate"))?;
    let team_key = ed25519_dalek::VerifyingKey::from_bytes(&key32(&cert.team_key, "team key")?)
        .map_err(|_| InviteError::Malformed("team key"))?;
    let signature = ed25519_dalek::Signature::from_bytes(
        &<[u8; 64]>::try_from(signed_cert.signature.as_ref())
            .map_err(|_| InviteError::BadCertificate)?,
    );
    team_key
        .verify_strict(&[tags::INVITE_CERT, &signed_cert.cert].concat(), &signature)
        .map_err(|_| InviteError::BadCertificate)?;
    let invite_key = if invite.device {
        // A device invite carries no invite secret: nothing it could sign.
        if !invite.invite_secret.is_empty() {
            return Err(InviteError::Malformed("invite key"));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).expect("invariant: the OS random number generator works");
        SigningKey::from_bytes(&seed)
    } else {
        let invite_key = SigningKey::from_bytes(&key32(&invite.invite_secret, "invite key")?);
        if invite_key.verifying_key().as_bytes().as_slice() != cert.invite_key.as_ref() {
            return Err(InviteError::BadCertificate);
        }
        invite_key
    };
    validate_handle(&cert.handle)?;
    if now_secs > cert.expires_at {
        return Err(InviteError::Expired {
            handle: cert.handle,
        });
    }
    Ok(ParsedInvite {
        team_name: invite.team_name,
        handle: cert.handle,
        relay_addr: invite.relay_addr,
        relay_fingerprint: key32(&invite.relay_fingerprint, "relay fingerprint")?,
        directory: Directory::new(key32(&invite.dir_key, "directory key")?, team_key),
        cert: signed_cert,
        invite_key,
        registration_token: Zeroizing::new(invite.registration_token.to_vec()),
        issuer_key: key32(&invite.issuer_key, "issuer key")?,
        expires_at: cert.expires_at,
        device: invite.device,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params<'a>(handle: &'a str) -> InviteParams<'a> {
        InviteParams {
            team_name: "acme",
            handle,
            expires_at: 1_000,
            relay_addr: "relay.example:7443",
            relay_fingerprint: [7; 32],
            registration_token: b"registration-token",
            issuer_key: [9; 32],
            device: false,
        }
    }

    #[test]
    fn an_invite_round_trips_and_carries_everything() {
        let team = TeamSecrets::generate();
        let issued = issue_invite(&team, &params("bob")).unwrap();
        assert!(issued.code.starts_with(INVITE_PREFIX));
        let parsed = parse_invite(&issued.code, 999).unwrap();
        assert_eq!(parsed.handle, "bob");
        assert_eq!(parsed.relay_addr, "relay.example:7443");
        assert_eq!(parsed.relay_fingerprint, [7; 32]);
        assert_eq!(parsed.issuer_key, [9; 32]);
        assert_eq!(parsed.registration_token.as_slice(), b"registration-token");
        assert_eq!(
            parsed.invite_key.verifying_key(),
            issued.invite_key.verifying_key()
        );
        assert_eq!(
            parsed.directory.user_slot("bob"),
            team.directory().user_slot("bob")
        );
    }

    #[test]
    fn expired_damaged_and_altered_codes_are_refused() {
        let team = TeamSecrets::generate();
        let issued = issue_invite(&team, &params("bob")).unwrap();
        assert!(matches!(
            parse_invite(&issued.code, 1_001),
            Err(InviteError::Expired { .. })
        ));
        assert!(matches!(
            parse_invite("hello", 0),
            Err(InviteError::NotAnInvite)
        ));
        let truncated = &issued.code[..issued.code.len() - 10];
        assert!(parse_invite(truncated, 0).is_err());
        // Another team's certificate in this code (a swapped cert).
        let other = issue_invite(&TeamSecrets::generate(), &params("bob")).unwrap();
        let mut invite = Invite::decode(
            URL_SAFE_NO_PAD
                .decode(&issued.code[INVITE_PREFIX.len()..])
                .unwrap()
                .as_slice(),
        )
        .unwrap();
        invite.cert = Some(other.cert.clone());
        let swapped = format!(
            "{INVITE_PREFIX}{}",
            URL_SAFE_NO_PAD.encode(invite.encode_to_vec())
        );
        assert!(matches!(
            parse_invite(&swapped, 0),
            Err(InviteError::BadCertificate)
        ));
    }

    #[test]
    fn handles_are_restricted() {
        let team = TeamSecrets::generate();
        for bad in ["", "Bob", "a b", "x".repeat(33).as_str(), "bob\n"] {
            assert!(
                matches!(
                    issue_invite(&team, &params(bad)),
                    Err(InviteError::BadHandle(_))
                ),
                "{bad:?}"
            );
        }
        assert!(issue_invite(&team, &params("bob.smith-2_x")).is_ok());
    }
}
