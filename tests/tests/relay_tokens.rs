//! Teams on the relay: bootstrap, registration, VOPRF token issuance and
//! redemption, revocation, and what the relay stores about them. Real QUIC
//! on loopback, real sled.
#![allow(clippy::unwrap_used)]

#[path = "relay_support/mod.rs"]
mod support;

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use sotto_core::{
    IssuanceAccount, RelayConnection, TokenError, TokenRequest, bootstrap, mint_registrations,
    refill, register, revoke,
};
use sotto_proto::wire::{ErrorCode, client_frame::Request, response::Result as Reply};
use support::{
    DAY, Owner, T0, TestRelay, addr, admin_key, blob, bootstrapped, code_of, connect, contains,
    stop_and_keep_db, token_relay, with_token,
};

/// A registered device account.
async fn member(admin: &RelayConnection, relay: &TestRelay) -> (IssuanceAccount, [u8; 32]) {
    let token = mint_registrations(admin, &admin_key(), 1, T0 + 7 * DAY)
        .await
        .unwrap()
        .remove(0);
    let account = IssuanceAccount::generate().unwrap();
    let conn = connect(relay).await;
    register(&conn, &token, &account).await.unwrap();
    (account, token.hash())
}

#[tokio::test]
async fn bootstrap_works_once_and_deletes_the_code() {
    let relay = token_relay().await;
    let conn = connect(&relay).await;
    let code = relay.bootstrap_code().unwrap();
    assert!(matches!(
        bootstrap(&conn, "sotto-boot-wrong", &admin_key()).await,
        Err(TokenError::BootstrapInvalid)
    ));
    let issuer = bootstrap(&conn, &code, &admin_key()).await.unwrap();
    assert_eq!(
        issuer.to_bytes(),
        relay.server().relay().issuer_key(),
        "the relay's issuer key"
    );
    assert_eq!(relay.bootstrap_code(), None, "the code file is gone");
    let other = SigningKey::from_bytes(&[7; 32]);
    assert!(matches!(
        bootstrap(&conn, &code, &other).await,
        Err(TokenError::BootstrapInvalid)
    ));
    // Only the bootstrapped key is admin.
    assert!(matches!(
        mint_registrations(&conn, &other, 1, T0 + DAY).await,
        Err(TokenError::NotAdmin)
    ));
    relay.stop().await;
}

#[tokio::test]
async fn registration_tokens_are_single_use_expiring_and_checked() {
    let relay = token_relay().await;
    let (_, admin) = bootstrapped(&relay).await;
    let tokens = mint_registrations(&admin, &admin_key(), 2, T0 + DAY)
        .await
        .unwrap();
    assert_eq!(tokens.len(), 2);
    let conn = connect(&relay).await;
    let account = IssuanceAccount::generate().unwrap();
    register(&conn, &tokens[0], &account).await.unwrap();
    let second = IssuanceAccount::generate().unwrap();
    assert!(matches!(
        register(&conn, &tokens[0], &second).await,
        Err(TokenError::InviteUsed)
    ));
    let forged = sotto_core::RegistrationToken::from_bytes([9; 32]);
    assert!(matches!(
        register(&conn, &forged, &second).await,
        Err(TokenError::InviteInvalid)
    ));
    relay.clock.advance_secs(2 * DAY);
    assert!(matches!(
        register(&conn, &tokens[1], &second).await,
        Err(TokenError::InviteExpired)
    ));
    relay.stop().await;
}

#[tokio::test]
async fn a_connection_needs_an_unspent_token_also_after_a_restart() {
    let mut relay = token_relay().await;
    let (issuer, admin) = bootstrapped(&relay).await;
    let (account, _) = member(&admin, &relay).await;

    // Without a token: only getting tokens (and ping) works.
    let bare = connect(&relay).await;
    bare.ping().await.unwrap();
    let owner = Owner::new(1);
    assert_eq!(
        code_of(bare.put(&owner.mailbox(), &blob(1), 0).await),
        ErrorCode::TokenRequired
    );
    assert_eq!(
        code_of(bare.fetch(&owner, 0, 0).await),
        ErrorCode::TokenRequired
    );

    let tokens = refill(&bare, &account, &issuer, 3).await.unwrap();
    let conn = with_token(&relay, &tokens[0]).await.unwrap();
    conn.put(&owner.mailbox(), &blob(1), 0).await.unwrap();
    assert_eq!(
        code_of(with_token(&relay, &tokens[0]).await),
        ErrorCode::TokenInvalid,
        "spent"
    );
    // A token whose output was tampered with.
    let mut bytes = tokens[1].encode().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(
        code_of(RelayConnection::connect(&addr(&relay), Some(bytes.into())).await),
        ErrorCode::TokenInvalid
    );
    drop(conn);

    relay.restart().await;
    assert_eq!(
        code_of(with_token(&relay, &tokens[0]).await),
        ErrorCode::TokenInvalid,
        "still spent after a restart"
    );
    let conn = with_token(&relay, &tokens[2]).await.unwrap();
    assert_eq!(conn.fetch(&owner, 0, 0).await.unwrap().blobs.len(), 1);
    relay.stop().await;
}

#[tokio::test]
async fn tokens_of_a_key_expire_with_it() {
    let relay = token_relay().await;
    let (issuer, admin) = bootstrapped(&relay).await;
    let (account, _) = member(&admin, &relay).await;
    let tokens = refill(&connect(&relay).await, &account, &issuer, 2)
        .await
        .unwrap();
    relay.clock.advance_secs(DAY);
    with_token(&relay, &tokens[0]).await.unwrap();
    relay.clock.advance_secs(2 * DAY);
    assert_eq!(
        code_of(with_token(&relay, &tokens[1]).await),
        ErrorCode::TokenInvalid
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_revoked_account_gets_no_tokens_and_hoarded_tokens_die() {
    let relay = token_relay().await;
    let (issuer, admin) = bootstrapped(&relay).await;
    let (revoked, revoked_hash) = member(&admin, &relay).await;
    let (honest, _) = member(&admin, &relay).await;
    let bare = connect(&relay).await;
    let hoard = refill(&bare, &revoked, &issuer, 5).await.unwrap();
    let honest_tokens = refill(&bare, &honest, &issuer, 5).await.unwrap();

    revoke(&admin, &admin_key(), &revoked_hash).await.unwrap();

    assert!(matches!(
        refill(&bare, &revoked, &issuer, 1).await,
        Err(TokenError::Revoked)
    ));
    assert_eq!(
        code_of(with_token(&relay, &hoard[0]).await),
        ErrorCode::TokenInvalid,
        "the key moved on"
    );
    // Honest devices lose their old tokens too, and simply fetch new ones.
    assert_eq!(
        code_of(with_token(&relay, &honest_tokens[0]).await),
        ErrorCode::TokenInvalid
    );
    let fresh = refill(&bare, &honest, &issuer, 1).await.unwrap();
    with_token(&relay, &fresh[0]).await.unwrap();
    relay.stop().await;
}

#[tokio::test]
async fn the_budget_per_period_is_enforced() {
    let relay = TestRelay::start_with(|c| {
        c.tokens.require_tokens = true;
        c.tokens.tokens_per_period = 10;
    })
    .await;
    let (issuer, admin) = bootstrapped(&relay).await;
    let (account, _) = member(&admin, &relay).await;
    let bare = connect(&relay).await;
    refill(&bare, &account, &issuer, 8).await.unwrap();
    assert!(matches!(
        refill(&bare, &account, &issuer, 3).await,
        Err(TokenError::BudgetExceeded)
    ));
    relay.clock.advance_secs(DAY);
    refill(&bare, &account, &issuer, 10).await.unwrap();
    relay.stop().await;
}

async fn issue_reply(
    conn: &RelayConnection,
    account: &IssuanceAccount,
    n: u32,
) -> (TokenRequest, sotto_proto::wire::IssueOk) {
    let request = TokenRequest::new(n).unwrap();
    let issue = request.issue_request(account, conn.challenge());
    match conn.request(Request::IssueTokens(issue)).await.unwrap() {
        Reply::Issue(reply) => (request, reply),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn the_client_rejects_an_unsigned_key_or_a_bad_proof() {
    let relay = token_relay().await;
    let (issuer, admin) = bootstrapped(&relay).await;
    let (account, _) = member(&admin, &relay).await;
    let conn = connect(&relay).await;

    let (request, reply) = issue_reply(&conn, &account, 3).await;
    let impostor = SigningKey::from_bytes(&[1; 32]).verifying_key();
    assert!(matches!(
        request.finish(&reply, &impostor),
        Err(TokenError::BadIssuerSignature)
    ));

    let (request, mut reply) = issue_reply(&conn, &account, 3).await;
    let mut proof = reply.proof.to_vec();
    proof[5] ^= 1;
    reply.proof = proof.into();
    assert!(matches!(
        request.finish(&reply, &issuer),
        Err(TokenError::BadProof)
    ));

    // Elements evaluated under another key than the signed one (as a relay
    // tagging this device would): swap in another reply's elements.
    let (request, mut reply) = issue_reply(&conn, &account, 3).await;
    let (_, other) = issue_reply(&conn, &account, 3).await;
    reply.evaluated_elements = other.evaluated_elements;
    assert!(matches!(
        request.finish(&reply, &issuer),
        Err(TokenError::BadProof)
    ));

    // A signed key with a modified public key fails the signature.
    let (request, mut reply) = issue_reply(&conn, &account, 1).await;
    let key = reply.key.as_mut().unwrap();
    key.valid_until += 1;
    assert!(matches!(
        request.finish(&reply, &issuer),
        Err(TokenError::BadIssuerSignature)
    ));

    let (request, reply) = issue_reply(&conn, &account, 2).await;
    assert_eq!(request.finish(&reply, &issuer).unwrap().len(), 2);
    relay.stop().await;
}

#[tokio::test]
async fn nothing_stored_about_issuance_matches_a_redeemed_token() {
    let relay = token_relay().await;
    let period = relay.config.tokens.token_period_secs;
    let (issuer, admin) = bootstrapped(&relay).await;
    let bare = connect(&relay).await;
    let mut redeemed = Vec::new();
    let mut accounts = Vec::new();
    for _ in 0..3 {
        let (account, _) = member(&admin, &relay).await;
        let tokens = refill(&bare, &account, &issuer, 4).await.unwrap();
        for token in &tokens[..2] {
            let conn = with_token(&relay, token).await.unwrap();
            conn.ping().await.unwrap();
            redeemed.push(token.clone());
        }
        accounts.push(account.public_key());
    }
    relay.clock.advance_secs(3600);
    let (_keep_dir, dir) = stop_and_keep_db(relay).await;

    let db = sled::open(&dir).unwrap();
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for token in &redeemed {
        needles.push(token.input().to_vec());
        needles.push(token.output().to_vec());
        needles.push(Sha256::digest(token.input()).to_vec());
        needles.push(token.encode().to_vec());
    }
    for name in ["issuer", "registrations", "accounts", "issued"] {
        let tree = db.open_tree(name).unwrap();
        for entry in tree.iter() {
            let (key, value) = entry.unwrap();
            for needle in &needles {
                assert!(
                    !contains(&key, needle) && !contains(&value, needle),
                    "issuance tree `{name}` holds redemption data"
                );
            }
        }
    }
    // Accounts are known to the issuance side only; the spent set holds
    // nothing but key IDs and input hashes, with no time.
    let spent = db.open_tree("spent").unwrap();
    assert_eq!(spent.len(), redeemed.len());
    for entry in spent.iter() {
        let (key, value) = entry.unwrap();
        assert_eq!(key.len(), 8 + 32);
        assert!(value.is_empty());
        for account in &accounts {
            assert!(!contains(&key, account));
        }
    }
    // No timestamp finer than the period: registration expiries are
    // rounded to it, counts are keyed by period number, accounts hold none.
    for entry in db.open_tree("registrations").unwrap().iter() {
        let (_, value) = entry.unwrap();
        let expires_at = u64::from_be_bytes(value[..8].try_into().unwrap());
        assert_eq!(
            expires_at % period,
            0,
            "registration expiry is period-rounded"
        );
    }
    for entry in db.open_tree("issued").unwrap().iter() {
        let (key, value) = entry.unwrap();
        let p = u64::from_be_bytes(key[..8].try_into().unwrap());
        assert_eq!(p, (T0 + 3600) / period, "a period number, not a time");
        assert_eq!(value.len(), 4, "a count");
    }
    for entry in db.open_tree("accounts").unwrap().iter() {
        assert_eq!(
            entry.unwrap().1.len(),
            37,
            "registration hash, a flag and a count of device registrations"
        );
    }
}
