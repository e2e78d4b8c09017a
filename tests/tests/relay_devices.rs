//! A member's devices on the relay, without the admin (DESIGN §8
//! "Devices"): a registered device mints a registration token for a new
//! device of its member, a device's revocation secret ends its relay
//! access, and nothing the relay stores links the two devices (DESIGN §2).
//! Real QUIC on loopback, real sled, the real client functions.
#![allow(clippy::unwrap_used)]

#[path = "relay_support/mod.rs"]
mod support;

use ed25519_dalek::VerifyingKey;
use sotto_core::{
    IssuanceAccount, RegistrationToken, RelayConnection, RevocationSecret, TokenError,
    mint_device_registration, mint_registrations, refill, register, register_device, revoke_device,
};
use sotto_proto::wire::ErrorCode;
use support::{
    DAY, T0, TestRelay, admin_key, bootstrapped, code_of, connect, contains, stop_and_keep_db,
    token_relay, with_token,
};

/// One device: its issuance account, its revocation secret and the
/// registration token it registered with.
struct Device {
    account: IssuanceAccount,
    revocation: RevocationSecret,
    registration: RegistrationToken,
}

/// Registers a device with `registration` and a fresh revocation secret.
async fn device(relay: &TestRelay, registration: RegistrationToken) -> Device {
    let account = IssuanceAccount::generate().unwrap();
    let revocation = RevocationSecret::generate().unwrap();
    register_device(&connect(relay).await, &registration, &account, &revocation)
        .await
        .unwrap();
    Device {
        account,
        revocation,
        registration,
    }
}

/// A member's first device, invited by the admin.
async fn invited(admin: &RelayConnection, relay: &TestRelay) -> Device {
    let token = mint_registrations(admin, &admin_key(), 1, T0 + 7 * DAY)
        .await
        .unwrap()
        .remove(0);
    device(relay, token).await
}

/// A member's first device (invited by the admin) and a second one it
/// gave relay access to, on a bare connection (no access token) that the
/// test may go on using; with the relay's issuer key.
struct Pair {
    issuer: VerifyingKey,
    admin: RelayConnection,
    first: Device,
    second: Device,
    bare: RelayConnection,
}

async fn member_with_two_devices(relay: &TestRelay) -> Pair {
    let (issuer, admin) = bootstrapped(relay).await;
    let first = invited(&admin, relay).await;
    let bare = connect(relay).await;
    let token = mint_device_registration(&bare, &first.account, T0 + DAY)
        .await
        .unwrap();
    let second = device(relay, token).await;
    Pair {
        issuer,
        admin,
        first,
        second,
        bare,
    }
}

/// Proves `device` can fetch a token and open a connection with it.
async fn has_access(relay: &TestRelay, issuer: &VerifyingKey, device: &Device) {
    let tokens = refill(&connect(relay).await, &device.account, issuer, 1)
        .await
        .unwrap();
    with_token(relay, &tokens[0])
        .await
        .unwrap()
        .ping()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_device_gives_a_new_device_of_its_member_relay_access() {
    let relay = token_relay().await;
    // The second device's token is minted on a connection without an
    // access token, like a device that has none.
    let Pair {
        issuer,
        first,
        second,
        bare,
        ..
    } = member_with_two_devices(&relay).await;
    has_access(&relay, &issuer, &second).await;
    has_access(&relay, &issuer, &first).await;

    // Single-use like any registration token.
    let third = IssuanceAccount::generate().unwrap();
    assert!(matches!(
        register(&bare, &second.registration, &third).await,
        Err(TokenError::InviteUsed)
    ));
    // And it expires: the relay caps a device token at a week (then rounds
    // up to its one-day period) whatever the device asks for.
    let late = mint_device_registration(&bare, &first.account, T0 + 365 * DAY)
        .await
        .unwrap();
    relay.clock.advance_secs(9 * DAY);
    assert!(matches!(
        register(&bare, &late, &third).await,
        Err(TokenError::InviteExpired)
    ));
    relay.stop().await;
}

#[tokio::test]
async fn an_account_mints_only_up_to_its_cap_and_only_while_registered() {
    let relay = TestRelay::start_with(|c| {
        c.tokens.require_tokens = true;
        c.tokens.max_device_registrations = 2;
    })
    .await;
    let (_, admin) = bootstrapped(&relay).await;
    let first = invited(&admin, &relay).await;
    let other = invited(&admin, &relay).await;
    let conn = connect(&relay).await;
    for _ in 0..2 {
        mint_device_registration(&conn, &first.account, T0 + DAY)
            .await
            .unwrap();
    }
    assert!(matches!(
        mint_device_registration(&conn, &first.account, T0 + DAY).await,
        Err(TokenError::DeviceRegistrationsExhausted)
    ));
    // The cap is per account.
    mint_device_registration(&conn, &other.account, T0 + DAY)
        .await
        .unwrap();
    // An account the relay does not know mints nothing.
    let stranger = IssuanceAccount::generate().unwrap();
    assert!(matches!(
        mint_device_registration(&conn, &stranger, T0 + DAY).await,
        Err(TokenError::AccountUnknown)
    ));
    // Nor does a revoked one.
    revoke_device(&conn, &other.revocation).await.unwrap();
    assert!(matches!(
        mint_device_registration(&conn, &other.account, T0 + DAY).await,
        Err(TokenError::Revoked)
    ));
    // The count survives a restart.
    let mut relay = relay;
    relay.restart().await;
    assert!(matches!(
        mint_device_registration(&connect(&relay).await, &first.account, T0 + DAY).await,
        Err(TokenError::DeviceRegistrationsExhausted)
    ));
    relay.stop().await;
}

#[tokio::test]
async fn with_self_service_off_the_relay_says_so_and_names_the_way_out() {
    let relay = TestRelay::start_with(|c| {
        c.tokens.require_tokens = true;
        c.tokens.self_service_devices = false;
    })
    .await;
    let (_, admin) = bootstrapped(&relay).await;
    let first = invited(&admin, &relay).await;
    let refused = mint_device_registration(&connect(&relay).await, &first.account, T0 + DAY).await;
    let Err(error @ TokenError::SelfServiceDisabled) = refused else {
        panic!("expected SelfServiceDisabled");
    };
    assert!(
        error.to_string().contains("sotto invite HANDLE --device"),
        "{error}"
    );
    relay.stop().await;
}

/// `sotto-relay --no-self-service-devices` turns it off (the binary, not
/// the library's config).
#[tokio::test]
async fn the_no_self_service_devices_flag_turns_it_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut process =
        support::spawn_relay_with_args(dir.path(), "", &["--no-self-service-devices"]);
    let conn = RelayConnection::connect(&process.addr, None).await.unwrap();
    let code = sotto_relay::read_bootstrap_code(dir.path())
        .unwrap()
        .unwrap();
    sotto_core::bootstrap(&conn, &code, &admin_key())
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = mint_registrations(&conn, &admin_key(), 1, now + DAY)
        .await
        .unwrap()
        .remove(0);
    let account = IssuanceAccount::generate().unwrap();
    register(&conn, &token, &account).await.unwrap();
    assert!(matches!(
        mint_device_registration(&conn, &account, now + DAY).await,
        Err(TokenError::SelfServiceDisabled)
    ));
    process.child.kill().unwrap();
    process.child.wait().unwrap();
}

#[tokio::test]
async fn a_revocation_secret_ends_that_device_and_no_other() {
    let relay = token_relay().await;
    let Pair {
        issuer,
        first,
        second,
        bare,
        ..
    } = member_with_two_devices(&relay).await;
    let hoard = refill(&bare, &second.account, &issuer, 3).await.unwrap();
    let first_tokens = refill(&bare, &first.account, &issuer, 2).await.unwrap();

    // A secret the relay does not know is refused and changes nothing.
    let wrong = RevocationSecret::generate().unwrap();
    assert!(matches!(
        revoke_device(&bare, &wrong).await,
        Err(TokenError::RevocationUnknown)
    ));
    with_token(&relay, &hoard[0]).await.unwrap();

    // Also allowed on a connection opened with an access token.
    let admitted = with_token(&relay, &first_tokens[0]).await.unwrap();
    revoke_device(&admitted, &second.revocation).await.unwrap();

    assert!(matches!(
        refill(&bare, &second.account, &issuer, 1).await,
        Err(TokenError::Revoked)
    ));
    assert_eq!(
        code_of(with_token(&relay, &hoard[1]).await),
        ErrorCode::TokenInvalid,
        "the relay moved to a new token key, so hoarded tokens die"
    );
    // The first device keeps working (it refills, as after any revocation).
    has_access(&relay, &issuer, &first).await;
    mint_device_registration(&bare, &first.account, T0 + DAY)
        .await
        .unwrap();

    // A repeat is harmless, and does not move the token key again.
    let fresh = refill(&bare, &first.account, &issuer, 1).await.unwrap();
    revoke_device(&bare, &second.revocation).await.unwrap();
    with_token(&relay, &fresh[0]).await.unwrap();

    // A revocation hash can be registered once only.
    let reuse = mint_device_registration(&bare, &first.account, T0 + DAY)
        .await
        .unwrap();
    let third = IssuanceAccount::generate().unwrap();
    let Err(TokenError::Net(error)) =
        register_device(&bare, &reuse, &third, &first.revocation).await
    else {
        panic!("expected a refusal");
    };
    assert_eq!(error.code(), Some(ErrorCode::BadRequest));
    relay.stop().await;
}

/// DESIGN §2: after a member's device gave a new device of theirs relay
/// access, and one revoked the other, no record in the relay's database
/// holds an identifier of both devices.
#[tokio::test]
async fn nothing_stored_links_a_members_devices() {
    let relay = token_relay().await;
    let Pair {
        issuer,
        admin,
        first,
        second,
        bare,
    } = member_with_two_devices(&relay).await;
    for device in [&first, &second] {
        let tokens = refill(&bare, &device.account, &issuer, 2).await.unwrap();
        with_token(&relay, &tokens[0])
            .await
            .unwrap()
            .ping()
            .await
            .unwrap();
    }
    revoke_device(&bare, &second.revocation).await.unwrap();
    // Another member, so the database is not trivially small.
    invited(&admin, &relay).await;
    drop(bare);
    drop(admin);
    let (_keep, db) = stop_and_keep_db(relay).await;

    let ids = |device: &Device| {
        vec![
            device.account.public_key().to_vec(),
            device.registration.hash().to_vec(),
            device.revocation.hash().to_vec(),
        ]
    };
    let (a, b) = (ids(&first), ids(&second));
    let db = sled::open(&db).unwrap();
    let mut records = 0;
    for name in db.tree_names() {
        let tree = db.open_tree(&name).unwrap();
        let name = String::from_utf8_lossy(&name).into_owned();
        for entry in tree.iter() {
            let (key, value) = entry.unwrap();
            let record = [key.as_ref(), value.as_ref()].concat();
            records += 1;
            let names_a = a.iter().any(|id| contains(&record, id));
            let names_b = b.iter().any(|id| contains(&record, id));
            assert!(
                !(names_a && names_b),
                "a record in `{name}` names both of a member's devices"
            );
            // Secrets are stored as hashes only.
            for secret in [
                first.revocation.as_bytes().as_slice(),
                second.revocation.as_bytes().as_slice(),
                second.registration.as_bytes().as_slice(),
            ] {
                assert!(!contains(&record, secret), "a secret in `{name}`");
            }
        }
    }
    assert!(
        records > 10,
        "the scan saw the database ({records} records)"
    );

    // What the relay keeps about the minted token is what it keeps about
    // any used registration token: its expiry and the account it created.
    let registrations = db.open_tree("registrations").unwrap();
    let record = registrations
        .get(second.registration.hash())
        .unwrap()
        .unwrap();
    let mut expected = ((T0 + DAY).div_ceil(DAY) * DAY).to_be_bytes().to_vec();
    expected.extend_from_slice(&second.account.public_key());
    assert_eq!(record.as_ref(), expected.as_slice());
    // The first device's account holds a count of one, and its own things.
    let accounts = db.open_tree("accounts").unwrap();
    let account = accounts.get(first.account.public_key()).unwrap().unwrap();
    let mut expected = first.registration.hash().to_vec();
    expected.push(0);
    expected.extend_from_slice(&1u32.to_be_bytes());
    expected.extend_from_slice(&first.revocation.hash());
    assert_eq!(account.as_ref(), expected.as_slice());
    // The second device's: its own token hash, revoked, no count.
    let account = accounts.get(second.account.public_key()).unwrap().unwrap();
    let mut expected = second.registration.hash().to_vec();
    expected.push(1);
    expected.extend_from_slice(&0u32.to_be_bytes());
    expected.extend_from_slice(&second.revocation.hash());
    assert_eq!(account.as_ref(), expected.as_slice());
    // Each revocation hash finds its own device only.
    let revocations = db.open_tree("revocations").unwrap();
    assert_eq!(revocations.len(), 3);
    assert_eq!(
        revocations
            .get(second.revocation.hash())
            .unwrap()
            .unwrap()
            .as_ref(),
        second.account.public_key().as_slice()
    );
}
