//! More than one admin (issue 18 item 15, DESIGN §6 "Admins"): a member
//! named admin invites and revokes like the first admin; every admin
//! action lands in the admin log, signed by its actor; a non-admin can
//! neither read the log nor act as admin; removing an admin takes effect;
//! the last admin stays.
#![allow(clippy::unwrap_used)]

use sotto_core::team::{AdminLogError, AdminLogLine, TeamError, sign_log_entry};
use sotto_core::{App, AppError};
use sotto_proto::Message as _;
use sotto_proto::client::{AdminLogEntry, SignedAdminLogEntry};
use sotto_tests::teams::{join, team, tokens_relay};

/// The valid entries of `app`'s admin log, oldest first, as
/// (actor, action, subject); panics on a refused one.
async fn actions(app: &mut App) -> Vec<(String, String, String)> {
    let mut lines = app.admin_log().await.unwrap();
    lines.reverse();
    lines
        .into_iter()
        .map(|line| match line {
            AdminLogLine::Valid(a) => (a.actor, a.action, a.subject),
            AdminLogLine::Refused { index, reason } => panic!("entry {index} refused: {reason}"),
        })
        .collect()
}

fn entry(actor: &str, action: &str, subject: &str) -> (String, String, String) {
    (actor.into(), action.into(), subject.into())
}

fn is_not_admin<T: std::fmt::Debug>(result: Result<T, AppError>) -> bool {
    matches!(result, Err(AppError::Team(TeamError::NotAdmin)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_admin_invites_and_revokes_and_the_log_names_each_actor() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, joined) = team(&relay, homes.path(), &["bob"]).await;
    let [mut bob] = <[App; 1]>::try_from(joined).ok().unwrap();
    assert!(is_not_admin(bob.invite("dave", 3600).await));

    admin.admin_add("bob").await.unwrap();
    assert_eq!(admin.admins().await.unwrap(), ["admin", "bob"]);
    bob.sync().await.unwrap();
    assert!(bob.is_admin(), "bob's device took the grant");
    assert!(
        bob.take_notices()
            .unwrap()
            .iter()
            .any(|n| n.contains("made you a team admin")),
    );

    // Carol is invited by the first admin after bob's grant: bob learns
    // her relay account from the admin log alone.
    let mut carol = join(&mut admin, homes.path(), "carol", &relay).await;
    // Bob invites dave, who joins and finds everyone.
    let mut dave = join(&mut bob, homes.path(), "dave", &relay).await;
    dave.send("admin", "hello from dave").await.unwrap();
    // Bob revokes carol: she loses relay access and the directory moves.
    carol.send("bob", "before").await.unwrap();
    bob.revoke("carol").await.unwrap();
    assert!(carol.sync().await.is_err(), "carol still reaches the relay");
    for member in [&mut admin, &mut dave] {
        member.sync().await.unwrap();
        assert_eq!(member.directory_version(), 1, "{} moved", member.handle());
        assert_eq!(member.members().await.unwrap(), ["admin", "bob", "dave"]);
    }

    let expected = vec![
        entry("admin", "team-created", "admin"),
        entry("admin", "invite", "bob"),
        entry("admin", "admin-add", "bob"),
        entry("admin", "invite", "carol"),
        entry("bob", "invite", "dave"),
        entry("bob", "revoke", "carol"),
        entry("bob", "dir-key-rotated", "version 1"),
    ];
    assert_eq!(
        actions(&mut admin).await,
        expected,
        "the first admin's view"
    );
    assert_eq!(actions(&mut bob).await, expected, "the second admin's view");
    // Newest first, as `sotto admin log` prints it.
    let newest = admin.admin_log().await.unwrap();
    assert!(
        matches!(&newest[0], AdminLogLine::Valid(a) if a.action == "dir-key-rotated" && a.index == 6)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_read_the_admin_log_or_act_as_admin() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, joined) = team(&relay, homes.path(), &["bob", "carol"]).await;
    let [mut bob, _carol] = <[App; 2]>::try_from(joined).ok().unwrap();
    assert!(is_not_admin(bob.admin_log().await));
    assert!(is_not_admin(bob.invite("eve", 3600).await));
    assert!(is_not_admin(bob.invite_device("carol", 3600).await));
    assert!(is_not_admin(bob.revoke("carol").await));
    assert!(is_not_admin(bob.admin_add("bob").await));
    assert!(is_not_admin(bob.admin_remove("admin").await));
    assert_eq!(actions(&mut admin).await.len(), 3);

    // The log's first slot holds an entry; what bob holds opens none of
    // it: his directory key does not, and a team key other than T does
    // not (bob holds no T at all).
    let keys = admin.membership().admin_log_keys().unwrap();
    let slot = keys.slot(0);
    let conn = bob.client().connect().await.unwrap();
    let (_, value) = conn.slot_get(&slot).await.unwrap().unwrap();
    conn.close().await;
    assert!(
        bob.membership()
            .directory()
            .unwrap()
            .open_value(&slot, &value)
            .is_err()
    );
    let other = sotto_core::team::AdminLog::new(&sotto_core::team::TeamSecrets::generate());
    assert!(matches!(
        other.open(0, &value, |_, _| true),
        AdminLogLine::Refused {
            reason: AdminLogError::Undecryptable,
            ..
        }
    ));
    assert!(matches!(
        keys.open(0, &value, |_, _| true),
        AdminLogLine::Valid(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_admin_takes_effect_and_the_last_admin_cannot_be_removed() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, joined) = team(&relay, homes.path(), &["bob", "carol"]).await;
    let [mut bob, mut carol] = <[App; 2]>::try_from(joined).ok().unwrap();

    let last = admin.admin_remove("admin").await;
    assert!(
        matches!(&last, Err(AppError::Team(TeamError::LastAdmin(h))) if h == "admin"),
        "{last:?}"
    );
    assert!(last.unwrap_err().to_string().contains("last admin"));
    assert!(matches!(
        admin.admin_remove("bob").await,
        Err(AppError::Team(TeamError::NotAnAdmin(_)))
    ));

    admin.admin_add("bob").await.unwrap();
    bob.sync().await.unwrap();
    assert!(bob.is_admin());
    admin.admin_remove("bob").await.unwrap();
    bob.sync().await.unwrap();
    assert!(!bob.is_admin(), "bob's device still holds T");
    assert!(is_not_admin(bob.invite("eve", 3600).await));
    assert!(is_not_admin(bob.admin_log().await));
    assert_eq!(bob.admins().await.unwrap(), ["admin"]);

    // Stepping down works once another admin is there.
    admin.admin_add("carol").await.unwrap();
    carol.sync().await.unwrap();
    admin.admin_remove("admin").await.unwrap();
    assert!(!admin.is_admin(), "the admin stepped down at once");
    assert!(matches!(
        carol.admin_remove("carol").await,
        Err(AppError::Team(TeamError::LastAdmin(_)))
    ));
    // Revoking an admin ends their role with their membership.
    carol.admin_add("bob").await.unwrap();
    bob.sync().await.unwrap();
    carol.revoke("bob").await.unwrap();
    assert_eq!(carol.admins().await.unwrap(), ["carol"]);
    let log = actions(&mut carol).await;
    assert_eq!(
        &log[log.len() - 5..],
        [
            entry("admin", "admin-add", "carol"),
            entry("admin", "admin-remove", "admin"),
            entry("carol", "admin-add", "bob"),
            entry("carol", "revoke", "bob"),
            entry("carol", "dir-key-rotated", "version 1"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_or_unsigned_admin_log_entry_is_refused_not_shown() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, _joined) = team(&relay, homes.path(), &["bob"]).await;
    let keys = admin.membership().admin_log_keys().unwrap();

    // Bytes that are no sealed value (a relay's own blob).
    let garbage = vec![0x5a; 1024];
    let i_garbage = admin.write_raw_admin_log(&garbage).await.unwrap();
    // A well-sealed entry claiming to be the admin's, signed by a key
    // that is not the admin's user key.
    let forger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let body = |index| AdminLogEntry {
        at: 1,
        actor: "admin".into(),
        action: "revoke".into(),
        subject: "bob".into(),
        index,
        ..Default::default()
    };
    let forged = sign_log_entry(&forger, &body(i_garbage + 1));
    let sealed = keys.seal(&keys.slot(i_garbage + 1), &forged).unwrap();
    let i_forged = admin.write_raw_admin_log(sealed.as_bytes()).await.unwrap();
    // An unsigned entry.
    let unsigned = SignedAdminLogEntry {
        entry: body(i_forged + 1).encode_to_vec().into(),
        user_key: forger.verifying_key().as_bytes().to_vec().into(),
        signature: Default::default(),
    }
    .encode_to_vec();
    let sealed = keys.seal(&keys.slot(i_forged + 1), &unsigned).unwrap();
    let i_unsigned = admin.write_raw_admin_log(sealed.as_bytes()).await.unwrap();
    // A real action after them is still valid.
    admin.invite("carol", 3600).await.unwrap();

    let mut lines = admin.admin_log().await.unwrap();
    lines.reverse();
    let refused = |index: u64| {
        lines.iter().find_map(|line| match line {
            AdminLogLine::Refused { index: i, reason } if *i == index => Some(reason.clone()),
            _ => None,
        })
    };
    assert_eq!(refused(i_garbage), Some(AdminLogError::Undecryptable));
    assert_eq!(
        refused(i_forged),
        Some(AdminLogError::NotTheActor("admin".into()))
    );
    assert_eq!(refused(i_unsigned), Some(AdminLogError::BadSignature));
    assert!(
        refused(i_unsigned)
            .unwrap()
            .to_string()
            .contains("signature does not verify")
    );
    let valid: Vec<String> = lines
        .iter()
        .filter_map(|line| match line {
            AdminLogLine::Valid(a) => Some(format!("{} {}", a.action, a.subject)),
            AdminLogLine::Refused { .. } => None,
        })
        .collect();
    assert_eq!(valid, ["team-created admin", "invite bob", "invite carol"]);

    // A log longer than one read batch (32 slots) is read to its end.
    let before = lines.len() as u64;
    admin.write_raw_admin_log_n(&garbage, 70).await.unwrap();
    admin.invite("dave", 3600).await.unwrap();
    let lines = admin.admin_log().await.unwrap();
    assert_eq!(lines.len() as u64, before + 71);
    assert!(
        matches!(&lines[0], AdminLogLine::Valid(a) if a.subject == "dave" && a.index == before + 70)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_is_taken_only_when_the_roster_names_sender_and_receiver_admin() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, joined) = team(&relay, homes.path(), &["bob", "carol"]).await;
    let [mut bob, mut carol] = <[App; 2]>::try_from(joined).ok().unwrap();
    let grant = admin.membership().admin_grant().unwrap();
    let now = sotto_relay::Clock::now_millis(&relay.clock);

    // The real T, sent by an admin, to a member the roster does not name.
    admin.ensure_contact("carol").await.unwrap();
    admin
        .client()
        .engine_mut()
        .queue_admin_grant("carol", grant.clone(), now)
        .unwrap();
    admin.sync().await.unwrap();
    // The real T again, sent by a member who is no admin (who got hold of
    // it), to a member later named admin.
    bob.ensure_contact("carol").await.unwrap();
    bob.client()
        .engine_mut()
        .queue_admin_grant("carol", grant, now)
        .unwrap();
    bob.sync().await.unwrap();
    carol.sync().await.unwrap();
    assert!(!carol.is_admin(), "a grant without the roster was taken");
    assert!(is_not_admin(carol.admin_log().await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_who_missed_another_admins_revocation_catches_up_before_revoking() {
    let relay = tokens_relay().await;
    let homes = tempfile::tempdir().unwrap();
    let (mut admin, joined) = team(&relay, homes.path(), &["bob", "carol", "dave", "erin"]).await;
    let [mut bob, mut carol, mut dave, mut erin] = <[App; 4]>::try_from(joined).ok().unwrap();
    admin.admin_add("bob").await.unwrap();
    bob.sync().await.unwrap();
    // The first admin revokes carol (directory key version 1); bob's
    // device has not synced since.
    admin.revoke("carol").await.unwrap();
    assert_eq!(bob.directory_version(), 0);
    bob.revoke("dave").await.unwrap();
    assert_eq!(bob.directory_version(), 2, "bob took version 1 first");
    for member in [&mut admin, &mut erin] {
        member.sync().await.unwrap();
        assert_eq!(member.directory_version(), 2, "{}", member.handle());
        assert_eq!(member.members().await.unwrap(), ["admin", "bob", "erin"]);
    }
    assert!(carol.sync().await.is_err());
    assert!(dave.sync().await.is_err());
}
