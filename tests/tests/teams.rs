//! Teams over a real relay: invites, the encrypted directory, messaging by
//! handle, forged entries refused.
//!
//! Registration tokens and anonymous access tokens are the relay half of
//! the teams work and are exercised by the relay's token tests; here the
//! invites carry a placeholder registration token.
#![allow(clippy::unwrap_used)]

use sotto_core::team::{
    InviteParams, Membership, TeamError, TeamSecrets, build_entry, issue_invite, parse_invite,
};
use sotto_core::{RelayConnection, Status};
use sotto_relay::Clock as _;
use sotto_tests::{Member, TestRelay, relay_addr};

struct Admin {
    team: TeamSecrets,
    membership: Membership,
    member: Member,
}

fn params<'a>(relay: &TestRelay, handle: &'a str, expires_at: u64) -> InviteParams<'a> {
    InviteParams {
        team_name: "acme",
        handle,
        expires_at,
        relay_addr: "127.0.0.1:7443",
        relay_fingerprint: relay.fingerprint,
        registration_token: b"placeholder-registration-token",
        issuer_key: [0; 32],
        device: false,
    }
}

async fn create_team(relay: &TestRelay, conn: &RelayConnection) -> Admin {
    let team = TeamSecrets::generate();
    let now = relay.clock.now_secs();
    let own = issue_invite(&team, &params(relay, "admin", now + 3600)).unwrap();
    let parsed = parse_invite(&own.code, now).unwrap();
    let relay_admin = ed25519_dalek::SigningKey::from_bytes(&[77; 32]);
    let mut membership = Membership::for_admin(&team, &parsed, &relay_admin);
    membership.preclaim(conn, &own).await.unwrap();
    let member = Member::new("admin", relay);
    membership
        .publish_entry(conn, member.client.engine())
        .await
        .unwrap();
    Admin {
        team,
        membership,
        member,
    }
}

/// A relay, a connection to it, and a team whose roster is just its admin.
async fn team() -> (TestRelay, RelayConnection, Admin, Vec<String>) {
    let relay = TestRelay::start().await;
    let conn = RelayConnection::connect(&relay_addr(&relay), None)
        .await
        .unwrap();
    let admin = create_team(&relay, &conn).await;
    (relay, conn, admin, vec!["admin".to_owned()])
}

/// The admin invites `handle`: a certificate, the pre-claimed slot, the
/// handle on the roster. Returns the invite and the time it was issued.
async fn invite(
    relay: &TestRelay,
    conn: &RelayConnection,
    admin: &mut Admin,
    handle: &str,
    roster: &mut Vec<String>,
) -> (sotto_core::team::IssuedInvite, u64) {
    let now = relay.clock.now_secs();
    let issued = issue_invite(&admin.team, &params(relay, handle, now + 7 * 86_400)).unwrap();
    admin.membership.preclaim(conn, &issued).await.unwrap();
    roster.push(handle.to_owned());
    admin.membership.publish_roster(conn, roster).await.unwrap();
    (issued, now)
}

/// The admin invites `handle`; the new member joins with the code.
async fn invite_and_join(
    relay: &TestRelay,
    conn: &RelayConnection,
    admin: &mut Admin,
    handle: &str,
    roster: &mut Vec<String>,
) -> (Membership, Member) {
    let (issued, now) = invite(relay, conn, admin, handle, roster).await;
    let parsed = parse_invite(&issued.code, now).unwrap();
    assert_eq!(parsed.handle, handle);
    let mut membership = Membership::from_invite(&parsed);
    let member = Member::new(handle, relay);
    membership
        .publish_entry(conn, member.client.engine())
        .await
        .unwrap();
    (membership, member)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_invites_three_members_and_everyone_messages_everyone_by_handle() {
    let (relay, conn, mut admin, mut roster) = team().await;
    let mut members = Vec::new();
    for handle in ["alice", "bob", "carol"] {
        members.push(invite_and_join(&relay, &conn, &mut admin, handle, &mut roster).await);
    }
    members.push((admin.membership, admin.member));
    let handles: Vec<String> = members.iter().map(|(m, _)| m.handle.clone()).collect();

    for (membership, member) in &mut members {
        for peer in &handles {
            if *peer == membership.handle {
                continue;
            }
            membership
                .add_member_contact(&conn, member.client.engine_mut(), peer)
                .await
                .unwrap();
            let text = format!("{} -> {peer}", membership.handle);
            member.client.send_text(peer, &text).await.unwrap();
        }
    }
    for (membership, member) in &mut members {
        let report = member.client.sync().await.unwrap();
        let mut got: Vec<String> = report.messages.iter().map(|m| m.text.clone()).collect();
        got.sort();
        let mut expected: Vec<String> = handles
            .iter()
            .filter(|h| **h != membership.handle)
            .map(|h| format!("{h} -> {}", membership.handle))
            .collect();
        expected.sort();
        assert_eq!(
            got, expected,
            "{} got every member's message once",
            membership.handle
        );
    }
    // Delivered receipts flow back by handle too.
    for (_, member) in &mut members {
        member.client.sync().await.unwrap();
    }
    let (alice_membership, alice) = &members[0];
    assert_eq!(alice_membership.handle, "alice");
    let to_bob = alice.client.engine().history("bob").unwrap();
    assert!(
        to_bob
            .iter()
            .filter(|m| m.from_me)
            .all(|m| m.status == Status::Delivered)
    );
    relay.stop().await;
}

#[tokio::test]
async fn forged_directory_entries_and_strangers_are_refused() {
    let (relay, conn, mut admin, mut roster) = team().await;
    let (mut bob_membership, _bob) =
        invite_and_join(&relay, &conn, &mut admin, "bob", &mut roster).await;

    // Mallory is invited properly, then abuses her own slot: a valid owner
    // key, but an entry whose user key her invite never vouched for.
    let (issued, now) = invite(&relay, &conn, &mut admin, "mallory", &mut roster).await;
    let parsed = parse_invite(&issued.code, now).unwrap();
    let directory = parsed.directory.clone();
    let slot = directory.user_slot("mallory");
    let rogue_user = ed25519_dalek::SigningKey::from_bytes(&[66; 32]);
    let card = Member::new("mallory", &relay).client.engine().signed_card();
    let wrong_chain = build_entry(
        &parsed.cert,
        "mallory",
        &rogue_user,
        &rogue_user,
        1,
        &[card],
    );
    let value = directory
        .seal_value(&slot, &wrong_chain)
        .unwrap()
        .into_bytes();
    conn.slot_put(&slot, 2, value, &parsed.invite_key)
        .await
        .unwrap();
    let error = bob_membership.resolve(&conn, "mallory").await.unwrap_err();
    assert!(matches!(error, TeamError::Directory(_)), "{error}");
    assert!(error.to_string().contains("mallory"), "{error}");

    // A swapped handle: mallory copies bob's genuine entry into her slot.
    let bob_slot = directory.user_slot("bob");
    let (_, bob_value) = conn.slot_get(&bob_slot).await.unwrap().unwrap();
    let bob_entry = directory.open_value(&bob_slot, &bob_value).unwrap();
    let swapped = directory
        .seal_value(&slot, &bob_entry)
        .unwrap()
        .into_bytes();
    conn.slot_put(&slot, 3, swapped, &parsed.invite_key)
        .await
        .unwrap();
    let error = bob_membership.resolve(&conn, "mallory").await.unwrap_err();
    assert!(error.to_string().contains("for another handle"), "{error}");

    // Nobody but bob's invite key can write bob's slot.
    let overwrite = directory
        .seal_value(&bob_slot, &bob_entry)
        .unwrap()
        .into_bytes();
    assert!(
        conn.slot_put(&bob_slot, 99, overwrite, &parsed.invite_key)
            .await
            .is_err()
    );

    // A handle that is not on the roster is not a member, whatever its slot holds.
    let error = bob_membership.resolve(&conn, "eve").await.unwrap_err();
    assert!(
        matches!(error, TeamError::NotAMember(ref h) if h == "eve"),
        "{error}"
    );
    // Invited but not joined.
    invite(&relay, &conn, &mut admin, "dave", &mut roster).await;
    let error = bob_membership.resolve(&conn, "dave").await.unwrap_err();
    assert!(matches!(error, TeamError::NotJoined(_)), "{error}");
    // Bob still resolves the admin fine.
    assert_eq!(
        bob_membership
            .resolve(&conn, "admin")
            .await
            .unwrap()
            .devices
            .len(),
        1
    );
    relay.stop().await;
}

#[tokio::test]
async fn an_expired_invite_is_refused_with_a_clear_error() {
    let relay = TestRelay::start().await;
    let team = TeamSecrets::generate();
    let now = relay.clock.now_secs();
    let issued = issue_invite(&team, &params(&relay, "late", now + 60)).unwrap();
    let error = parse_invite(&issued.code, now + 61).err().unwrap();
    assert!(error.to_string().contains("expired"), "{error}");
    relay.stop().await;
}

#[tokio::test]
async fn after_joining_a_copy_of_the_invite_code_cannot_rewrite_the_members_entry() {
    let (relay, conn, mut admin, mut roster) = team().await;
    let (issued, now) = invite(&relay, &conn, &mut admin, "erin", &mut roster).await;

    // Erin joins: her first publication takes the slot from the invite key.
    let parsed = parse_invite(&issued.code, now).unwrap();
    let mut erin = Membership::from_invite(&parsed);
    let device = Member::new("erin", &relay);
    erin.publish_entry(&conn, device.client.engine())
        .await
        .unwrap();

    // Whoever kept a copy of the code holds the invite key, and it no
    // longer owns the slot.
    let directory = parsed.directory.clone();
    let slot = directory.user_slot("erin");
    let forged = directory.seal_value(&slot, b"forged").unwrap().into_bytes();
    let error = conn
        .slot_put(&slot, 99, forged, &parsed.invite_key)
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(sotto_proto::wire::ErrorCode::SlotWrongOwner),
        "{error}"
    );

    // Erin herself still updates her entry, and it still verifies.
    erin.publish_entry(&conn, device.client.engine())
        .await
        .unwrap();
    let mut bob_view = admin.membership;
    assert_eq!(
        bob_view.resolve(&conn, "erin").await.unwrap().devices.len(),
        1
    );
    relay.stop().await;
}

/// Issue 18 item 6: the roster, signed by `T`, names the relay's token
/// issuer key and period. A member takes the period from it, and refuses a
/// roster naming another issuer key than its invite pinned (a relay that
/// shows it a key of its own to tag its tokens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_takes_the_token_issuer_from_the_roster_and_refuses_another_key() {
    use sotto_core::team::TokenIssuer;
    let (relay, conn, mut admin, mut roster) = team().await;
    let (mut bob, _device) = invite_and_join(&relay, &conn, &mut admin, "bob", &mut roster).await;
    let pinned = TokenIssuer {
        issuer_key: [0; 32],
        period_secs: 86_400,
    };
    admin.membership.set_token_issuer(pinned);
    admin
        .membership
        .publish_roster(&conn, &roster)
        .await
        .unwrap();
    bob.roster(&conn).await.unwrap();
    assert_eq!(bob.token_issuer(), Some(pinned));

    admin.membership.set_token_issuer(TokenIssuer {
        issuer_key: [9; 32],
        period_secs: 86_400,
    });
    admin
        .membership
        .publish_roster(&conn, &roster)
        .await
        .unwrap();
    assert!(matches!(
        bob.roster(&conn).await,
        Err(TeamError::IssuerKeyMismatch)
    ));
    relay.stop().await;
}
