//! Interactive verification with a short authentication string (SAS,
//! `vodozemac::sas`), through the relay.
//!
//! Both members run the verification at about the same time. Each side
//! sends an ephemeral curve25519 key inside an Olm message; both derive the
//! same seven emoji (and three 4-digit numbers) from the shared secret and
//! *both* identity keys; the people compare them out of band. A side whose
//! user confirms sends a MAC of its identity key; a contact is marked
//! verified only when its user confirmed *and* the other side's MAC checks.
//! The emoji are those of the Matrix specification, so people who know
//! them from other apps recognise them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use vodozemac::Curve25519PublicKey;
use vodozemac::sas::{EstablishedSas, Mac, Sas};

/// Domain separation of the SAS bytes.
pub const SAS_INFO: &str = "sotto/sas/v1";
/// Domain separation of the SAS MACs.
pub const SAS_MAC_INFO: &str = "sotto/sas-mac/v1";

/// The 64 SAS emoji with their names (Matrix specification order).
pub const SAS_EMOJI: [(&str, &str); 64] = [
    ("🐶", "Dog"),
    ("🐱", "Cat"),
    ("🦁", "Lion"),
    ("🐎", "Horse"),
    ("🦄", "Unicorn"),
    ("🐷", "Pig"),
    ("🐘", "Elephant"),
    ("🐰", "Rabbit"),
    ("🐼", "Panda"),
    ("🐓", "Rooster"),
    ("🐧", "Penguin"),
    ("🐢", "Turtle"),
    ("🐟", "Fish"),
    ("🐙", "Octopus"),
    ("🦋", "Butterfly"),
    ("🌷", "Flower"),
    ("🌳", "Tree"),
    ("🌵", "Cactus"),
    ("🍄", "Mushroom"),
    ("🌏", "Globe"),
    ("🌙", "Moon"),
    ("☁️", "Cloud"),
    ("🔥", "Fire"),
    ("🍌", "Banana"),
    ("🍎", "Apple"),
    ("🍓", "Strawberry"),
    ("🌽", "Corn"),
    ("🍕", "Pizza"),
    ("🎂", "Cake"),
    ("❤️", "Heart"),
    ("😀", "Smiley"),
    ("🤖", "Robot"),
    ("🎩", "Hat"),
    ("👓", "Glasses"),
    ("🔧", "Spanner"),
    ("🎅", "Santa"),
    ("👍", "Thumbs Up"),
    ("☂️", "Umbrella"),
    ("⌛", "Hourglass"),
    ("⏰", "Clock"),
    ("🎁", "Gift"),
    ("💡", "Light Bulb"),
    ("📕", "Book"),
    ("✏️", "Pencil"),
    ("📎", "Paperclip"),
    ("✂️", "Scissors"),
    ("🔒", "Lock"),
    ("🔑", "Key"),
    ("🔨", "Hammer"),
    ("☎️", "Telephone"),
    ("🏁", "Flag"),
    ("🚂", "Train"),
    ("🚲", "Bicycle"),
    ("✈️", "Aeroplane"),
    ("🚀", "Rocket"),
    ("🏆", "Trophy"),
    ("⚽", "Ball"),
    ("🎸", "Guitar"),
    ("🎺", "Trumpet"),
    ("🔔", "Bell"),
    ("⚓", "Anchor"),
    ("🎧", "Headphones"),
    ("📁", "Folder"),
    ("📌", "Pin"),
];

/// What the two people compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SasCode {
    /// Seven emoji with their names.
    pub emoji: Vec<(&'static str, &'static str)>,
    /// Three numbers of four digits (1000–9191).
    pub decimals: (u16, u16, u16),
}

impl std::fmt::Display for SasCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (emoji, name) in &self.emoji {
            write!(f, "{emoji} {name}   ")?;
        }
        write!(
            f,
            "\n{} {} {}",
            self.decimals.0, self.decimals.1, self.decimals.2
        )
    }
}

/// One side of a party: handle, identity key, ephemeral SAS key.
pub(crate) struct Party<'a> {
    pub(crate) handle: &'a str,
    pub(crate) identity: [u8; 32],
    pub(crate) sas_key: [u8; 32],
}

fn b64(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

/// The info string both sides build identically: the parties sorted, so
/// neither needs to know who started.
fn info(a: &Party<'_>, b: &Party<'_>) -> String {
    let mut parties = [a, b];
    parties.sort_by(|x, y| (x.handle, x.identity).cmp(&(y.handle, y.identity)));
    let mut info = SAS_INFO.to_owned();
    for party in parties {
        info.push_str(&format!(
            "|{}|{}|{}",
            party.handle,
            b64(&party.identity),
            b64(&party.sas_key)
        ));
    }
    info
}

/// Our half of a verification in progress. Holds the ephemeral secret
/// only in memory; no `Debug`.
pub struct SasFlow {
    sas: Option<Sas>,
    established: Option<EstablishedSas>,
}

impl Default for SasFlow {
    fn default() -> Self {
        Self::new()
    }
}

impl SasFlow {
    /// A fresh ephemeral key.
    pub fn new() -> Self {
        Self {
            sas: Some(Sas::new()),
            established: None,
        }
    }

    /// The public key to send.
    pub fn public_key(&self) -> [u8; 32] {
        self.sas
            .as_ref()
            .map(|s| s.public_key().to_bytes())
            .or_else(|| {
                self.established
                    .as_ref()
                    .map(|e| e.our_public_key().to_bytes())
            })
            .unwrap_or_default()
    }

    /// Combines our key with theirs; returns the code to compare, or `None`
    /// for an invalid key.
    pub(crate) fn establish(&mut self, me: &Party<'_>, them: &Party<'_>) -> Option<SasCode> {
        let sas = self.sas.take()?;
        let established = sas
            .diffie_hellman(Curve25519PublicKey::from_bytes(them.sas_key))
            .ok()?;
        let bytes = established.bytes(&info(me, them));
        let emoji = bytes
            .emoji_indices()
            .iter()
            .map(|i| SAS_EMOJI[usize::from(*i) % 64])
            .collect();
        let decimals = bytes.decimals();
        self.established = Some(established);
        Some(SasCode { emoji, decimals })
    }

    /// The MAC that tells the other side my user confirmed.
    pub(crate) fn mac(&self, me: &Party<'_>) -> Option<Vec<u8>> {
        let established = self.established.as_ref()?;
        Some(
            established
                .calculate_mac(&b64(&me.identity), &format!("{SAS_MAC_INFO}|{}", me.handle))
                .as_bytes()
                .to_vec(),
        )
    }

    /// Checks the other side's MAC over its identity key.
    pub(crate) fn verify_mac(&self, them: &Party<'_>, mac: &[u8]) -> bool {
        self.established.as_ref().is_some_and(|established| {
            established
                .verify_mac(
                    &b64(&them.identity),
                    &format!("{SAS_MAC_INFO}|{}", them.handle),
                    &Mac::from_slice(mac),
                )
                .is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_derive_the_same_code_and_accept_each_others_mac() {
        let (mut alice, mut bob) = (SasFlow::new(), SasFlow::new());
        let a = |flow: &SasFlow| Party {
            handle: "alice",
            identity: [1; 32],
            sas_key: flow.public_key(),
        };
        let b = |flow: &SasFlow| Party {
            handle: "bob",
            identity: [2; 32],
            sas_key: flow.public_key(),
        };
        let (alice_me, bob_me) = (a(&alice), b(&bob));
        let code_a = alice.establish(&alice_me, &bob_me).unwrap();
        let code_b = bob.establish(&bob_me, &alice_me).unwrap();
        assert_eq!(code_a, code_b);
        assert_eq!(code_a.emoji.len(), 7);
        let mac = alice.mac(&alice_me).unwrap();
        assert!(bob.verify_mac(&alice_me, &mac));
        // A MAC claiming another identity does not verify.
        let mallory = Party {
            handle: "alice",
            identity: [9; 32],
            sas_key: alice_me.sas_key,
        };
        assert!(!bob.verify_mac(&mallory, &mac));
    }

    #[test]
    fn a_party_in_the_middle_yields_different_codes() {
        let (mut alice, mut bob, mut mitm_a, mut mitm_b) = (
            SasFlow::new(),
            SasFlow::new(),
            SasFlow::new(),
            SasFlow::new(),
        );
        let alice_me = Party {
            handle: "alice",
            identity: [1; 32],
            sas_key: alice.public_key(),
        };
        let bob_me = Party {
            handle: "bob",
            identity: [2; 32],
            sas_key: bob.public_key(),
        };
        // The attacker swaps in its own keys towards each side.
        let fake_bob = Party {
            handle: "bob",
            identity: [2; 32],
            sas_key: mitm_a.public_key(),
        };
        let fake_alice = Party {
            handle: "alice",
            identity: [1; 32],
            sas_key: mitm_b.public_key(),
        };
        let seen_by_alice = alice.establish(&alice_me, &fake_bob).unwrap();
        let seen_by_bob = bob.establish(&bob_me, &fake_alice).unwrap();
        let _ = (
            mitm_a.establish(&fake_bob, &alice_me),
            mitm_b.establish(&fake_alice, &bob_me),
        );
        assert_ne!(seen_by_alice, seen_by_bob);
    }
}
