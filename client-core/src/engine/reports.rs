//! Relay accounts members report to the team admin (issue 18): a device
//! that mints a registration token for another device of its member tells
//! the admin its hash, so `revoke` ends every account of the member.

use sotto_proto::Message as _;
use sotto_proto::client::{AccountReport, AdminGrant, Payload, payload};

use super::{Engine, EngineError};
use crate::records::ACCOUNT_REPORT_PREFIX;
use crate::{Batch, Tree};

/// Admin grants received, by sender, until the team layer takes them (it
/// checks the sender against the roster).
const ADMIN_GRANT_PREFIX: &[u8] = b"team/admin-grant/";

impl Engine {
    /// Files a report from `peer` (authenticated by Olm) until the team
    /// layer takes it.
    pub(super) fn record_account_report(&self, peer: &str, hash: &[u8], batch: &mut Batch) {
        let key = [ACCOUNT_REPORT_PREFIX, hash, b"/", peer.as_bytes()].concat();
        batch.put(Tree::Meta, key, b"");
    }

    /// The reports received since the last call, as (handle, registration
    /// token hash), and forgets them.
    pub fn take_account_reports(&self) -> Result<Vec<(String, [u8; 32])>, EngineError> {
        let mut reports = Vec::new();
        let mut batch = Batch::new();
        for (key, _) in self.store.scan_prefix(Tree::Meta, ACCOUNT_REPORT_PREFIX)? {
            let rest = &key[ACCOUNT_REPORT_PREFIX.len()..];
            let parsed = rest.get(..32).zip(rest.get(33..)).and_then(|(hash, peer)| {
                Some((
                    String::from_utf8(peer.to_vec()).ok()?,
                    <[u8; 32]>::try_from(hash).ok()?,
                ))
            });
            if let Some(report) = parsed {
                reports.push(report);
            }
            batch.delete(Tree::Meta, key);
        }
        if !reports.is_empty() || !batch.is_empty() {
            self.store.apply(batch)?;
            self.store.flush()?;
        }
        Ok(reports)
    }

    /// Queues a report of `hash` (a registration token I minted for a new
    /// device of mine) to the team admin `admin`.
    pub fn queue_account_report(
        &mut self,
        admin: &str,
        hash: [u8; 32],
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let payload = Payload {
            sent_at: now_ms,
            body: Some(payload::Body::AccountReport(AccountReport {
                registration_token_hash: hash.to_vec().into(),
            })),
            ..Payload::default()
        };
        self.queue(admin, payload, None)?;
        self.flush()
    }

    /// Files an admin grant from `peer` (authenticated by Olm) until the
    /// team layer checks and takes it.
    pub(super) fn record_admin_grant(&self, peer: &str, grant: &AdminGrant, batch: &mut Batch) {
        let key = [ADMIN_GRANT_PREFIX, peer.as_bytes()].concat();
        batch.put(Tree::Meta, key, &grant.encode_to_vec());
    }

    /// The admin grants received since the last call, as (sender, grant),
    /// and forgets them.
    pub fn take_admin_grants(&self) -> Result<Vec<(String, AdminGrant)>, EngineError> {
        let mut grants = Vec::new();
        let mut batch = Batch::new();
        for (key, value) in self.store.scan_prefix(Tree::Meta, ADMIN_GRANT_PREFIX)? {
            let peer = String::from_utf8(key[ADMIN_GRANT_PREFIX.len()..].to_vec()).ok();
            if let (Some(peer), Ok(grant)) = (peer, AdminGrant::decode(value.as_slice())) {
                grants.push((peer, grant));
            }
            batch.delete(Tree::Meta, key);
        }
        if !batch.is_empty() {
            self.store.apply(batch)?;
            self.store.flush()?;
        }
        Ok(grants)
    }

    /// Queues `grant` to every device of `member` (a new admin).
    pub fn queue_admin_grant(
        &mut self,
        member: &str,
        grant: AdminGrant,
        now_ms: u64,
    ) -> Result<(), EngineError> {
        let payload = Payload {
            sent_at: now_ms,
            body: Some(payload::Body::AdminGrant(grant)),
            ..Payload::default()
        };
        self.queue(member, payload, None)?;
        self.flush()
    }
}
